"""The experience memory: rollouts of the initial policy on chosen queries, with their correctness.

Every query has a role:

- ``train``: a labelled training query; its rollouts are the GNN's training targets.
- ``val``: a GNN validation query (early stopping and selection of restarts); its labels are counted.
- ``report``: an unlabelled training query rolled out for the reward-prediction report only. Its ground
  truth is read for that report's metrics, never by a reward, filter or model (rule 7 of the brief).

On disk (`memory/` in the run directory): `queries.jsonl` and `rollouts.jsonl`, written atomically, and
`done.json` last, so a memory without `done.json` is incomplete and is rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memrl.errors import DataError
from memrl.utils.io import atomic_write_json, atomic_write_jsonl

ROLES = ("train", "val", "report")
QUERIES, ROLLOUTS, DONE = "queries.jsonl", "rollouts.jsonl", "done.json"


@dataclass
class MemoryQuery:
    """A query of the memory: its id, role, the text that is embedded, and its domain."""

    id: str
    role: str
    question: str
    domain: str = "math"


@dataclass
class MemoryRollout:
    """One rollout of a memory query.

    Attributes:
        query: index of its query in `ExperienceMemory.queries`.
        think / answer: the completion split into thinking and answer (`memrl.rollout.split`).
        correct: ground-truth correctness (for `report` queries: for metrics only).
    """

    query: int
    sample_index: int
    text: str
    think: str
    answer: str
    correct: bool
    num_tokens: int
    finish_reason: str


@dataclass
class ExperienceMemory:
    queries: list[MemoryQuery]
    rollouts: list[MemoryRollout]

    def indices(self, role: str) -> list[int]:
        """Indices of the queries with `role`."""
        return [i for i, q in enumerate(self.queries) if q.role == role]

    def rollout_indices(self, role: str) -> list[int]:
        """Indices of the rollouts whose query has `role`."""
        return [j for j, r in enumerate(self.rollouts) if self.queries[r.query].role == role]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role in ROLES:
            rows = [self.rollouts[j] for j in self.rollout_indices(role)]
            out[role] = {
                "queries": len(self.indices(role)),
                "rollouts": len(rows),
                "accuracy": round(sum(r.correct for r in rows) / len(rows), 4) if rows else None,
            }
        return out

    def save(self, folder: str | Path, info: dict[str, Any] | None = None) -> None:
        """Write the memory; `done.json` (with `info` and the summary) last."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE).unlink(missing_ok=True)
        atomic_write_jsonl(folder / QUERIES, [dataclasses.asdict(q) for q in self.queries])
        atomic_write_jsonl(folder / ROLLOUTS, [dataclasses.asdict(r) for r in self.rollouts])
        atomic_write_json(folder / DONE, {"summary": self.summary(), **(info or {})})

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / DONE).is_file()

    @classmethod
    def load(cls, folder: str | Path) -> ExperienceMemory:
        folder = Path(folder)
        if not cls.exists(folder):
            raise DataError(f"no complete experience memory in {folder} (run `memrl rollout` on the run directory)")
        queries = [MemoryQuery(**row) for row in _read(folder / QUERIES)]
        rollouts = [MemoryRollout(**row) for row in _read(folder / ROLLOUTS)]
        return cls(queries, rollouts)


def _read(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows
