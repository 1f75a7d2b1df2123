"""`memrl data prepare`: sampling, splits, dedup, option formatting and the manifest, on fake hub rows.

The hub is never touched: `fake_hub` returns in-memory rows with the real datasets' field names.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from memrl.data.loaders import load_problems
from memrl.data.registry import prepare_hint
from memrl.errors import DataError, UserError
from memrl.stages import prepare as P


def _gsm(i):
    return {"question": f"gsm question {i}?", "answer": f"step\n#### {i},000"}


def _mc_struct(i, stem="question"):
    return {
        "id": f"q{i}",
        stem: f"mc question {i}?",
        "choices": {"text": ["red", "green", "blue", "pink"], "label": ["A", "B", "C", "D"]},
        "answerKey": "C",
    }


FAKE_ROWS = {
    "openai/gsm8k": lambda n: [_gsm(i) for i in range(n)],
    "apple/GSM-Symbolic": lambda n: [_gsm(1000 + i) for i in range(n)],
    "nlile/hendrycks-MATH-benchmark": lambda n: [
        {
            "problem": f"math {i}",
            "solution": "\\boxed{1}",
            "answer": "1",
            "subject": "Algebra",
            "level": 3,
            "unique_id": str(i),
        }
        for i in range(n)
    ],
    "cais/mmlu": lambda n: [
        {"question": f"mmlu {i}?", "subject": "law", "choices": ["w", "x", "y", "z"], "answer": 1} for i in range(n)
    ],
    "tau/commonsense_qa": lambda n: [_mc_struct(i) for i in range(n)],
    "allenai/openbookqa": lambda n: [_mc_struct(i, "question_stem") for i in range(n)],
    "allenai/ai2_arc": lambda n: [
        {**_mc_struct(i), "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "2"}
        for i in range(n)
    ],
    "Idavidrein/gpqa": lambda n: [
        {
            "Question": f"gpqa {i}?",
            "Correct Answer": "right",
            "Incorrect Answer 1": "wrong1",
            "Incorrect Answer 2": "wrong2",
            "Incorrect Answer 3": "wrong3",
            "Record ID": f"rec{i}",
        }
        for i in range(n)
    ],
    "openai/openai_humaneval": lambda n: [
        {
            "task_id": f"HumanEval/{i}",
            "prompt": f"def f{i}(x):\n    '''id'''\n",
            "canonical_solution": "    return x\n",
            "test": "def check(candidate):\n    assert candidate(1) == 1\n",
            "entry_point": f"f{i}",
        }
        for i in range(n)
    ],
    "evalplus/mbppplus": lambda n: [
        {
            "task_id": i,
            "code": f"def g{i}(x):\n    return x",
            "prompt": f"Write g{i}.",
            "source_file": "x",
            "test_imports": ["import math"],
            "test_list": [f"assert g{i}(2) == 2"],
            "test": "",
        }
        for i in range(n)
    ],
    "AI-MO/NuminaMath-CoT": lambda n: [
        {
            "source": "olympiads",
            "problem": f"numina {i}",
            "solution": f"so \\boxed{{{i}}}" if i % 4 else "no box",
            "messages": [],
        }
        for i in range(n)
    ],
    "allenai/social_i_qa": lambda n: [
        {"context": f"ctx {i}", "question": "why?", "answerA": "a", "answerB": "b", "answerC": "c", "label": "3"}
        for i in range(n)
    ],
    "ybisk/piqa": lambda n: [{"goal": f"goal {i}", "sol1": "one", "sol2": "two", "label": 0} for i in range(n)],
    "open-r1/DAPO-Math-17k-Processed": lambda n: [
        {
            "prompt": "Solve the following math problem step by step. The last line of your response should be of the "
            "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
            f'Problem {i % 6}.\n\nRemember to put your answer on its own line after "Answer:".',
            "solution": str(i),
            "data_source": "math_dapo",
        }
        for i in range(n)
    ],
    "DigitalLearningGmbH/MATH-lighteval": lambda n: [
        {
            "problem": f"Problem {i}." if i in (0, 2) else f"light {i}",
            "level": f"Level {1 + i % 5}",
            "type": "Algebra",
            "solution": "\\boxed{7}",
        }
        for i in range(n)
    ],
}


def fake_hub(n=10, calls=None):
    """A `load(source, split)` that returns n rows per split (split index folded into the text)."""

    def load(source, split):
        if calls is not None:
            calls.append((source.path, split))
        rows = FAKE_ROWS[source.path](n)
        # distinct questions per split (so pooled splits do not dedup each other away)
        for r in rows:
            for k in ("question", "question_stem", "problem", "Question", "goal", "context"):
                if k in r and source.path not in (
                    "open-r1/DAPO-Math-17k-Processed",
                    "DigitalLearningGmbH/MATH-lighteval",
                ):
                    r[k] = f"{r[k]} [{split}]"
        return rows, {"fingerprint": f"fake-{split}"}

    return load


def test_split_counts():
    assert P.split_counts(10) == (5, 2, 3)
    assert P.split_counts(1500) == (750, 300, 450)
    assert P.split_counts(198) == (99, 39, 60)  # GPQA-diamond: the paper's 39 validation, 60 test
    assert P.split_counts(0) == (0, 0, 0)


def test_format_choices_letters_options():
    assert P.format_choices("Which?", ["x", " y "]) == "Which?\n\nA. x\nB. y"
    with pytest.raises(DataError, match="2 to 10 options"):
        P.format_choices("Which?", ["only"])


def _single(name, spec):
    return P.PrepareSpec(spec.name, tuple(s for s in spec.sources if s.name == name), spec.cap)


def test_memreward_split_sizes_domains_and_manifest(tmp_path):
    # 10 rows per hub split: GSM8K pools train + test (20), GSM-Symbolic has one split (10)
    calls = []
    root = P.prepare("memreward", tmp_path, load=fake_hub(10, calls))
    manifest = json.loads((root / "manifest.json").read_text())
    by = {s["benchmark"]: s for s in manifest["sources"]}
    assert list(by) == [s.name for s in P.MEMREWARD.sources]
    assert by["gsm_symbolic"]["counts"] == {"train": 5, "val": 2, "test": 3}
    assert by["gsm8k"]["counts"] == {"train": 10, "val": 4, "test": 6}
    assert by["gsm8k"]["splits"]["test"] == {"rows": 10, "fingerprint": "fake-test"}
    assert by["gpqa_diamond"]["hub_id"] == "Idavidrein/gpqa" and by["gpqa_diamond"]["subset"] == "gpqa_diamond"
    assert manifest["seed"] == 42 and manifest["cap_per_benchmark"] == 1500
    assert ("cais/mmlu", "dev") in calls and ("tau/commonsense_qa", "test") not in calls  # unlabelled split unread
    train = [json.loads(x) for x in (root / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (root / "val.jsonl").read_text().splitlines()]
    assert len(train) == sum(s["counts"]["train"] for s in manifest["sources"]) == manifest["files"]["train.jsonl"]
    assert len(val) == sum(s["counts"]["val"] for s in manifest["sources"])
    assert {r["domain"] for r in train} == {"math", "choice", "code"}
    assert len({r["id"] for r in train + val}) == len(train) + len(val)
    gsm = next(r for r in train if r["benchmark"] == "gsm8k")
    assert gsm["answer"] == gsm["question"].split()[2].rstrip("?") + "000"  # "#### 3,000" -> "3000"
    # train / val / test of a benchmark are disjoint
    test_ids = {json.loads(x)["id"] for x in (root / "test" / "gsm8k.jsonl").read_text().splitlines()}
    assert len(test_ids) == 6 and not test_ids & {r["id"] for r in train + val}


def test_memreward_choice_and_code_records(tmp_path):
    root = P.prepare("memreward", tmp_path, load=fake_hub(10))
    rows = {}
    for path in sorted((root / "test").glob("*.jsonl")):
        rows[path.stem] = [json.loads(x) for x in path.read_text().splitlines()]
    mmlu = rows["mmlu"][0]
    assert mmlu["question"].endswith("\n\nA. w\nB. x\nC. y\nD. z") and mmlu["answer"] == "B"
    arc = rows["arc_challenge"][0]  # numeric labels: the answer is the position, as a letter
    assert arc["answer"] == "B" and "\nC. c" in arc["question"]
    for g in rows["gpqa_diamond"]:
        letter_line = next(line for line in g["question"].splitlines() if line.endswith(". right"))
        assert g["answer"] == letter_line[0]
    assert len({g["answer"] for g in rows["gpqa_diamond"]}) > 1  # the correct answer is not always A
    he = rows["humaneval"][0]
    assert he["domain"] == "code" and "answer" not in he and he["entry_point"] and he["test"].startswith("def check")
    mb = rows["mbpp"][0]
    assert mb["test_list"][0].startswith("assert g") and mb["test_setup_code"] == "import math"


def test_prepared_files_load_as_a_mixed_dataset(tmp_path):
    root = P.prepare("memreward", tmp_path, load=fake_hub(10))
    spec = {"name": "mix", "source": "local", "path": str(root / "train.jsonl"), "domain": "mixed"}
    problems = load_problems(spec)
    domains = {p.domain for p in problems}
    assert domains == {"math", "choice", "code"}
    code = next(p for p in problems if p.domain == "code")
    assert code.answer is None and "domain" not in code.metadata
    from memrl.grading.code import code_task

    assert code_task(code.metadata).tests  # the grader finds the tests


def test_mixed_domain_record_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "question": "q", "answer": "1", "domain": "math"}\n{"id": "b", "question": "q2", "answer": "1"}\n'
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: no field 'domain'"):
        load_problems({"name": "m", "source": "local", "path": str(bad), "domain": "mixed"})
    bad.write_text('{"id": "a", "question": "q", "answer": "1", "domain": "physics"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'domain' is 'physics'; valid: math, choice, code"):
        load_problems({"name": "m", "source": "local", "path": str(bad), "domain": "mixed"})


def test_cap_limit_and_seed_determinism(tmp_path):
    a = P.prepare("memreward", tmp_path / "a", limit=6, load=fake_hub(10))
    b = P.prepare("memreward", tmp_path / "b", limit=6, load=fake_hub(10))
    assert (a / "train.jsonl").read_text() == (b / "train.jsonl").read_text()
    manifest = json.loads((a / "manifest.json").read_text())
    assert {s["sampled"] for s in manifest["sources"]} == {6} and manifest["cap_per_benchmark"] == 6
    # another seed samples other problems
    files, _ = P.build(P.MEMREWARD, fake_hub(10), limit=6, seed=7)
    assert [r["id"] for r in files["train.jsonl"]] != [
        json.loads(x)["id"] for x in (a / "train.jsonl").read_text().splitlines()
    ]
    # the spec's cap bounds a benchmark without --limit-per-benchmark
    capped = P.PrepareSpec("t", (P.MEMREWARD.sources[1],), cap=4)
    files, manifest = P.build(capped, fake_hub(10))
    assert manifest["sources"][0]["sampled"] == 4 and len(files["test/gsm_symbolic.jsonl"]) == 4 - 2 - 0


def test_dedup_within_a_benchmark():
    def dup(source, split):
        return [
            {"question": "Same  question", "answer": "#### 1"},
            {"question": "same question", "answer": "#### 2"},
            {"question": "other", "answer": "#### 3"},
        ], {}

    files, manifest = P.build(P.PrepareSpec("t", (P.MEMREWARD.sources[1],), cap=None), dup)
    assert manifest["sources"][0]["usable"] == 3 and manifest["sources"][0]["after_dedup"] == 2


def test_ood_numina_presample_and_unlabelled_rows(tmp_path):
    root = P.prepare("memreward_ood", tmp_path, load=fake_hub(40))
    manifest = json.loads((root / "manifest.json").read_text())
    numina, siqa, piqa = manifest["sources"]
    assert numina["presampled"] == 2000 and numina["usable"] == 30  # every 4th row has no \boxed answer
    assert numina["counts"] == {"train": 15, "val": 6, "test": 9}
    assert siqa["revision"] == "refs/convert/parquet"
    s = json.loads((root / "test" / "siqa.jsonl").read_text().splitlines()[0])
    assert s["answer"] == "C" and s["question"].startswith("ctx ") and "\nC. c" in s["question"]
    p = json.loads((root / "test" / "piqa.jsonl").read_text().splitlines()[0])
    assert p["answer"] == "A" and p["question"].endswith("A. one\nB. two")


def test_meds_mixture_dedups_across_sources_and_keeps_levels_3_to_5(tmp_path):
    root = P.prepare("meds", tmp_path, load=fake_hub(12))
    manifest = json.loads((root / "manifest.json").read_text())
    dapo, light = manifest["sources"]
    # DAPO: 12 rows, 6 distinct problems; the instruction around them is stripped
    assert dapo["usable"] == 12 and dapo["after_dedup"] == 6
    # MATH-lighteval: levels 3-5 of 12 rows (6 rows; "Problem 0." is level 1); "Problem 2." (level 3) is DAPO's
    assert light["usable"] == 6 and light["after_dedup"] == 5
    train = [json.loads(x) for x in (root / "train.jsonl").read_text().splitlines()]
    assert len(train) == 11 and not (root / "val.jsonl").exists()
    assert {r["question"] for r in train if r["benchmark"] == "dapo_math_17k"} == {f"Problem {i}." for i in range(6)}
    assert all(r["level"] >= 3 for r in train if r["benchmark"] == "math_lighteval")


def test_unknown_name_and_bad_limit():
    with pytest.raises(UserError, match="valid: memreward, memreward_ood, meds"):
        P.prepare("memrewards", "/nowhere")
    with pytest.raises(UserError, match="positive integer"):
        P.prepare("meds", "/nowhere", limit=0)


def test_missing_field_names_the_row():
    def broken(source, split):
        return [{"question": "q"}], {}

    with pytest.raises(DataError, match=r"openai/gsm8k' split train row 0: no field 'answer'"):
        P.build(P.PrepareSpec("t", (P.MEMREWARD.sources[0],), cap=None), broken)


def test_offline_is_one_clear_line(tmp_path):
    # the real command, offline: a user error without a traceback
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "memrl.cli", "data", "prepare", "meds", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "cannot be reached (HF_HUB_OFFLINE is set" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "meds").exists()


def test_missing_prepared_file_says_how_to_build_it(tmp_path):
    spec = {
        "name": "t",
        "source": "local",
        "path": str(tmp_path / "prepared" / "memreward" / "train.jsonl"),
        "domain": "mixed",
    }
    with pytest.raises(DataError, match=r"file not found\. Build it with `memrl data prepare memreward`"):
        load_problems(spec)
    assert prepare_hint(tmp_path / "elsewhere.jsonl") == ""


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        ("So $x = \\boxed{1}$ or $x = \\boxed{-2}$.", "1, -2"),
        ("The pairs are \\boxed{(2, 2)} and \\boxed{(6, 2)}.", "(2, 2), (6, 2)"),
        ("First \\boxed{3}.\n\nCorrecting the sign: \\boxed{-3}.", "-3"),
        ("no box", None),
    ],
)
def test_a_solution_s_boxed_answers_are_all_kept(solution, answer):
    # a gold written as several boxes is graded as a set of all of them, not as its last box
    assert P._boxed(solution) == answer
