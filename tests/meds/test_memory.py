"""The error memory on hand-made vectors: kNN assignment, refits, no same-step penalties, noise, cap, state."""

from __future__ import annotations

import numpy as np
import pytest

from memrl.meds.memory import ErrorMemory, hdbscan_labels, knn_vote

EAST = np.array([[1.0, 0.01], [1.0, 0.02], [1.0, 0.03]], dtype=np.float32)
NORTH = np.array([[0.01, 1.0], [0.02, 1.0], [0.03, 1.0], [0.04, 1.0]], dtype=np.float32)


def test_knn_vote_majority_cosine_and_ties():
    stored = np.array([[1, 0], [2, 0.1], [0, 1], [0, 3]], dtype=np.float32)
    labels = np.array([5, 5, 7, 7])
    # cosine ignores the norm: (10, 0) is next to both east vectors
    assert knn_vote(stored, labels, np.array([[10, 0], [0, 0.1]], dtype=np.float32), k=2).tolist() == [5, 7]
    # three different labels among three neighbours: the smallest wins (scikit-learn's rule), noise included
    three = np.array([[1, 0], [1, 0.1], [1, 0.2]], dtype=np.float32)
    assert knn_vote(three, np.array([0, 1, -1]), np.array([[1, 0.1]], dtype=np.float32), k=3).tolist() == [-1]
    # k larger than the memory uses what there is
    assert knn_vote(stored[:1], labels[:1], stored[2:3], k=3).tolist() == [5]


def test_hdbscan_finds_the_two_directions():
    labels = hdbscan_labels(np.concatenate([EAST, NORTH]))
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1
    assert labels[0] != labels[3] and labels[0] >= 0 and labels[3] >= 0
    assert hdbscan_labels(EAST[:1]).tolist() == [-1]  # fewer than 2 vectors: noise


def test_step_assigns_against_the_past_then_stores():
    mem = ErrorMemory()
    key = ("q1", 0)
    # first visit: nothing stored, no penalty even for identical vectors of the same step
    sizes = mem.step([(key, np.concatenate([EAST, NORTH]))])
    assert sizes[0].tolist() == [0] * 7
    assert len(mem) == 7 and mem.cluster_counts(key) == (2, 0)
    # next step: an east vector falls into the 3-vector cluster, a north one into the 4-vector cluster
    sizes = mem.step([(key, np.array([[1.0, 0.015], [0.02, 1.5]], dtype=np.float32))])
    assert sizes[0].tolist() == [3, 4]
    assert len(mem) == 9  # then both were stored and the memory refitted
    assert mem.cluster_counts(key)[0] == 2
    assert sum(mem.entries[key].labels == mem.entries[key].labels[0]) == 4
    # another key, and the correct memory of the same prompt, are separate
    assert mem.step([(("q2", 0), EAST), (("q1", 1), EAST)])[0].tolist() == [0, 0, 0]


def test_same_step_vectors_never_see_each_other_even_across_entries():
    mem = ErrorMemory()
    key = ("q", 0)
    sizes = mem.step([(key, EAST[:2]), (key, EAST[2:])])  # one key twice in a step
    assert [s.tolist() for s in sizes] == [[0, 0], [0]]
    assert len(mem) == 3


def test_noise_vote_counts_noise_points_or_is_excluded():
    key = ("q", 0)
    counted = ErrorMemory()
    counted.step([(key, EAST[:1])])  # one vector: a noise point
    assert counted.cluster_sizes(key, EAST[1:2]).tolist() == [1]  # the released code: the noise count
    excluded = ErrorMemory(noise="exclude")
    excluded.step([(key, EAST[:1])])
    assert excluded.cluster_sizes(key, EAST[1:2]).tolist() == [0]
    with pytest.raises(ValueError, match="count, exclude"):
        ErrorMemory(noise="maybe")


def test_single_cluster_ablation_counts_the_history():
    mem = ErrorMemory(method="single")
    key = ("q", 0)
    mem.step([(key, np.concatenate([EAST, NORTH]))])
    assert mem.step([(key, NORTH[:2])])[0].tolist() == [7, 7]
    assert mem.cluster_counts(key) == (1, 0)


def test_cap_keeps_the_newest_and_state_round_trips():
    mem = ErrorMemory(max_per_key=4)
    key = ("q", 0)
    mem.step([(key, EAST)])
    mem.step([(key, NORTH)])
    assert len(mem) == 4
    np.testing.assert_array_equal(mem.entries[key].vectors, NORTH)
    restored = ErrorMemory(max_per_key=4)
    restored.load_state_dict(mem.state_dict())
    np.testing.assert_array_equal(restored.entries[key].vectors, mem.entries[key].vectors)
    np.testing.assert_array_equal(restored.entries[key].labels, mem.entries[key].labels)
    probe = np.array([[0.05, 1.0]], dtype=np.float32)
    assert restored.cluster_sizes(key, probe).tolist() == mem.cluster_sizes(key, probe).tolist() == [4]


def test_count_visits_gives_the_number_of_distinct_steps():
    """One key, one cluster (method single): 3 vectors at step 0, 2 at step 1, none at step 2 (another key),
    4 at step 3. A probe then falls into a cluster of 9 stored vectors from 3 distinct visits."""
    key = ("q", 0)
    for count, expected in [("cluster", 9), ("visits", 3)]:
        mem = ErrorMemory(method="single", count=count)
        mem.step([(key, EAST)])
        mem.step([(key, NORTH[:2])])
        mem.step([(("other", 0), EAST)])
        mem.step([(key, NORTH)])
        assert mem.cluster_sizes(key, EAST[:1]).tolist() == [expected]
        assert mem.entries[key].visits.tolist() == [0, 0, 0, 1, 1, 3, 3, 3, 3]
    # HDBSCAN: the three east vectors of one visit are one cluster of 3 vectors but of a single visit
    mem = ErrorMemory(count="visits")
    mem.step([(key, np.concatenate([EAST, NORTH]))])
    mem.step([(key, NORTH[:1])])
    assert mem.cluster_sizes(key, np.array([[1.0, 0.015], [0.02, 1.5]], dtype=np.float32)).tolist() == [1, 2]


def test_oracle_source_clusters_by_the_given_label():
    """The issue's example: one error made 5 times per visit over 4 visits is a cluster of 20 rollouts, or of 4
    visits; the vectors themselves play no part (all identical here), a label never seen is a cluster of 0 and
    an unlabelled vector is noise."""
    key = ("q", 0)
    same = np.ones((8, 2), dtype=np.float32)
    for count, expected in [("cluster", [20, 12, 0, 1]), ("visits", [4, 4, 0, 1])]:
        mem = ErrorMemory(source="oracle", count=count)
        for visit in range(4):
            labels = ["slip"] * 5 + ["skip"] * 3 if visit else ["slip"] * 5 + ["skip"] * 2 + [None]
            if visit == 3:
                labels = ["slip"] * 5 + ["skip"] * 3 + ["skip"]
            mem.step([(key, np.ones((len(labels), 2), dtype=np.float32))], [labels])
        assert mem.cluster_sizes(key, same[:4], ["slip", "skip", "guess", None]).tolist() == expected
        # noise=exclude: an unlabelled vector joins no cluster
        mem.noise = "exclude"
        assert mem.cluster_sizes(key, same[:1], [None]).tolist() == [0]
        restored = ErrorMemory(source="oracle", count=count)
        restored.load_state_dict(mem.state_dict())
        assert restored.visits == 4 and restored.codes == mem.codes
        assert restored.cluster_sizes(key, same[:2], ["slip", "skip"]).tolist() == expected[:2]
    with pytest.raises(ValueError, match="exactly when source='oracle'"):
        ErrorMemory(source="oracle").step([(key, same)])
    with pytest.raises(ValueError, match="exactly when source='oracle'"):
        ErrorMemory().step([(key, same)], [["slip"] * 8])
    with pytest.raises(ValueError, match="cluster, visits"):
        ErrorMemory(count="often")
