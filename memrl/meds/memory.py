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
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLUSTER_METHODS = ("hdbscan", "single")
NOISE_MODES = ("count", "exclude")


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
    labels: np.ndarray  # [N] labels of the last refit


@dataclass
class ErrorMemory:
    """Feature vectors per memory key with their cluster labels.

    Args:
        k: neighbours of the assignment vote.
        method: hdbscan | single (one cluster per key).
        min_cluster_size / min_samples: HDBSCAN's.
        noise: count | exclude (see the module docstring).
        max_per_key: keep the newest this many vectors per key (None: unbounded, the paper).
    """

    k: int = 3
    method: str = "hdbscan"
    min_cluster_size: int = 2
    min_samples: int = 1
    noise: str = "count"
    max_per_key: int | None = None
    entries: dict[Hashable, _Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in CLUSTER_METHODS:
            raise ValueError(f"unknown cluster method {self.method!r}; valid: {', '.join(CLUSTER_METHODS)}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {self.noise!r}; valid: {', '.join(NOISE_MODES)}")

    def cluster_sizes(self, key: Hashable, vectors: np.ndarray) -> np.ndarray:
        """[M] sizes of the stored clusters the new `vectors` [M, D] fall into (the memory is not changed)."""
        entry = self.entries.get(key)
        if entry is None or len(entry.vectors) == 0 or len(vectors) == 0:
            return np.zeros(len(vectors), dtype=np.int64)
        stored, labels = entry.vectors, entry.labels
        if self.noise == "exclude":
            keep = labels >= 0
            if not keep.any():
                return np.zeros(len(vectors), dtype=np.int64)
            stored, labels = stored[keep], labels[keep]
        votes = knn_vote(stored, labels, np.asarray(vectors, dtype=np.float32), self.k)
        counts = {int(v): int(c) for v, c in zip(*np.unique(entry.labels, return_counts=True))}
        return np.array([counts.get(int(v), 0) for v in votes], dtype=np.int64)

    def add(self, key: Hashable, vectors: np.ndarray) -> None:
        """Append `vectors` [M, D] to the key's memory (dropping the oldest beyond the cap) and refit."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(vectors) == 0:
            return
        entry = self.entries.get(key)
        stored = vectors if entry is None else np.concatenate([entry.vectors, vectors])
        if self.max_per_key is not None and len(stored) > self.max_per_key:
            stored = stored[len(stored) - self.max_per_key :]
        if self.method == "single":
            labels = np.zeros(len(stored), dtype=np.int64)
        else:
            labels = hdbscan_labels(stored, self.min_cluster_size, self.min_samples)
        self.entries[key] = _Entry(stored, labels)

    def step(self, batch: Sequence[tuple[Hashable, np.ndarray]]) -> list[np.ndarray]:
        """One training step: every (key, vectors) pair is assigned first, then all are stored and refitted.

        Returns:
            Per pair, the [M] cluster sizes of its vectors against the memory as it was before the step.
        """
        sizes = [self.cluster_sizes(key, vecs) for key, vecs in batch]
        merged: dict[Hashable, list[np.ndarray]] = {}
        for key, vecs in batch:
            merged.setdefault(key, []).append(np.asarray(vecs, dtype=np.float32))
        for key, parts in merged.items():
            self.add(key, np.concatenate(parts))
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = {
            (tuple(k) if isinstance(k, list) else k): _Entry(np.asarray(v, dtype=np.float32), np.asarray(lab))
            for k, v, lab in zip(state["keys"], state["vectors"], state["labels"])
        }
