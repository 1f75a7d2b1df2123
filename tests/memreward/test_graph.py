"""The heterogeneous memory graph on a hand-made memory whose kNN answers are known.

Query embeddings are unit vectors in the plane of the first two axes of R^384, so the cosine of two
queries is cos(angle difference) and the nearest neighbours are the nearest angles. The memory:

| index | 0  | 1  | 2  | 3  | 4  | 5  |
|-------|----|----|----|----|----|----|
| angle | 0  | 30 | 20 | 50 | 80 | 95 |
| role  | L0 | U0 | L1 | L2 | U1 | L3 |      (L = labelled, U = unlabelled)

Angle gaps to the labelled queries, nearest first:
  L0(0):  L1 20, L2 50, L3 95            L1(20): L0 20 (vs L2 30), L2 30, L3 75
  L2(50): L1 30, L3 45, L0 50            L3(95): L2 45, L1 75, L0 95
  U0(30): L1 10, L2 20, L0 30, L3 65     U1(80): L3 15, L2 30, L1 60, L0 80
Unlabelled queries would often be nearer (U0 is 20 from L2, U1 is 15 from L3) but are never neighbours.
"""

from __future__ import annotations

import math

import pytest
import torch

from memrl.errors import UserError
from memrl.memreward.graph import (
    ANSWER,
    COMPETES_WITH,
    EDGE_TYPES,
    GENERATES_REASONING,
    LEADS_TO,
    QUERY,
    REV_GENERATES_REASONING,
    REV_LEADS_TO,
    SIMILAR_TO,
    THINK,
    GraphInputs,
    MemoryGraph,
    attach,
    build_graph,
    concat_inputs,
    group_knn,
    to_homogeneous_graph,
)

D = 384
ANGLES = [0, 30, 20, 50, 80, 95]
LABELLED = [True, False, True, True, False, True]
L0, U0, L1, L2, U1, L3 = range(6)


def plane(deg: float, axis: int = 0) -> torch.Tensor:
    """A unit vector at `deg` degrees in the plane of axes (axis, axis + 1)."""
    v = torch.zeros(D)
    v[axis], v[axis + 1] = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return v


def make_inputs(angles, labelled, rollout_query, think_angles=None, seed=0, labels=True) -> GraphInputs:
    g = torch.Generator().manual_seed(seed)
    r = len(rollout_query)
    think_angles = think_angles if think_angles is not None else [7 * i for i in range(r)]
    rollout_query = torch.tensor(rollout_query, dtype=torch.long)
    query_labelled = torch.tensor(labelled)
    label = None
    if labels:
        label = torch.where(query_labelled[rollout_query], (torch.arange(r) % 2).float(), torch.tensor(float("nan")))
    return GraphInputs(
        query_emb=torch.stack([plane(a) for a in angles]),
        think_emb=torch.stack([plane(a, axis=2) for a in think_angles]),
        answer_emb=torch.nn.functional.normalize(torch.randn(r, D, generator=g), dim=-1),
        answer_feat=torch.rand(r, 3, generator=g),
        rollout_query=rollout_query,
        query_labelled=query_labelled,
        rollout_label=label,
    )


# two rollouts per query, interleaved: rollout r belongs to query r % 6
ROLLOUT_QUERY = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]


@pytest.fixture
def memory() -> GraphInputs:
    return make_inputs(ANGLES, LABELLED, ROLLOUT_QUERY)


def pairs(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(s), int(t)) for s, t in edge_index.T}


# (query, neighbour) for k = 2, read off the table in the module docstring
KNN2 = {
    (L0, L1), (L0, L2),
    (L1, L0), (L1, L2),
    (L2, L1), (L2, L3),
    (L3, L2), (L3, L1),
    (U0, L1), (U0, L2),
    (U1, L3), (U1, L2),
}  # fmt: skip


def test_node_stores(memory):
    data = build_graph(memory)
    assert data.node_types == [QUERY, THINK, ANSWER]
    assert torch.equal(data[QUERY].x, memory.query_emb)
    assert torch.equal(data[QUERY].labelled, memory.query_labelled)
    assert torch.equal(data[THINK].x, memory.think_emb)
    assert torch.equal(data[ANSWER].x, memory.answer_emb)
    assert torch.equal(data[ANSWER].feat, memory.answer_feat)
    assert torch.equal(data[ANSWER].query, memory.rollout_query)
    torch.testing.assert_close(data[ANSWER].y, memory.rollout_label, equal_nan=True)
    assert (data[QUERY].num_nodes, data[THINK].num_nodes, data[ANSWER].num_nodes) == (6, 12, 12)
    # no labels given: no y
    assert "y" not in build_graph(make_inputs(ANGLES, LABELLED, ROLLOUT_QUERY, labels=False))[ANSWER]


def test_structural_edges(memory):
    data = build_graph(memory)
    assert set(data.edge_types) == {GENERATES_REASONING, REV_GENERATES_REASONING, LEADS_TO, REV_LEADS_TO, SIMILAR_TO}
    expected = {(r % 6, r) for r in range(12)}  # query -> its rollouts' thinks
    assert pairs(data[GENERATES_REASONING].edge_index) == expected
    assert pairs(data[REV_GENERATES_REASONING].edge_index) == {(t, q) for q, t in expected}
    assert pairs(data[LEADS_TO].edge_index) == {(r, r) for r in range(12)}
    assert pairs(data[REV_LEADS_TO].edge_index) == {(r, r) for r in range(12)}
    for edge_type in data.edge_types:
        ei = data[edge_type].edge_index
        assert ei.dtype == torch.long and ei.dim() == 2 and ei.shape[0] == 2
    assert data[GENERATES_REASONING].edge_index.shape[1] == 12


def test_similar_to_memory_to_query(memory):
    ei = build_graph(memory, k=2)[SIMILAR_TO].edge_index
    assert ei.shape == (2, 12)
    # [neighbour (source), query (target)]: the query aggregates from its labelled neighbours
    assert pairs(ei) == {(n, q) for q, n in KNN2}
    assert not (ei[0] == ei[1]).any()
    assert set(ei[0].tolist()) <= {L0, L1, L2, L3}  # only labelled queries send


def test_similar_to_query_to_memory(memory):
    ei = build_graph(memory, k=2, direction="query_to_memory")[SIMILAR_TO].edge_index
    assert pairs(ei) == KNN2  # [query (source), neighbour (target)], the released code's direction
    assert set(ei[1].tolist()) <= {L0, L1, L2, L3}


def test_k_larger_than_the_labelled_count(memory):
    ei = build_graph(memory, k=7)[SIMILAR_TO].edge_index
    # a labelled query has 3 other labelled queries, an unlabelled one all 4: 4 * 3 + 2 * 4
    assert ei.shape == (2, 20)
    labelled = [L0, L1, L2, L3]
    expected = {(n, q) for q in labelled for n in labelled if n != q} | {(n, q) for q in (U0, U1) for n in labelled}
    assert pairs(ei) == expected


def test_k1_picks_the_single_nearest(memory):
    ei = build_graph(memory, k=1)[SIMILAR_TO].edge_index
    # L1's nearest labelled are L0 (20) and L2 (30): L0; L2 would pick U0 (20) if it were allowed
    assert pairs(ei) == {(L1, L0), (L0, L1), (L1, L2), (L2, L3), (L1, U0), (L3, U1)}


def test_no_labelled_queries_gives_no_similar_edges():
    inputs = make_inputs(ANGLES, [False] * 6, ROLLOUT_QUERY, labels=False)
    assert build_graph(inputs)[SIMILAR_TO].edge_index.shape == (2, 0)


def test_competes_with_only_when_think_k_is_positive(memory):
    assert COMPETES_WITH not in build_graph(memory, think_k=0).edge_types
    ei = build_graph(memory, think_k=2)[COMPETES_WITH].edge_index
    # two rollouts per query (r and r + 6): each think's only other think in its group
    assert pairs(ei) == {(r, (r + 6) % 12) for r in range(12)}


def test_group_knn_by_hand():
    # group 0: angles 0, 10, 40 (rows 0, 2, 4); group 1: rows 1, 3 at 0 and 90; group 2: row 5 alone
    unit = torch.stack([plane(a) for a in [0, 0, 10, 90, 40, 0]])
    group = torch.tensor([0, 1, 0, 1, 0, 2])
    member, neighbour = group_knn(unit, group, k=1)
    assert list(zip(member.tolist(), neighbour.tolist())) == [(0, 2), (2, 0), (4, 2), (1, 3), (3, 1)]
    member, neighbour = group_knn(unit, group, k=2)
    # most similar first: row 0 -> 2 (10 deg) then 4 (40); row 2 -> 0 (10) then 4 (30); row 4 -> 2 then 0
    expected = [(0, 2), (0, 4), (2, 0), (2, 4), (4, 2), (4, 0), (1, 3), (3, 1)]
    assert list(zip(member.tolist(), neighbour.tolist())) == expected


def test_options_are_checked(memory):
    with pytest.raises(UserError, match="unknown graph direction 'sideways'"):
        build_graph(memory, direction="sideways")
    with pytest.raises(UserError, match="k .* must be >= 0"):
        build_graph(memory, k=-1)
    with pytest.raises(UserError, match="think_k .* must be >= 0"):
        build_graph(memory, think_k=-1)
    with pytest.raises(ValueError, match="rollout_query must lie in 0..5"):
        bad = make_inputs(ANGLES, LABELLED, ROLLOUT_QUERY)
        bad.rollout_query[0] = 6
        build_graph(bad)


# new batch: query A at 45 deg (3 rollouts), query B at 97 deg (1 rollout)
# A: L2 5, L1 25, L0 45, L3 50 -> k=2: {L2, L1};  B: L3 2, L2 47, L1 77 -> k=2: {L3, L2}
NEW_ANGLES = [45, 97]
NEW_ROLLOUT_QUERY = [0, 1, 0, 0]


@pytest.fixture
def new() -> GraphInputs:
    return make_inputs(
        NEW_ANGLES, [False, False], NEW_ROLLOUT_QUERY, think_angles=[0, 50, 20, 90], seed=1, labels=False
    )


@pytest.mark.parametrize("direction", ["memory_to_query", "query_to_memory"])
@pytest.mark.parametrize("think_k", [0, 1])
def test_attach_equals_building_from_scratch(memory, new, direction, think_k):
    graph, answer_index = MemoryGraph(memory, k=2, direction=direction, think_k=think_k).attach(new)
    scratch = build_graph(concat_inputs(memory, new), k=2, direction=direction, think_k=think_k)
    assert set(graph.edge_types) == set(scratch.edge_types)
    for edge_type in graph.edge_types:
        assert torch.equal(graph[edge_type].edge_index, scratch[edge_type].edge_index), edge_type
    for node_type in graph.node_types:
        for key in scratch[node_type].keys():
            torch.testing.assert_close(graph[node_type][key], scratch[node_type][key], equal_nan=True)
    # the one-off helper gives the same graph
    once, index_once = attach(memory, new, k=2, direction=direction, think_k=think_k)
    assert torch.equal(index_once, answer_index)
    assert torch.equal(once[SIMILAR_TO].edge_index, graph[SIMILAR_TO].edge_index)


def test_attach_edges_and_answer_index(memory, new):
    mg = MemoryGraph(memory, k=2, think_k=1)
    graph, answer_index = mg.attach(new)
    a, b = 6, 7  # the new queries come after the 6 memory queries
    sim = graph[SIMILAR_TO].edge_index
    assert sim.shape == (2, 12 + 4)
    assert pairs(sim) == {(n, q) for q, n in KNN2} | {(L2, a), (L1, a), (L3, b), (L2, b)}
    assert sim.max() <= 7 and not (sim[0] >= 6).any()  # a new query is never a neighbour
    # the memory part is unchanged
    assert torch.equal(sim[:, :12], mg.graph()[SIMILAR_TO].edge_index)
    # new rollouts are answer nodes 12..15, attached to their own queries
    assert answer_index.tolist() == [12, 13, 14, 15]
    assert torch.equal(graph[ANSWER].x[answer_index], new.answer_emb)
    assert torch.equal(graph[ANSWER].feat[answer_index], new.answer_feat)
    assert graph[ANSWER].query[answer_index].tolist() == [a, b, a, a]
    assert pairs(graph[GENERATES_REASONING].edge_index) >= {(a, 12), (b, 13), (a, 14), (a, 15)}
    assert pairs(graph[LEADS_TO].edge_index) >= {(12, 12), (15, 15)}
    assert graph[QUERY].labelled.tolist() == LABELLED + [False, False]
    assert torch.isnan(graph[ANSWER].y[answer_index]).all()
    # think competition of the new group of three (angles 0, 20, 90 at rows 12, 14, 15): top-1 each
    tt = graph[COMPETES_WITH].edge_index
    assert pairs(tt[:, 12:]) == {(12, 14), (14, 12), (15, 14)}


def test_attach_refuses_labelled_new_queries(memory, new):
    new.query_labelled[0] = True
    with pytest.raises(ValueError, match="unlabelled"):
        MemoryGraph(memory).attach(new)


def test_to_homogeneous_graph(memory):
    data = build_graph(memory, k=2)
    x, edge_index, answer_index = to_homogeneous_graph(data)
    # 6 queries, then 12 thinks (rows 6..17), then 12 answers (rows 18..29)
    assert x.shape == (30, D)
    assert answer_index.tolist() == list(range(18, 30))
    assert torch.equal(x[answer_index], memory.answer_emb)
    assert torch.equal(x[6:18], memory.think_emb)
    # 4 x 12 structural + 12 similar_to
    assert edge_index.shape == (2, 60) and edge_index.dtype == torch.long
    edges = pairs(edge_index)
    assert {(r + 6, r + 18) for r in range(12)} <= edges  # think -> answer
    assert {(r + 18, r + 6) for r in range(12)} <= edges  # answer -> think
    assert {(r % 6, r + 6) for r in range(12)} <= edges  # query -> think
    assert {(n, q) for q, n in KNN2} <= edges  # query rows keep their indices
    assert edge_index.max() == 29


def test_edge_type_names():
    assert EDGE_TYPES == (
        ("query", "generates_reasoning", "think"),
        ("think", "rev_generates_reasoning", "query"),
        ("think", "leads_to", "answer"),
        ("answer", "rev_leads_to", "think"),
        ("query", "similar_to", "query"),
        ("think", "competes_with", "think"),
    )


def _random_inputs(n_queries, per_query, labelled, seed):
    g = torch.Generator().manual_seed(seed)
    r = n_queries * per_query
    norm = torch.nn.functional.normalize
    return GraphInputs(
        query_emb=norm(torch.randn(n_queries, D, generator=g), dim=-1),
        think_emb=norm(torch.randn(r, D, generator=g), dim=-1),
        answer_emb=norm(torch.randn(r, D, generator=g), dim=-1),
        answer_feat=torch.rand(r, 3, generator=g),
        rollout_query=torch.arange(n_queries).repeat_interleave(per_query),
        query_labelled=torch.full((n_queries,), labelled),
        rollout_label=(torch.rand(r, generator=g) > 0.5).float() if labelled else torch.full((r,), float("nan")),
    )


@pytest.mark.parametrize("kind", ["gnn", "homogeneous", "no_think", "mlp"])
@pytest.mark.parametrize("direction,think_k", [("memory_to_query", 0), ("query_to_memory", 2)])
def test_receptive_subgraph_scores_exactly_like_the_full_graph(kind, direction, think_k):
    from memrl.memreward.gnn import build_model
    from memrl.memreward.graph import COMPETES_WITH, receptive_subgraph

    memory, new = _random_inputs(30, 3, True, 0), _random_inputs(4, 3, False, 1)
    full, answer_index = MemoryGraph(memory, 3, direction, think_k).attach(new)
    torch.manual_seed(0)
    edge_types = [et for et in EDGE_TYPES if et != COMPETES_WITH or think_k]
    model = build_model(kind, D, 3, 16, 2, 2, 0.0, edge_types=edge_types).eval()
    sub, sub_index = receptive_subgraph(full, answer_index, hops=2 if kind != "mlp" else 0)
    assert sub[QUERY].num_nodes < full[QUERY].num_nodes and sub[THINK].num_nodes < full[THINK].num_nodes
    with torch.no_grad():
        torch.testing.assert_close(model(sub)[sub_index], model(full)[answer_index], rtol=1e-5, atol=1e-5)
    # the readout's query of every scored rollout is its own query
    torch.testing.assert_close(
        sub[QUERY].x[sub[ANSWER].query[sub_index]], full[QUERY].x[full[ANSWER].query[answer_index]]
    )
