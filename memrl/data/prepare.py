"""`memrl data prepare NAME`: build the papers' training mixtures from hub datasets, as JSONL in memrl's layout.

Three sets (docs/methods.md#memreward-datasets, docs/methods.md#meds-hyperparameters), written under `<data_dir>/prepared/<name>/`:

- `memreward`: the MemReward in-domain mixture. Ten benchmarks; each is deduplicated, then up to 1,500
  problems are sampled (seed 42) and split 50/20/30 into train / validation / test. Multiple-choice options
  are written into the question with letters, and code problems keep their tests (HumanEval's `test` and
  `entry_point`, MBPP's `test_list`) as the bundled files do. Files: `train.jsonl` and `val.jsonl` (every
  benchmark, each record with its `domain`), `test/<benchmark>.jsonl`, `manifest.json`.
- `memreward_ood`: NuminaMath (2,000 sampled first, those with a boxed answer kept), SIQA and PIQA, the same way.
- `meds`: DAPO-Math-17K (processed, English) + MATH-lighteval levels 3-5, deduplicated on the problem text:
  `train.jsonl` and `manifest.json`. Validation (AIME24) and the evaluation suite are bundled.

Hub rows are read only here and only when the user runs the command (`load_hub_rows`); offline, it is a
`UserError` that says so. Splits are counted as train = floor(n/2), validation = floor(n/5), test = the rest
(1,500 -> 750/300/450; GPQA-diamond's 198 -> 99/39/60, the paper's 39 and 60).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memrl.errors import DataError, UserError

# the folder under paths.data_dir that holds every prepared set
PREPARED_DIR = "prepared"
SEED = 42
LETTERS = "ABCDEFGHIJ"

Row = dict[str, Any]
# a hub row -> a record in the common layout without `id` (None: the row is skipped, e.g. it has no answer)
Converter = Callable[[Row, int], Row | None]


@dataclass(frozen=True)
class HubSource:
    """One benchmark read from the hub.

    Attributes:
        name: the benchmark's name (test file name, record ids, eval set name).
        domain: math, choice or code.
        path: the hub dataset id.
        subset: the hub configuration (None: the default).
        splits: hub splits pooled before sampling (only splits with gold answers).
        convert: hub row -> common record (see `Converter`).
        revision: a hub revision (None: the main branch).
        presample: sample this many rows first, before dropping unusable ones (NuminaMath: 2,000).
    """

    name: str
    domain: str
    path: str
    subset: str | None
    splits: tuple[str, ...]
    convert: Converter
    revision: str | None = None
    presample: int | None = None


@dataclass(frozen=True)
class PrepareSpec:
    """One `memrl data prepare` set: its sources and how they are sampled and split."""

    name: str
    sources: tuple[HubSource, ...]
    # at most this many problems per benchmark (None: all)
    cap: int | None
    # write train / val / test splits (False: one train.jsonl of everything)
    split: bool = True
    # deduplicate across sources too (the MEDS mixture), not only within each
    dedup_across: bool = False


# --------------------------------------------------------------------------------------------------- helpers


def split_counts(n: int) -> tuple[int, int, int]:
    """Train / validation / test sizes of an n-problem benchmark: 50%, 20% (both rounded down), the rest."""
    train, val = n // 2, n // 5
    return train, val, n - train - val


def normalise_text(text: str) -> str:
    """The dedup key of a question: lower case, whitespace collapsed."""
    return " ".join(str(text).lower().split())


def format_choices(question: str, options: list[str]) -> str:
    """A multiple-choice question with its options lettered A., B., ... on their own lines (as the bundled ARC)."""
    if not 2 <= len(options) <= len(LETTERS):
        raise DataError(f"a multiple-choice question needs 2 to {len(LETTERS)} options, got {len(options)}")
    lines = "\n".join(f"{LETTERS[i]}. {str(o).strip()}" for i, o in enumerate(options))
    return f"{str(question).strip()}\n\n{lines}"


def _choice(question: str, options: list[str], correct: int, **meta: Any) -> Row | None:
    if not 0 <= correct < len(options):
        return None  # unlabelled (e.g. CommonsenseQA's test split)
    return {"question": format_choices(question, options), "answer": LETTERS[correct], "choices": options, **meta}


def _labelled(choices: dict[str, list[str]], key: str) -> int:
    """The position of the answer key among a {label, text} choice struct (-1: absent)."""
    labels = [str(x) for x in choices["label"]]
    return labels.index(str(key)) if str(key) in labels else -1


def _boxed(solution: str) -> str | None:
    from memrl.grading.extract import last_boxed

    answer = last_boxed(str(solution))
    return answer.strip() if answer and answer.strip() else None


def _after_hash(answer: str) -> str | None:
    from memrl.grading.extract import after_hash

    value = after_hash(str(answer))
    return value.replace(",", "").strip() if value else None


# --------------------------------------------------------------------------------------------------- converters


def _gsm(row: Row, _: int) -> Row | None:
    answer = _after_hash(row["answer"])
    return None if answer is None else {"question": row["question"], "answer": answer, "solution": row["answer"]}


def _math_nlile(row: Row, _: int) -> Row | None:
    keep = {k: row[k] for k in ("solution", "subject", "level", "unique_id") if k in row}
    return {"question": row["problem"], "answer": str(row["answer"]), **keep}


def _mmlu(row: Row, _: int) -> Row | None:
    return _choice(row["question"], list(row["choices"]), int(row["answer"]), subject=row.get("subject"))


def _struct_choice(stem_field: str) -> Converter:
    def convert(row: Row, _: int) -> Row | None:
        ch = row["choices"]
        return _choice(row[stem_field], list(ch["text"]), _labelled(ch, row["answerKey"]), source_id=row.get("id"))

    return convert


def _gpqa(row: Row, i: int) -> Row | None:
    options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    # the hub lists the correct answer first: shuffle per question, reproducibly
    order = list(range(4))
    random.Random(f"{SEED}:gpqa:{row.get('Record ID', i)}").shuffle(order)
    shuffled = [str(options[j]).strip() for j in order]
    return _choice(row["Question"], shuffled, order.index(0), source_id=row.get("Record ID"))


def _humaneval(row: Row, _: int) -> Row | None:
    keep = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return {"question": row["prompt"], **{k: row[k] for k in keep}}


def _mbppplus(row: Row, _: int) -> Row | None:
    # the original asserts (test_list); their imports run after the program, as MBPP's setup code
    return {
        "question": row["prompt"],
        "task_id": row["task_id"],
        "code": row["code"],
        "test_list": list(row["test_list"]),
        "test_setup_code": "\n".join(row.get("test_imports") or []),
    }


def _numina(row: Row, _: int) -> Row | None:
    answer = _boxed(row["solution"])
    return None if answer is None else {"question": row["problem"], "answer": answer, "origin": row.get("source")}


def _siqa(row: Row, _: int) -> Row | None:
    options = [row["answerA"], row["answerB"], row["answerC"]]
    label = str(row["label"]).strip()
    correct = int(label) - 1 if label.isdigit() else -1
    return _choice(f"{row['context']}\n{row['question']}", options, correct)


def _piqa(row: Row, _: int) -> Row | None:
    return _choice(row["goal"], [row["sol1"], row["sol2"]], int(row["label"]))


# DAPO-Math-17K's prompt wraps each problem in an "Answer: $Answer" instruction; MEDS asks for \boxed{} instead
_DAPO_HEAD = re.compile(r"^\s*Solve the following math problem step by step\..*?\n\n", re.S)
_DAPO_TAIL = re.compile(r"\n\nRemember to put your answer on its own line after \"Answer:\"\.?\s*$")


def _dapo(row: Row, _: int) -> Row | None:
    problem = _DAPO_TAIL.sub("", _DAPO_HEAD.sub("", str(row["prompt"]), count=1)).strip()
    return {"question": problem, "answer": str(row["solution"]), "origin": "DAPO-Math-17k"}


def _math_lighteval(row: Row, _: int) -> Row | None:
    match = re.search(r"\d+", str(row.get("level", "")))
    level = int(match.group()) if match else None
    answer = _boxed(row["solution"])
    if level is None or level < 3 or answer is None:
        return None  # docs/methods.md#meds-hyperparameters: levels 3-5 only
    return {"question": row["problem"], "answer": answer, "level": level, "subject": row.get("type")}


# --------------------------------------------------------------------------------------------------- the sets

# Hub ids and configurations: docs/methods.md#memreward-datasets and docs/methods.md#meds-hyperparameters where they name them; SIQA and PIQA upstream are loading scripts,
# which `datasets` 4+ no longer runs: their hub parquet conversion (refs/convert/parquet) is read instead.
MEMREWARD = PrepareSpec(
    "memreward",
    (
        HubSource("gsm8k", "math", "openai/gsm8k", "main", ("train", "test"), _gsm),
        HubSource("gsm_symbolic", "math", "apple/GSM-Symbolic", "main", ("test",), _gsm),
        HubSource("math", "math", "nlile/hendrycks-MATH-benchmark", None, ("train", "test"), _math_nlile),
        HubSource("mmlu", "choice", "cais/mmlu", "all", ("test", "validation", "dev"), _mmlu),
        HubSource(
            "commonsenseqa", "choice", "tau/commonsense_qa", None, ("train", "validation"), _struct_choice("question")
        ),
        HubSource(
            "obqa",
            "choice",
            "allenai/openbookqa",
            "main",
            ("train", "validation", "test"),
            _struct_choice("question_stem"),
        ),
        HubSource(
            "arc_challenge",
            "choice",
            "allenai/ai2_arc",
            "ARC-Challenge",
            ("train", "validation", "test"),
            _struct_choice("question"),
        ),
        # gated on the hub: accept its terms and log in (huggingface-cli login) first
        HubSource("gpqa_diamond", "choice", "Idavidrein/gpqa", "gpqa_diamond", ("train",), _gpqa),
        # the paper's "HumanEval+" is graded with the original HumanEval asserts (docs/methods.md#memreward-datasets)
        HubSource("humaneval", "code", "openai/openai_humaneval", None, ("test",), _humaneval),
        HubSource("mbpp", "code", "evalplus/mbppplus", None, ("test",), _mbppplus),
    ),
    cap=1500,
)

MEMREWARD_OOD = PrepareSpec(
    "memreward_ood",
    (
        HubSource("numinamath", "math", "AI-MO/NuminaMath-CoT", None, ("train",), _numina, presample=2000),
        HubSource(
            "siqa",
            "choice",
            "allenai/social_i_qa",
            None,
            ("train", "validation"),
            _siqa,
            revision="refs/convert/parquet",
        ),
        HubSource(
            "piqa", "choice", "ybisk/piqa", None, ("train", "validation"), _piqa, revision="refs/convert/parquet"
        ),
    ),
    cap=1500,
)

MEDS = PrepareSpec(
    "meds",
    (
        HubSource("dapo_math_17k", "math", "open-r1/DAPO-Math-17k-Processed", "en", ("train",), _dapo),
        # the train split only: MATH's test split holds MATH500, an evaluation set
        HubSource("math_lighteval", "math", "DigitalLearningGmbH/MATH-lighteval", None, ("train",), _math_lighteval),
    ),
    cap=None,
    split=False,
    dedup_across=True,
)

SETS: dict[str, PrepareSpec] = {s.name: s for s in (MEMREWARD, MEMREWARD_OOD, MEDS)}


# --------------------------------------------------------------------------------------------------- hub


def load_hub_rows(source: HubSource, split: str) -> tuple[list[Row], dict[str, Any]]:
    """All rows of one hub split, and what is known of its version ({"fingerprint": ...}).

    Raises:
        UserError: offline (HF_HUB_OFFLINE and friends, or no connection), `datasets` missing, or an unknown
            dataset / configuration / split.
    """
    from memrl.data.loaders import open_hub_dataset

    label = f"hub dataset '{source.path}'" + (f" (subset {source.subset})" if source.subset else "") + f" split {split}"
    how = "`memrl data prepare` needs the network once; run it on a machine that has it and copy data/prepared/ here"
    ds = open_hub_dataset(source.path, source.subset, split, label=label, how=how, revision=source.revision)
    return [dict(r) for r in ds], {"fingerprint": getattr(ds, "_fingerprint", None)}


# --------------------------------------------------------------------------------------------------- building


def _records(source: HubSource, rows: list[tuple[str, int, Row]]) -> list[Row]:
    """Convert (split, row index, row) to records with ids, dropping unusable rows; a missing field is a DataError."""
    out = []
    for split, i, row in rows:
        try:
            record = source.convert(row, i)
        except KeyError as e:
            raise DataError(
                f"hub dataset '{source.path}' split {split} row {i}: no field {e}; the row has: {', '.join(row)}"
            ) from None
        if record is None:
            continue
        out.append({"id": f"{source.name}-{split}-{i}", **record, "domain": source.domain, "benchmark": source.name})
    return out


def _dedup(records: list[Row], seen: set[str]) -> list[Row]:
    """The records whose question is not in `seen` (first occurrence kept); `seen` grows."""
    out = []
    for r in records:
        key = normalise_text(r["question"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def build(
    spec: PrepareSpec,
    load: Callable[[HubSource, str], tuple[list[Row], dict[str, Any]]],
    limit: int | None = None,
    seed: int = SEED,
) -> tuple[dict[str, list[Row]], dict[str, Any]]:
    """The files of one set (relative path -> records) and its manifest, from `load(source, split)` rows.

    Args:
        spec: the set.
        load: reads one hub split (`load_hub_rows`; tests pass fakes).
        limit: at most this many problems per benchmark, below the spec's cap (a small trial build).
        seed: the sampling seed (the papers: 42).
    """
    cap = spec.cap if limit is None else (limit if spec.cap is None else min(spec.cap, limit))
    files: dict[str, list[Row]] = {}
    train: list[Row] = []
    val: list[Row] = []
    sources = []
    seen_across: set[str] = set()
    for source in spec.sources:
        rows, versions = [], {}
        for split in source.splits:
            split_rows, info = load(source, split)
            versions[split] = {"rows": len(split_rows), **info}
            rows.extend((split, i, r) for i, r in enumerate(split_rows))
        rng = random.Random(f"{seed}:{source.name}")
        if source.presample is not None and len(rows) > source.presample:
            rows = [rows[i] for i in sorted(rng.sample(range(len(rows)), source.presample))]
        records = _records(source, rows)
        usable = len(records)
        records = _dedup(records, seen_across if spec.dedup_across else set())
        deduplicated = len(records)
        rng.shuffle(records)
        if cap is not None:
            records = records[:cap]
        entry = {
            "benchmark": source.name,
            "domain": source.domain,
            "hub_id": source.path,
            "subset": source.subset,
            "revision": source.revision or "main",
            "splits": versions,
            "presampled": source.presample,
            "usable": usable,
            "after_dedup": deduplicated,
            "sampled": len(records),
        }
        if spec.split:
            n_train, n_val, _ = split_counts(len(records))
            train += records[:n_train]
            val += records[n_train : n_train + n_val]
            files[f"test/{source.name}.jsonl"] = records[n_train + n_val :]
            entry["counts"] = {"train": n_train, "val": n_val, "test": len(records) - n_train - n_val}
        else:
            train += records
            entry["counts"] = {"train": len(records)}
        sources.append(entry)
    files["train.jsonl"] = train
    if spec.split:
        files["val.jsonl"] = val
    manifest = {
        "name": spec.name,
        "seed": seed,
        "cap_per_benchmark": cap,
        "split": "train floor(n/2), val floor(n/5), test the rest" if spec.split else "train only",
        "dedup": "normalised question text, "
        + ("across all sources" if spec.dedup_across else "within each benchmark"),
        "sources": sources,
        "files": {path: len(records) for path, records in files.items()},
    }
    return files, manifest


def prepare(name: str, out_dir: str | Path, limit: int | None = None, load: Any = None) -> Path:
    """Build set `name` from the hub and write it under `out_dir/<name>/` (JSONL files and manifest.json).

    Raises:
        UserError: an unknown set name, a bad limit, or the hub cannot be reached.
    """
    if name not in SETS:
        raise UserError(f"unknown data set '{name}'; valid: {', '.join(SETS)}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit-per-benchmark must be a positive integer, got {limit}")
    files, manifest = build(SETS[name], load or load_hub_rows, limit)
    root = Path(out_dir).expanduser() / name
    for rel, records in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(path)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return root


def prepare_hint(path: str | Path) -> str:
    """For a missing file under `<...>/prepared/<name>/`: the sentence that says how to build it ("" otherwise)."""
    parts = Path(path).parts
    if PREPARED_DIR in parts[:-1]:
        name = parts[parts.index(PREPARED_DIR) + 1]
        if name in SETS:
            return f". Build it with `memrl data prepare {name}` (needs the network once)"
    return ""
