"""The benchmarks bundled in the repository's `data/` folder, and where that folder is.

Each bundled benchmark is `data/<folder>/<split>.jsonl` in the common layout (`id`, `question`,
`answer`, then any metadata fields); `data/README.md` and `data/<folder>/SOURCE.md` give sources,
licences and field mappings. `splits` holds the number of records each split is expected to have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import memrl

# Overrides the bundled data folder (`paths.data_dir` defaults to it).
DATA_DIR_ENV = "MEMRL_DATA_DIR"


@dataclass(frozen=True)
class BundledBenchmark:
    """One benchmark shipped in `data/`.

    Attributes:
        name: the name configs use (`data.eval_sets[i].name`, or `path` for source=bundled).
        folder: the folder under the data directory.
        domain: how answers are graded: "math", "choice" or "code" (code has no `answer` field).
        splits: split name -> expected number of records.
    """

    name: str
    folder: str
    domain: str
    splits: dict[str, int]

    def file(self, data_dir: Path, split: str) -> Path:
        """The JSONL file of one split under `data_dir`."""
        return Path(data_dir) / self.folder / f"{split}.jsonl"


def _bench(name: str, domain: str, **splits: int) -> tuple[str, BundledBenchmark]:
    return name, BundledBenchmark(name=name, folder=name, domain=domain, splits=dict(splits))


BUNDLED: dict[str, BundledBenchmark] = dict(
    [
        _bench("gsm8k", "math", test=1319, train=7473),
        _bench("math", "math", train=7470),
        _bench("math500", "math", test=500),
        _bench("aime24", "math", test=30),
        _bench("amc23", "math", test=40),
        _bench("minerva_math", "math", test=272),
        _bench("olympiadbench", "math", test=675),
        _bench("arc_challenge", "choice", test=1172),
        _bench("commonsenseqa", "choice", test=1221),
        _bench("humaneval", "code", test=164),
        _bench("mbpp", "code", test=500, train=474),
    ]
)


def default_data_dir() -> Path:
    """The folder that holds the bundled benchmarks: `$MEMRL_DATA_DIR`, else the repository's `data/`."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(memrl.__file__).resolve().parents[1] / "data"


# `memrl data prepare NAME` (memrl.stages.prepare) writes <data dir>/prepared/NAME/
PREPARED_DIR = "prepared"


def prepare_hint(path: str | Path) -> str:
    """For a missing file under `<...>/prepared/<name>/`: the sentence that says how to build it ("" otherwise)."""
    parts = Path(path).parts
    if PREPARED_DIR in parts[:-1]:
        name = parts[parts.index(PREPARED_DIR) + 1]
        return f". Build it with `memrl data prepare {name}` (needs the network once)"
    return ""
