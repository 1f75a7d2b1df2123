"""Load the benchmarks a config names as lists of `Problem`.

A dataset spec (`DatasetSpec`, or an OmegaConf node of the same shape) names one of four sources:

- `bundled`: a benchmark shipped in `data/` (see `memrl.data.registry.BUNDLED`); `path` (default: `name`)
  picks it, `split` the file. Records are in the common layout, and the domain comes from the registry.
- `local`: a `.jsonl`, `.json` or `.parquet` file; `fields` says which fields hold the id, question and answer.
- `hub`: a Hugging Face hub dataset (`path` = dataset id, `subset`, `split`), with the same field mapping.
  It needs the network, or a copy in the local Hugging Face cache in offline mode.
- `synthetic`: the seeded arithmetic task (`memrl.data.synthetic`).

`domain: mixed` (local and hub only) reads each record's own `domain` field, for mixtures of math, multiple
choice and code such as `memrl data prepare memreward` writes; code records need no answer.

Every problem that could not be read is a `DataError` naming the file and line (JSONL), item (JSON list) or
row (Parquet, hub), the field, and the fields the record does have.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omegaconf.errors import MissingMandatoryValue

from memrl.config.schema import DatasetSpec, SyntheticConfig
from memrl.data.problem import DOMAINS, Problem
from memrl.data.registry import BUNDLED, BundledBenchmark, default_data_dir, prepare_hint
from memrl.data.toys import load_split
from memrl.errors import DataError, UserError

__all__ = [
    "BUNDLED",
    "BundledBenchmark",
    "default_data_dir",
    "load_eval_sets",
    "load_problems",
    "read_jsonl",
]

log = logging.getLogger(__name__)

SOURCES = ("bundled", "local", "hub", "synthetic")
# a dataset's domain that defers to each record's `domain` field
MIXED = "mixed"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json",)
PARQUET_SUFFIXES = (".parquet", ".pq")
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")

# (location, record): location is "file:line", "file: item i" or "file: row i", used in error messages
Records = Iterable[tuple[str, dict[str, Any]]]


# --------------------------------------------------------------------------------------------------- JSONL


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Iterate over a JSONL file as (1-based line number, record); blank lines are skipped.

    Raises:
        DataError: the file is missing (at the call), or a line is not valid JSON or not a JSON object
            (when that line is reached), as `"<path>:<line>: ..."`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    return _iter_jsonl(path)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as f:
        lineno = 0
        while True:
            lineno += 1
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            if not line:
                return
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {_json_type(record)}")
            yield lineno, record


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _jsonl_records(path: Path) -> Records:
    return ((f"{path}:{lineno}", record) for lineno, record in read_jsonl(path))


def _json_records(path: Path) -> Records:
    """A `.json` file: a JSON array of objects, or JSON Lines under a .json name."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(4096).lstrip()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason})") from None
    if not head.startswith("["):
        return _jsonl_records(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError(f"{path}: item {i} (counting from 0): expected a JSON object, got {_json_type(item)}")
    return ((f"{path}: item {i} (counting from 0)", item) for i, item in enumerate(data))


def _parquet_records(path: Path, needed: list[tuple[str, str]]) -> Records:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    columns = list(pf.schema_arrow.names)
    for field, role in needed:
        if field not in columns:
            raise DataError(f"{path}: no column '{field}' ({role}); available columns: {_names(columns)}")

    def rows() -> Records:
        i = 0
        for batch in pf.iter_batches():
            for record in batch.to_pylist():
                yield f"{path}: row {i} (counting from 0)", record
                i += 1

    return rows()


# --------------------------------------------------------------------------------------------------- records -> problems


def _names(keys: Iterable[Any], most: int = 30) -> str:
    keys = [str(k) for k in keys]
    if not keys:
        return "(none)"
    more = f", ... ({len(keys) - most} more)" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: Any, where: str, field: str) -> str:
    """A field value as a string: numbers become their shortest form (18 and 18.0 -> "18", 2.5 -> "2.5")."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    if isinstance(value, numbers.Number):
        return str(value)
    raise DataError(
        f"{where}: field '{field}' is {_json_type(value)}, expected a string or a number; "
        "point the field mapping at a field that holds the text"
    )


def _field(record: dict[str, Any], field: str, role: str, where: str) -> str:
    if field not in record:
        raise DataError(f"{where}: no field '{field}' ({role}); the record has: {_names(record)}")
    value = record[field]
    if _is_missing(value):
        raise DataError(f"{where}: field '{field}' ({role}) is empty (null)")
    return _text(value, where, field)


def _to_problems(
    records: Records,
    *,
    name: str,
    domain: str,
    id_field: str | None,
    question_field: str,
    answer_field: str | None,
    roles: dict[str, str],
    limit: int | None,
) -> list[Problem]:
    problems: list[Problem] = []
    if limit == 0:
        return problems
    used = {id_field, question_field, answer_field} | ({"domain"} if domain == MIXED else set())
    first_seen: dict[str, str] = {}
    for i, (where, record) in enumerate(records):
        pid = f"{name}-{i}" if id_field is None else _field(record, id_field, roles["id"], where)
        question = _field(record, question_field, roles["question"], where)
        if not question.strip():
            raise DataError(f"{where}: field '{question_field}' ({roles['question']}) is blank")
        record_domain = _record_domain(record, where) if domain == MIXED else domain
        # code is graded by the tests in its metadata: a mixture's code records have no answer
        no_answer = answer_field is None or (domain == MIXED and record_domain == "code")
        answer = None if no_answer else _field(record, answer_field, roles["answer"], where)
        if pid in first_seen:
            raise DataError(
                f"{where}: duplicate id '{pid}' (first at {first_seen[pid]}); ids must be unique within a dataset"
                + ("; set fields.id=null to number the records instead" if roles["id"].startswith("fields") else "")
            )
        first_seen[pid] = where
        metadata = {k: v for k, v in record.items() if k not in used}
        problems.append(
            Problem(id=pid, question=question, answer=answer, domain=record_domain, source=name, metadata=metadata)
        )
        if limit is not None and len(problems) >= limit:
            break
    return problems


def _record_domain(record: dict[str, Any], where: str) -> str:
    """The `domain` field of a record of a `domain: mixed` dataset."""
    if "domain" not in record or _is_missing(record["domain"]):
        raise DataError(
            f"{where}: no field 'domain'; a dataset with domain=mixed needs one per record "
            f"({', '.join(DOMAINS)}); the record has: {_names(record)}"
        )
    value = record["domain"]
    if value not in DOMAINS:
        raise DataError(f"{where}: field 'domain' is {value!r}; valid: {', '.join(DOMAINS)}")
    return value


# --------------------------------------------------------------------------------------------------- specs


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """An attribute of a dataclass or OmegaConf node, or a key of a dict; `default` when absent or `???`."""
    try:
        value = obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)
    except MissingMandatoryValue:
        return default
    return default if value == "???" else value


def _check_limit(limit: Any, what: str) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0:
        raise UserError(f"{what} must be a non-negative integer or null, got {limit!r}")
    return int(limit)


def _min_limit(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _field_map(spec: DatasetSpec) -> tuple[str | None, str, str | None]:
    fields = _get(spec, "fields")
    if fields is None:
        return "id", "question", "answer"
    id_field = _get(fields, "id", "id")
    question_field = _get(fields, "question", "question")
    answer_field = _get(fields, "answer", "answer")
    if not question_field:
        raise UserError("fields.question must name the field that holds the question")
    return id_field or None, question_field, answer_field or None


FIELD_ROLES = {"id": "fields.id", "question": "fields.question", "answer": "fields.answer"}
BUNDLED_ROLES = {"id": "the id", "question": "the question", "answer": "the gold answer"}


def load_problems(
    spec: DatasetSpec, data_dir: str | Path | None = None, synthetic: SyntheticConfig | None = None
) -> list[Problem]:
    """Load the problems of one dataset spec (see the module docstring), keeping the first `spec.limit`.

    Args:
        spec: a `DatasetSpec` or an OmegaConf node with its fields.
        data_dir: the folder of the bundled benchmarks (default: `default_data_dir()`).
        synthetic: a `SyntheticConfig`-like node for source=synthetic (default: `SyntheticConfig()`).

    Raises:
        UserError: an unknown bundled name or split, a missing path, an unknown file type, an unreachable hub.
        DataError: a missing file, malformed JSON, a record without a mapped field.
    """
    return _load(spec, data_dir, synthetic, None)


def load_eval_sets(
    specs: Iterable[Any], data_dir: str | Path | None = None, synthetic: Any = None, limit: int | None = None
) -> dict[str, list[Problem]]:
    """Load every spec, keyed by `spec.name` in order; `limit` (eval.limit) applies on top of each `spec.limit`."""
    specs = list(specs)
    limit = _check_limit(limit, "eval.limit")
    names = [_get(spec, "name") for spec in specs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise UserError(
                f"two eval sets are named '{name}' in data.eval_sets; results are keyed by name, so give each a distinct name"
            )
    return {name: _load(spec, data_dir, synthetic, limit) for name, spec in zip(names, specs)}


def _load(
    spec: DatasetSpec, data_dir: str | Path | None, synthetic: SyntheticConfig | None, extra_limit: int | None
) -> list[Problem]:
    name = _get(spec, "name")
    if not name:
        raise UserError("every dataset in data.eval_sets needs a name")
    name = str(name)
    limit = _min_limit(_check_limit(_get(spec, "limit"), f"dataset '{name}': limit"), extra_limit)
    source = _value(_get(spec, "source", "bundled"))
    if source == "bundled":
        problems = _load_bundled(spec, name, data_dir, limit)
    elif source in ("local", "hub"):
        domain = _value(_get(spec, "domain", "math"))
        if domain not in (*DOMAINS, MIXED):
            raise UserError(f"dataset '{name}': unknown domain '{domain}'; valid: {', '.join((*DOMAINS, MIXED))}")
        if source == "local":
            problems = _load_local(spec, name, domain, limit)
        else:
            problems = _load_hub(spec, name, domain, limit)
    elif source == "synthetic":
        problems = _load_synthetic(spec, synthetic)
        if limit is not None:
            problems = problems[:limit]
    else:
        raise UserError(f"dataset '{name}': unknown source '{source}'; valid: {', '.join(SOURCES)}")
    log.info("dataset %s: %d problems (%s)", name, len(problems), source)
    return problems


def _load_bundled(spec: DatasetSpec, name: str, data_dir: str | Path | None, limit: int | None) -> list[Problem]:
    key = str(_get(spec, "path") or name)
    bench = BUNDLED.get(key)
    if bench is None:
        raise UserError(
            f"dataset '{name}': '{key}' is not a bundled benchmark; bundled: {', '.join(sorted(BUNDLED))}. "
            "Other data can be loaded with source=local (a JSONL or Parquet file) or source=hub"
        )
    split = str(_get(spec, "split") or "test")
    if split not in bench.splits:
        raise UserError(
            f"dataset '{name}': bundled benchmark '{key}' has no split '{split}'; its splits: "
            f"{', '.join(bench.splits)}. Other splits can be loaded with source=local or source=hub"
        )
    spec_domain = _value(_get(spec, "domain"))
    if spec_domain is not None and spec_domain != bench.domain:
        log.debug("dataset %s: bundled domain %s overrides domain=%s", name, bench.domain, spec_domain)
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    path = bench.file(folder, split)
    if not path.is_file():
        raise DataError(
            f"dataset '{name}': {path} not found. The bundled benchmarks are in the repository's data/ folder; "
            "set paths.data_dir (or the MEMRL_DATA_DIR environment variable) to that folder"
        )
    problems = _to_problems(
        _jsonl_records(path),
        name=name,
        domain=bench.domain,
        id_field="id",
        question_field="question",
        answer_field=None if bench.domain == "code" else "answer",
        roles=BUNDLED_ROLES,
        limit=limit,
    )
    expected = bench.splits[split]
    if limit is None and len(problems) != expected:
        log.warning("dataset %s: %s has %d records, expected %d", name, path, len(problems), expected)
    return problems


def _load_local(spec: DatasetSpec, name: str, domain: str, limit: int | None) -> list[Problem]:
    raw = _get(spec, "path")
    if not raw:
        raise UserError(
            f"dataset '{name}': source=local needs a path to a .jsonl, .json or .parquet file "
            "(e.g. data.eval_sets.0.path=my_data.jsonl)"
        )
    path = Path(str(raw)).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    suffix = path.suffix.lower()
    known = JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
    if suffix not in known:
        raise UserError(
            f"dataset '{name}': cannot read {path}: unknown file type '{suffix or '(none)'}'; use one of {', '.join(known)}"
        )
    if not path.is_file():
        raise DataError(
            f"dataset '{name}': {path}: file not found"
            + ("" if not path.exists() else " (not a file)")
            + prepare_hint(path)
        )
    id_field, question_field, answer_field = _field_map(spec)
    if suffix in PARQUET_SUFFIXES:
        needed = [
            (f, FIELD_ROLES[r]) for r, f in (("id", id_field), ("question", question_field), ("answer", answer_field))
        ]
        records = _parquet_records(path, [(f, role) for f, role in needed if f is not None])
    elif suffix in JSON_SUFFIXES:
        records = _json_records(path)
    else:
        records = _jsonl_records(path)
    return _to_problems(
        records,
        name=name,
        domain=domain,
        id_field=id_field,
        question_field=question_field,
        answer_field=answer_field,
        roles=FIELD_ROLES,
        limit=limit,
    )


# --------------------------------------------------------------------------------------------------- hub


def _offline_env() -> str | None:
    """The name of the set environment variable that puts Hugging Face libraries offline, if any."""
    for var in OFFLINE_ENV:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return var
    return None


def _library_offline(datasets: Any) -> bool:
    """Whether `datasets` and `huggingface_hub` themselves are in offline mode (they read the env at import)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - datasets depends on it
        return False
    return bool(getattr(getattr(datasets, "config", None), "HF_HUB_OFFLINE", False)) and bool(
        getattr(constants, "HF_HUB_OFFLINE", False)
    )


_CONNECTION_ERRORS = {
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "TimeoutException",
    "NetworkError",
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "MaxRetryError",
    "NameResolutionError",
    "ProxyError",
}
_NOT_FOUND_ERRORS = {
    "DatasetNotFoundError",
    "DataFilesNotFoundError",
    "EmptyDatasetError",
    "RepositoryNotFoundError",
    "GatedRepoError",
}


def _error_chain(e: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _is_connection_error(e: BaseException) -> bool:
    for err in _error_chain(e):
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        if any(cls.__name__ in _CONNECTION_ERRORS for cls in type(err).__mro__):
            return True
    return False


def _first_line(e: BaseException, most: int = 200) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(e).__name__}: {line[:most]}" if line else type(e).__name__


def open_hub_dataset(
    dataset_id: str, subset: str | None, split: str, *, label: str, how: str, revision: str | None = None
) -> Any:
    """One split of a hub dataset (`datasets.load_dataset`), with every failure a user can fix as a UserError.

    Args:
        label: how errors name the dataset; how: what the user can do instead when the hub cannot be reached.

    Raises:
        UserError: `datasets` missing, offline (HF_HUB_OFFLINE and friends, or no connection), or an unknown or
            gated dataset, configuration or split.
    """
    offline = _offline_env()
    try:
        import datasets
    except ImportError:
        raise UserError(f"cannot load {label}: it needs the `datasets` package (pip install datasets)") from None
    if offline and not _library_offline(datasets):
        # The env asks for offline mode, but the libraries were imported before it was set: do not risk the network.
        raise UserError(f"cannot load {label}: the Hugging Face hub cannot be reached ({offline} is set). {how}")
    try:
        return datasets.load_dataset(dataset_id, subset, split=split, **({"revision": revision} if revision else {}))
    except Exception as e:
        if offline or _is_connection_error(e):
            why = f"{offline} is set and it is not in the local cache" if offline else _first_line(e)
            raise UserError(f"cannot load {label}: the Hugging Face hub cannot be reached ({why}). {how}") from None
        if isinstance(e, (ValueError, FileNotFoundError, KeyError)) or any(
            type(err).__name__ in _NOT_FOUND_ERRORS for err in _error_chain(e)
        ):
            raise UserError(f"cannot load {label}: {_first_line(e)}") from None
        raise


def _load_hub(spec: DatasetSpec, name: str, domain: str, limit: int | None) -> list[Problem]:
    dataset_id = _get(spec, "path")
    if not dataset_id:
        raise UserError(f"dataset '{name}': source=hub needs path=<hub dataset id> (e.g. path=openai/gsm8k)")
    dataset_id = str(dataset_id)
    subset = _get(spec, "subset")
    split = str(_get(spec, "split") or "test")
    label = f"hub dataset '{dataset_id}'" + (f" (subset {subset}, split {split})" if subset else f" (split {split})")
    stem = dataset_id.replace("/", "_") + (f"_{subset}" if subset else "") + f"_{split}"
    how = (
        f"Download it on a machine with network access, e.g. `datasets.load_dataset({dataset_id!r}, {subset!r}, "
        f"split={split!r}).to_json({stem + '.jsonl'!r})`, copy the file here, and use source=local "
        f"path={stem}.jsonl (with fields.question / fields.answer naming its columns)"
    )

    ds = open_hub_dataset(dataset_id, subset, split, label=label, how=how)
    id_field, question_field, answer_field = _field_map(spec)
    columns = list(getattr(ds, "column_names", None) or [])
    if columns:
        for role, field in (("id", id_field), ("question", question_field), ("answer", answer_field)):
            if field is not None and field not in columns:
                raise DataError(
                    f"{label}: no column '{field}' ({FIELD_ROLES[role]}); available columns: {_names(columns)}"
                )
    records = ((f"{label}: row {i} (counting from 0)", dict(row)) for i, row in enumerate(ds))
    return _to_problems(
        records,
        name=name,
        domain=domain,
        id_field=id_field,
        question_field=question_field,
        answer_field=answer_field,
        roles=FIELD_ROLES,
        limit=limit,
    )


# --------------------------------------------------------------------------------------------------- synthetic


def _load_synthetic(spec: DatasetSpec, synthetic: SyntheticConfig | None) -> list[Problem]:
    if synthetic is None:
        synthetic = SyntheticConfig()
    return list(load_split(str(_get(spec, "split") or "test"), synthetic))
