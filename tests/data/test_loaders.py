"""Data loaders: the bundled benchmarks, local JSONL/JSON/Parquet files with a field mapping, the hub offline."""

from __future__ import annotations

import json
import re
import socket
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from memrl.config.schema import DatasetSpec, FieldMap, Source
from memrl.data.loaders import BUNDLED, default_data_dir, load_eval_sets, load_problems, read_jsonl
from memrl.data.problem import Problem
from memrl.errors import DataError, UserError

REPO_DATA = Path(__file__).resolve().parents[2] / "data"

EXPECTED = {
    "gsm8k": ("math", 1319),
    "math500": ("math", 500),
    "aime24": ("math", 30),
    "amc23": ("math", 40),
    "minerva_math": ("math", 272),
    "olympiadbench": ("math", 675),
    "arc_challenge": ("choice", 1172),
    "commonsenseqa": ("choice", 1221),
    "humaneval": ("code", 164),
    "mbpp": ("code", 500),
}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def local_spec(path: Path, **kw) -> DatasetSpec:
    return DatasetSpec(name=kw.pop("name", "mine"), source=Source.local, path=str(path), **kw)


# ------------------------------------------------------------------------------------------------- bundled


# the RL training sets (no test split bundled for math: MATH500 is its test subset)
TRAIN_SETS = {"gsm8k": ("math", 7473), "math": ("math", 7470), "mbpp": ("code", 474)}


def test_registry_matches_expected():
    evals = {n: (b.domain, b.splits["test"]) for n, b in BUNDLED.items() if "test" in b.splits}
    assert evals == EXPECTED
    assert {n: (b.domain, b.splits["train"]) for n, b in BUNDLED.items() if "train" in b.splits} == TRAIN_SETS
    assert all(b.folder == n and set(b.splits) <= {"test", "train"} for n, b in BUNDLED.items())


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_bundled_train_set_loads_without_overlap_with_its_test_set(name):
    domain, count = TRAIN_SETS[name]
    problems = load_problems(DatasetSpec(name=name, split="train"), data_dir=REPO_DATA)
    assert len(problems) == count == len({p.id for p in problems})
    assert all(p.domain == domain and p.answer and p.answer.strip() for p in problems)
    assert all(p.id.startswith(f"{name}-train-") for p in problems)
    test_name = "gsm8k" if name == "gsm8k" else "math500"
    test_questions = {p.question.strip() for p in load_problems(DatasetSpec(name=test_name), data_dir=REPO_DATA)}
    assert not test_questions & {p.question.strip() for p in problems}


def test_mbpp_train_split_is_the_other_tasks_with_their_tests():
    train = load_problems(DatasetSpec(name="mbpp-train", path="mbpp", split="train", domain="code"), data_dir=REPO_DATA)
    test = load_problems(DatasetSpec(name="mbpp", domain="code"), data_dir=REPO_DATA)
    ids = {p.metadata["task_id"] for p in train}
    assert len(train) == 474 and ids == set(range(1, 11)) | set(range(511, 975))
    assert not ids & {p.metadata["task_id"] for p in test}
    assert all(p.domain == "code" and p.answer is None and len(p.metadata["test_list"]) >= 3 for p in train)


def test_default_data_dir_is_repo_data_and_env_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMRL_DATA_DIR", raising=False)
    assert default_data_dir() == REPO_DATA
    monkeypatch.setenv("MEMRL_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path.resolve()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_benchmark_loads(name):
    domain, count = EXPECTED[name]
    problems = load_problems(DatasetSpec(name=name), data_dir=REPO_DATA)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    assert all(isinstance(p, Problem) and p.domain == domain and p.source == name for p in problems)
    assert all(isinstance(p.question, str) and p.question.strip() for p in problems)
    if domain == "code":
        assert all(p.answer is None for p in problems)
        key = "test" if name == "humaneval" else "test_list"
        assert all(p.metadata.get(key) for p in problems)
    else:
        assert all(isinstance(p.answer, str) and p.answer.strip() for p in problems)
    if domain == "choice":
        assert {p.answer for p in problems} <= set("ABCDE")
        assert all(f"\n{p.answer}. " in p.question for p in problems)
    assert not {"id", "question", "answer"} & set(problems[0].metadata)


def test_gsm8k_first_problem():
    p = load_problems(DatasetSpec(name="gsm8k"))[0]
    assert (p.id, p.answer, p.domain, p.source) == ("gsm8k-test-0", "18", "math", "gsm8k")
    assert p.question.startswith("Janet")
    assert p.metadata["solution"].endswith("#### 18")


def test_bundled_by_path_limit_and_registry_domain():
    # `path` picks the folder; the registry's domain wins over the spec's; limit keeps the first N
    spec = OmegaConf.structured(DatasetSpec(name="arc", path="arc_challenge", domain="math", limit=5))
    problems = load_problems(spec)
    assert [p.id for p in problems] == [p.id for p in load_problems(DatasetSpec(name="arc_challenge"))[:5]]
    assert {p.domain for p in problems} == {"choice"} and {p.source for p in problems} == {"arc"}


def test_unknown_bundled_name_lists_valid_names():
    with pytest.raises(UserError) as e:
        load_problems(DatasetSpec(name="gsm9k"))
    msg = str(e.value)
    assert "gsm9k" in msg and "source=local" in msg
    assert all(n in msg for n in BUNDLED)


def test_unknown_bundled_split_lists_splits():
    with pytest.raises(UserError, match=r"no split 'validation'; its splits: test, train"):
        load_problems(DatasetSpec(name="gsm8k", split="validation"))


def test_bundled_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"math500.test\.jsonl not found.*MEMRL_DATA_DIR"):
        load_problems(DatasetSpec(name="math500"), data_dir=tmp_path)


# ------------------------------------------------------------------------------------------------- read_jsonl


def test_read_jsonl_skips_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(
        '{"question": "q1", "answer": "1"}\n{"question": "q2", "answer": "2"}\n{"question": "q3", "answer": \n'
    )
    with pytest.raises(DataError) as e:
        list(read_jsonl(p))
    assert f"{p}:3: invalid JSON" in str(e.value)
    with pytest.raises(DataError) as e:
        load_problems(local_spec(p, fields=FieldMap(id=None)))
    assert f"{p}:3: invalid JSON" in str(e.value)


def test_jsonl_non_object_line(tmp_path):
    p = tmp_path / "list.jsonl"
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(p))}:2: expected a JSON object, got an array"):
        list(read_jsonl(p))


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------------------------- local


def test_local_jsonl_with_field_mapping(tmp_path):
    p = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"problem": "What is 9+9?", "solution_value": 18, "level": 1},
            {"problem": "Half of 5?", "solution_value": 2.5, "level": 2},
            {"problem": "Twice 3.0?", "solution_value": 6.0, "level": 2},
        ],
    )
    spec = local_spec(p, fields=FieldMap(id=None, question="problem", answer="solution_value"), domain="math")
    problems = load_problems(spec)
    assert [(q.id, q.question, q.answer) for q in problems] == [
        ("mine-0", "What is 9+9?", "18"),
        ("mine-1", "Half of 5?", "2.5"),
        ("mine-2", "Twice 3.0?", "6"),
    ]
    assert problems[1].metadata == {"level": 2}
    assert {q.source for q in problems} == {"mine"} and {q.domain for q in problems} == {"math"}


def test_local_relative_path_resolves_against_cwd(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "rel.jsonl", [{"id": "a", "question": "q", "answer": "1"}])
    monkeypatch.chdir(tmp_path)
    problems = load_problems(local_spec(Path("rel.jsonl")))
    assert [(p.id, p.answer) for p in problems] == [("a", "1")]


def test_local_missing_field_names_field_line_and_keys(tmp_path):
    p = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"problem": "a", "solution_value": 1}, {"problem": "b", "solution_value": 2}, {"problem": "c", "value": 3}],
    )
    spec = local_spec(p, fields=FieldMap(id=None, question="problem", answer="solution_value"))
    with pytest.raises(DataError) as e:
        load_problems(spec)
    msg = str(e.value)
    assert f"{p}:3: no field 'solution_value' (fields.answer)" in msg
    assert "the record has: problem, value" in msg


def test_local_without_answers_and_with_ids(tmp_path):
    p = write_jsonl(tmp_path / "code.jsonl", [{"task": "t1", "text": "write f"}, {"task": "t2", "text": "write g"}])
    spec = local_spec(p, domain="code", fields=FieldMap(id="task", question="text", answer=None))
    problems = load_problems(spec)
    assert [(q.id, q.answer, q.domain) for q in problems] == [("t1", None, "code"), ("t2", None, "code")]


def test_local_duplicate_ids(tmp_path):
    p = write_jsonl(
        tmp_path / "dup.jsonl", [{"id": 1, "question": "a", "answer": "1"}, {"id": 1, "question": "b", "answer": "2"}]
    )
    with pytest.raises(DataError, match=rf"{re.escape(str(p))}:2: duplicate id '1' \(first at {re.escape(str(p))}:1\)"):
        load_problems(local_spec(p))


def test_local_null_and_nested_values(tmp_path):
    p = write_jsonl(tmp_path / "n.jsonl", [{"question": "a", "answer": None}])
    with pytest.raises(DataError, match=rf"{re.escape(str(p))}:1: field 'answer' \(fields.answer\) is empty"):
        load_problems(local_spec(p, fields=FieldMap(id=None)))
    p = write_jsonl(tmp_path / "l.jsonl", [{"question": "a", "answer": ["1", "2"]}])
    with pytest.raises(DataError, match=rf"{re.escape(str(p))}:1: field 'answer' is an array"):
        load_problems(local_spec(p, fields=FieldMap(id=None)))


def test_local_json_array(tmp_path):
    p = tmp_path / "arr.json"
    p.write_text(json.dumps([{"q": "a", "a": 1}, {"q": "b", "a": 2}, {"q": "c"}]))
    spec = local_spec(p, fields=FieldMap(id=None, question="q", answer="a"))
    with pytest.raises(DataError, match=r"item 2 \(counting from 0\): no field 'a'"):
        load_problems(spec)
    spec.limit = 2
    assert [(q.question, q.answer) for q in load_problems(spec)] == [("a", "1"), ("b", "2")]


def test_local_parquet_with_mapping(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "mine.parquet"
    table = pa.table(
        {"uid": ["x1", "x2", "x3"], "prompt": ["2+2?", "3*3?", "1-1?"], "target": [4, 9, 0], "tag": ["a", "b", "c"]}
    )
    pq.write_table(table, p)
    spec = local_spec(p, fields=FieldMap(id="uid", question="prompt", answer="target"))
    problems = load_problems(spec)
    assert [(q.id, q.question, q.answer, q.metadata) for q in problems] == [
        ("x1", "2+2?", "4", {"tag": "a"}),
        ("x2", "3*3?", "9", {"tag": "b"}),
        ("x3", "1-1?", "0", {"tag": "c"}),
    ]
    bad = local_spec(p, fields=FieldMap(id="uid", question="problem", answer="target"))
    with pytest.raises(DataError) as e:
        load_problems(bad)
    assert "no column 'problem' (fields.question)" in str(e.value)
    assert "available columns: uid, prompt, target, tag" in str(e.value) and str(p) in str(e.value)


def test_local_parquet_null_value_names_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"question": ["a", "b"], "answer": ["1", None]}), p)
    with pytest.raises(DataError, match=r"row 1 \(counting from 0\): field 'answer' \(fields.answer\) is empty"):
        load_problems(local_spec(p, fields=FieldMap(id=None)))


def test_local_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "data.csv").write_text("question,answer\n")
    with pytest.raises(UserError, match=r"unknown file type '.csv'") as e:
        load_problems(local_spec(tmp_path / "data.csv"))
    assert not isinstance(e.value, DataError)
    with pytest.raises(DataError, match=r"missing.jsonl: file not found"):
        load_problems(local_spec(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match=r"source=local needs a path"):
        load_problems(OmegaConf.structured(DatasetSpec(name="local", source="local")))


# ------------------------------------------------------------------------------------------------- hub


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_hub_offline_gives_clear_user_error(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = DatasetSpec(name="gsm8k_hub", source=Source.hub, path="memrl-test/no-such-dataset", subset="main")
    with pytest.raises(UserError) as e:
        load_problems(spec)
    msg = str(e.value)
    assert "hub dataset 'memrl-test/no-such-dataset'" in msg and "cannot be reached" in msg and "HF_HUB_OFFLINE" in msg
    assert "source=local" in msg and "path=" in msg
    assert "Traceback" not in msg and "\n" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


def fake_datasets(monkeypatch, load_dataset) -> None:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    module.config = types.SimpleNamespace(HF_HUB_OFFLINE=False)
    monkeypatch.setitem(sys.modules, "datasets", module)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


class FakeDataset(list):
    column_names = ("question", "answer", "extra")


def test_hub_field_mapping_with_a_fake_datasets(monkeypatch, no_network):
    calls = []

    def load_dataset(path, subset, split):
        calls.append((path, subset, split))
        return FakeDataset([{"question": "q0", "answer": 7, "extra": 1}, {"question": "q1", "answer": "8", "extra": 2}])

    fake_datasets(monkeypatch, load_dataset)
    spec = DatasetSpec(
        name="h", source=Source.hub, path="org/ds", subset="main", split="test", fields=FieldMap(id=None)
    )
    problems = load_problems(spec)
    assert calls == [("org/ds", "main", "test")]
    assert [(p.id, p.question, p.answer, p.metadata) for p in problems] == [
        ("h-0", "q0", "7", {"extra": 1}),
        ("h-1", "q1", "8", {"extra": 2}),
    ]
    spec.fields = FieldMap(id=None, question="problem")
    with pytest.raises(
        DataError, match=r"no column 'problem' \(fields.question\); available columns: question, answer, extra"
    ):
        load_problems(spec)


def test_hub_connection_error_becomes_user_error(monkeypatch, no_network):
    def load_dataset(path, subset, split):
        raise ConnectionError("Couldn't reach 'org/ds' on the Hub (LocalEntryNotFoundError)")

    fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(UserError, match=r"hub dataset 'org/ds' \(split test\): the Hugging Face hub cannot be reached"):
        load_problems(DatasetSpec(name="h", source=Source.hub, path="org/ds"))


# ------------------------------------------------------------------------------------------------- eval sets


def test_load_eval_sets_keys_order_and_limits(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(10)])
    specs = [
        DatasetSpec(name="amc23", limit=3),
        DatasetSpec(name="mine", source=Source.local, path=str(p), fields=FieldMap(id=None)),
        DatasetSpec(name="aime24"),
    ]
    sets = load_eval_sets(specs, data_dir=REPO_DATA, limit=5)
    assert list(sets) == ["amc23", "mine", "aime24"]
    assert {n: len(v) for n, v in sets.items()} == {"amc23": 3, "mine": 5, "aime24": 5}
    assert [p.id for p in sets["mine"]] == [f"mine-{i}" for i in range(5)]
    assert {n: len(v) for n, v in load_eval_sets(specs).items()} == {"amc23": 3, "mine": 10, "aime24": 30}


def test_load_eval_sets_from_omegaconf_nodes():
    node = OmegaConf.create(
        {"eval_sets": [{"name": "math500", "limit": 2}, {"name": "humaneval", "source": "bundled"}]}
    )
    sets = load_eval_sets(node.eval_sets)
    assert [p.id for p in sets["math500"]] == ["test/precalculus/807.json", "test/intermediate_algebra/1994.json"]
    assert len(sets["humaneval"]) == 164 and sets["humaneval"][0].id == "HumanEval/0"


def test_load_eval_sets_duplicate_names():
    with pytest.raises(UserError, match=r"two eval sets are named 'gsm8k'"):
        load_eval_sets([DatasetSpec(name="gsm8k"), DatasetSpec(name="math500"), DatasetSpec(name="gsm8k")])


def test_bad_limit():
    with pytest.raises(UserError, match=r"eval.limit must be a non-negative integer"):
        load_eval_sets([DatasetSpec(name="gsm8k")], limit=-1)
    assert load_problems(DatasetSpec(name="gsm8k", limit=0)) == []
