"""The error memory of MEDS: past feature vectors per (prompt, correctness), clustered with HDBSCAN.

Per step and memory key (docs/methods.md#error-memory-and-clustering):

1. each new vector is assigned a cluster by a k-nearest-neighbour vote (cosine distance, brute force)
   over the stored vectors and their labels from the last refit; its cluster size is the number of stored
   vectors with that label (0 when the memory is empty);
2. the step's vectors are appended and HDBSCAN is refitted on the whole memory of the key
   (min_cluster_size 2, min_samples 1, euclidean on L2-normalised vectors; fewer than 2 vectors: noise).

All of a step's assignments are made before any of its vectors is stored, so rollouts of the same step
never penalise each other and a prompt's first visit costs nothing.

Noise: when the vote says -1 (HDBSCAN's noise), the released code counts the stored noise points as the
cluster (`noise="count"`, the default); `noise="exclude"` votes among non-noise neighbours only (a
variant commented out in that code), and a vector with no such neighbour gets size 0.
`method="single"` is the released code's count-only ablation: one cluster per key.

Beyond the paper (issue 21), each default the paper's:

- `source="oracle"` (a DIAGNOSTIC control, not a method): the cluster of a vector is a label given with it
  (the task's true strategy of the rollout, `memrl.rewards.meds.oracle_labeller`) instead of HDBSCAN's; a
  vector given no label (None) is noise. If this arm shows no gain, no clustering of the features can.
- `count="visits"`: a cluster's size is the number of distinct memory steps (visits of the key) in which
  its stored vectors were added, instead of the number of vectors. HDBSCAN on near-duplicate completions
  of one visit makes a cluster of the duplicates; counting visits makes the penalty measure recurrence over
  time, which MEDS' argument assumes.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLUSTER_METHODS = ("hdbscan", "single")
NOISE_MODES = ("count", "exclude")
CLUSTER_SOURCES = ("hdbscan", "oracle")
COUNT_MODES = ("cluster", "visits")


def knn_vote(stored: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Majority label of each query's k nearest stored vectors by cosine distance.

    Ties go to the smallest label, as scikit-learn's `KNeighborsClassifier` (uniform weights) breaks them.

    Args:
        stored: [N, D] vectors; labels: [N] ints.
        queries: [M, D].
        k: neighbours (at most N are used).

    Returns:
        [M] int labels.
    """

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    dist = 1.0 - unit(queries) @ unit(stored).T  # [M, N]
    k = min(int(k), len(stored))
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out = np.empty(len(queries), dtype=np.int64)
    for i, idx in enumerate(nearest):
        values, counts = np.unique(labels[idx], return_counts=True)  # sorted: argmax takes the smallest tie
        out[i] = values[np.argmax(counts)]
    return out


def hdbscan_labels(vectors: np.ndarray, min_cluster_size: int = 2, min_samples: int = 1) -> np.ndarray:
    """HDBSCAN labels (-1: noise) of L2-normalised `vectors` [N, D], euclidean; all noise below 2 vectors."""
    if len(vectors) < max(2, min_cluster_size):
        return np.full(len(vectors), -1, dtype=np.int64)
    import hdbscan

    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = hdbscan.HDBSCAN(
            min_cluster_size=int(min_cluster_size), min_samples=int(min_samples), metric="euclidean"
        ).fit_predict(x.astype(np.float64))
    return np.asarray(labels, dtype=np.int64)


@dataclass
class _Entry:
    vectors: np.ndarray  # [N, D] float32, oldest first
    labels: np.ndarray  # [N] labels of the last refit (source="oracle": the given labels' codes, -1 for none)
    visits: np.ndarray  # [N] the memory step in which each vector was added


@dataclass
class ErrorMemory:
    """Feature vectors per memory key with their cluster labels.

    Args:
        k: neighbours of the assignment vote.
        method: hdbscan | single (one cluster per key).
        min_cluster_size / min_samples: HDBSCAN's.
        noise: count | exclude (see the module docstring).
        max_per_key: keep the newest this many vectors per key (None: unbounded, the paper).
        source: hdbscan (clusters from the features, by `method`) | oracle (DIAGNOSTIC: labels given with the
            vectors; see the module docstring).
        count: cluster (a cluster's size is its number of vectors, the paper) | visits (its number of
            distinct visits).
    """

    k: int = 3
    method: str = "hdbscan"
    min_cluster_size: int = 2
    min_samples: int = 1
    noise: str = "count"
    max_per_key: int | None = None
    source: str = "hdbscan"
    count: str = "cluster"
    entries: dict[Hashable, _Entry] = field(default_factory=dict)
    # source="oracle": the code of each given label (codes are shared by all keys; None is noise, -1)
    codes: dict[str, int] = field(default_factory=dict)
    # memory steps so far (the visit number the next step's vectors are stored with)
    visits: int = 0

    def __post_init__(self) -> None:
        for name, value, valid in [
            ("cluster method", self.method, CLUSTER_METHODS),
            ("noise mode", self.noise, NOISE_MODES),
            ("cluster source", self.source, CLUSTER_SOURCES),
            ("count mode", self.count, COUNT_MODES),
        ]:
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")

    def encode(self, given: Sequence[str | None]) -> np.ndarray:
        """[M] codes of given labels (source="oracle"): a new label gets the next code, None is -1 (noise)."""
        for name in given:
            if name is not None and name not in self.codes:
                self.codes[name] = len(self.codes)
        return np.array([-1 if n is None else self.codes[n] for n in given], dtype=np.int64)

    def _check_given(self, vectors: np.ndarray, given: Sequence[str | None] | None) -> None:
        if (given is None) != (self.source != "oracle"):
            raise ValueError("labels are given with the vectors exactly when source='oracle'")
        if given is not None and len(given) != len(vectors):
            raise ValueError(f"{len(given)} labels given for {len(vectors)} vectors")

    def cluster_sizes(
        self, key: Hashable, vectors: np.ndarray, given: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """[M] sizes of the stored clusters the new `vectors` [M, D] fall into (the memory is not changed).

        Args:
            given: source="oracle" only: each vector's label (its cluster is the stored one of that label).
        """
        self._check_given(vectors, given)
        entry = self.entries.get(key)
        if entry is None or len(entry.vectors) == 0 or len(vectors) == 0:
            return np.zeros(len(vectors), dtype=np.int64)
        if given is not None:
            votes = self.encode(given)
        else:
            stored, labels = entry.vectors, entry.labels
            if self.noise == "exclude":
                keep = labels >= 0
                if not keep.any():
                    return np.zeros(len(vectors), dtype=np.int64)
                stored, labels = stored[keep], labels[keep]
            votes = knn_vote(stored, labels, np.asarray(vectors, dtype=np.float32), self.k)
        size = {int(v): self._size(entry, int(v)) for v in set(votes.tolist())}
        if self.noise == "exclude":
            size[-1] = 0  # an oracle vector without a label: no cluster to join
        return np.array([size[int(v)] for v in votes], dtype=np.int64)

    def _size(self, entry: _Entry, label: int) -> int:
        """The stored cluster `label`'s size: its vectors (count="cluster") or its distinct visits ("visits")."""
        members = entry.labels == label
        if self.count == "visits":
            return len(np.unique(entry.visits[members]))
        return int(members.sum())

    def add(self, key: Hashable, vectors: np.ndarray, given: Sequence[str | None] | None = None) -> None:
        """Append `vectors` [M, D] to the key's memory (dropping the oldest beyond the cap) and refit.

        Args:
            given: source="oracle" only: each vector's label, stored as its cluster (no refit).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        self._check_given(vectors, given)
        if len(vectors) == 0:
            return
        entry = self.entries.get(key)
        visits = np.full(len(vectors), self.visits, dtype=np.int64)
        stored = vectors if entry is None else np.concatenate([entry.vectors, vectors])
        visits = visits if entry is None else np.concatenate([entry.visits, visits])
        codes = None
        if given is not None:
            codes = self.encode(given)
            codes = codes if entry is None else np.concatenate([entry.labels, codes])
        if self.max_per_key is not None and len(stored) > self.max_per_key:
            cut = len(stored) - self.max_per_key
            stored, visits = stored[cut:], visits[cut:]
            codes = None if codes is None else codes[cut:]
        if codes is not None:
            labels = codes
        elif self.method == "single":
            labels = np.zeros(len(stored), dtype=np.int64)
        else:
            labels = hdbscan_labels(stored, self.min_cluster_size, self.min_samples)
        self.entries[key] = _Entry(stored, labels, visits)

    def step(
        self, batch: Sequence[tuple[Hashable, np.ndarray]], given: Sequence[Sequence[str | None]] | None = None
    ) -> list[np.ndarray]:
        """One training step (one visit): every (key, vectors) pair is assigned first, then all are stored and
        refitted.

        Args:
            given: source="oracle" only: per pair, its vectors' labels.

        Returns:
            Per pair, the [M] cluster sizes of its vectors against the memory as it was before the step.
        """
        labels = list(given) if given is not None else [None] * len(batch)
        sizes = [self.cluster_sizes(key, vecs, lab) for (key, vecs), lab in zip(batch, labels)]
        merged: dict[Hashable, list[np.ndarray]] = {}
        merged_labels: dict[Hashable, list] = {}
        for (key, vecs), lab in zip(batch, labels):
            merged.setdefault(key, []).append(np.asarray(vecs, dtype=np.float32))
            merged_labels.setdefault(key, []).extend(lab if lab is not None else [])
        for key, parts in merged.items():
            self.add(key, np.concatenate(parts), merged_labels[key] if given is not None else None)
        self.visits += 1
        return sizes

    def cluster_counts(self, key: Hashable) -> tuple[int, int]:
        """(clusters, noise points) of a key's memory after its last refit."""
        entry = self.entries.get(key)
        if entry is None:
            return 0, 0
        return len(set(entry.labels[entry.labels >= 0].tolist())), int((entry.labels < 0).sum())

    def __len__(self) -> int:
        return sum(len(e.vectors) for e in self.entries.values())

    def state_dict(self) -> dict[str, Any]:
        keys = list(self.entries)
        return {
            "keys": keys,
            "vectors": [self.entries[k].vectors for k in keys],
            "labels": [self.entries[k].labels for k in keys],
            "visit_of": [self.entries[k].visits for k in keys],
            "visits": self.visits,
            "codes": dict(self.codes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # a checkpoint from before visits were kept: every stored vector counts as a visit of its own
        visit_of = state.get("visit_of") or [np.arange(-len(v), 0) for v in state["vectors"]]
        self.entries = {
            (tuple(k) if isinstance(k, list) else k): _Entry(
                np.asarray(v, dtype=np.float32), np.asarray(lab), np.asarray(vis, dtype=np.int64)
            )
            for k, v, lab, vis in zip(state["keys"], state["vectors"], state["labels"], visit_of)
        }
        self.visits = int(state.get("visits", 0))
        self.codes = dict(state.get("codes", {}))
