"""The reward models on small random memory graphs: shapes, gradients, readout wiring, edge-type handling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from memrl.errors import UserError
from memrl.memreward.gnn import (
    DEFAULT_EDGE_TYPES,
    GENERATES_ANSWER,
    MODEL_KINDS,
    FeatureMLP,
    HomogeneousGNN,
    NoThinkGNN,
    RewardGNN,
    build_model,
    dot_score,
)
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
    build_graph,
)

D, FEAT, HIDDEN, HEADS = 16, 3, 16, 2
Q, N = 5, 4  # 5 queries x 4 rollouts
R = Q * N
LABELLED = [True, True, True, False, False]


def make_inputs(seed: int = 0) -> GraphInputs:
    g = torch.Generator().manual_seed(seed)
    return GraphInputs(
        query_emb=torch.randn(Q, D, generator=g),
        think_emb=torch.randn(R, D, generator=g),
        answer_emb=torch.randn(R, D, generator=g),
        answer_feat=torch.rand(R, FEAT, generator=g),
        rollout_query=torch.arange(Q).repeat_interleave(N),
        query_labelled=torch.tensor(LABELLED),
    )


def make_model(kind: str, edge_types=None, dropout: float = 0.1, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(kind, D, FEAT, HIDDEN, HEADS, 2, dropout, edge_types)


@pytest.fixture
def graph():
    return build_graph(make_inputs(), k=2)


@pytest.fixture
def graph_tt():
    return build_graph(make_inputs(), k=2, think_k=2)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_one_logit_per_answer_node(graph, kind):
    out = make_model(kind)(graph)
    assert out.shape == (R,) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_build_model_kinds_and_errors():
    assert type(make_model("gnn")) is RewardGNN
    assert type(make_model("homogeneous")) is HomogeneousGNN
    assert type(make_model("no_think")) is NoThinkGNN
    assert type(make_model("mlp")) is FeatureMLP
    with pytest.raises(UserError, match="unknown reward model kind 'gcn'; valid: gnn, homogeneous, no_think, mlp"):
        build_model("gcn", D, FEAT, HIDDEN, HEADS, 2, 0.1)
    with pytest.raises(UserError, match="multiple of the number of attention heads"):
        build_model("gnn", D, FEAT, 30, 4, 2, 0.1)
    with pytest.raises(UserError, match="unknown edge types"):
        build_model("gnn", D, FEAT, HIDDEN, HEADS, 2, 0.1, edge_types=[(QUERY, "likes", ANSWER)])


def test_released_architecture_sizes():
    model = RewardGNN()  # the defaults are the released model's
    assert model.edge_types == list(DEFAULT_EDGE_TYPES) and COMPETES_WITH not in model.edge_types
    for t in (QUERY, THINK, ANSWER):
        assert model.input_proj[t].weight.shape == (512, 384)
    assert model.answer_feat_proj[0].weight.shape == (64, 3) and model.answer_feat_proj[2].weight.shape == (512, 64)
    assert len(model.convs) == 2
    for et in DEFAULT_EDGE_TYPES:
        conv = model.convs[0].convs[et]
        assert (conv.heads, conv.out_channels, conv.concat) == (4, 128, True)
        assert conv.dropout == 0.1
        assert conv.add_self_loops == (et == SIMILAR_TO)  # the only same-type edge by default
    assert model.readout.query_proj.weight.shape == (256, 512)
    assert model.readout.rollout_proj.weight.shape == (256, 1536)
    assert model.readout.bias.shape == ()
    assert RewardGNN(edge_types=EDGE_TYPES).convs[0].convs[COMPETES_WITH].add_self_loops


def test_readout_formula_by_hand(graph):
    model = make_model("gnn").eval()
    with torch.no_grad():
        model.readout.bias.fill_(0.25)
        h = model.encode(graph)
        rq = graph[ANSWER].query
        ro = model.readout
        q = F.layer_norm(h[QUERY][rq] @ ro.query_proj.weight.T + ro.query_proj.bias, (256,))
        feat = model.answer_feat_proj(graph[ANSWER].feat)
        cat = torch.cat([h[THINK], h[ANSWER], feat], dim=1)
        r = F.layer_norm(cat @ ro.rollout_proj.weight.T + ro.rollout_proj.bias, (256,))
        expected = (q * r).sum(1) / 16 + 0.25  # sqrt(256) = 16; fresh LayerNorms are the identity affine
        torch.testing.assert_close(model(graph), expected)


def test_dot_score():
    q = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    r = torch.tensor([[3.0, 1.0, 5.0, 0.0], [1.0, 1.0, -2.0, 4.0]])
    out = dot_score(q, r, torch.tensor(-1.0))
    assert out.tolist() == [5 / 2 - 1, 2 / 2 - 1]  # dots 5 and 2, sqrt(4) = 2


# GATv2 on an edge type where every target has exactly one source (query -> its thinks, think <-> its
# answer) has a softmax over one edge: attention is 1 whatever `att` and the target projection `lin_r` are,
# so those get zero gradients (in the released model too). Everything else must learn.
# The no-think model's query -> answer edges are the same kind of edge.
ONE_SOURCE_TYPES = {GENERATES_REASONING, LEADS_TO, REV_LEADS_TO, GENERATES_ANSWER}


def _dead_in_one_source_convs(name: str) -> bool:
    return any(f"<{'___'.join(et)}>" in name for et in ONE_SOURCE_TYPES) and (".att" in name or ".lin_r." in name)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_gradients_reach_every_parameter(graph_tt, kind):
    model = make_model(kind, edge_types=EDGE_TYPES if kind == "gnn" else None)
    y = (torch.arange(R) % 3 == 0).float()
    F.binary_cross_entropy_with_logits(model(graph_tt), y).backward()
    names = [name for name, _ in model.named_parameters()]
    assert len(names) > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if kind in ("gnn", "no_think") and _dead_in_one_source_convs(name):
            assert p.grad.abs().sum() == 0, name
        else:
            assert p.grad.abs().sum() > 0, name
    if kind == "gnn":  # every edge type, COMPETES_WITH included, has live convolutions
        for et in EDGE_TYPES:
            assert any(f"<{'___'.join(et)}>.lin_l.weight" in n for n in names)


def test_node_type_without_incoming_edges_keeps_its_representation(graph):
    # nothing reaches answer nodes without LEADS_TO, nor think nodes without the two edge types into them
    model = make_model("gnn", edge_types=[REV_GENERATES_REASONING, SIMILAR_TO, REV_LEADS_TO]).eval()
    with torch.no_grad():
        h = model.encode(graph)
        torch.testing.assert_close(h[ANSWER], model.input_proj[ANSWER](graph[ANSWER].x))
        assert not torch.allclose(h[THINK], model.input_proj[THINK](graph[THINK].x))  # think gets REV_LEADS_TO
        assert model(graph).shape == (R,)
    model = make_model("gnn", edge_types=[SIMILAR_TO]).eval()
    with torch.no_grad():
        h = model.encode(graph)
        for t in (THINK, ANSWER):
            torch.testing.assert_close(h[t], model.input_proj[t](graph[t].x))


def test_competes_with_is_used_only_when_both_model_and_graph_have_it(graph, graph_tt):
    assert COMPETES_WITH not in graph.edge_types and COMPETES_WITH in graph_tt.edge_types
    with_tt = make_model("gnn", edge_types=EDGE_TYPES).eval()
    without_tt = make_model("gnn").eval()
    with torch.no_grad():
        # a model built with it runs on a graph without it, and the edges change its output when present
        a, b = with_tt(graph), with_tt(graph_tt)
        assert a.shape == b.shape == (R,)
        assert not torch.allclose(a, b)
        # a model built without it ignores it
        torch.testing.assert_close(without_tt(graph_tt), without_tt(graph))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_readout_reads_each_rollouts_own_query(kind):
    """Reordering the query nodes (and remapping answer.query) must not change any rollout's logit."""
    inputs = make_inputs()
    perm = torch.tensor([3, 0, 4, 2, 1])  # new query i is old query perm[i]
    inverse = torch.argsort(perm)
    permuted = GraphInputs(
        inputs.query_emb[perm],
        inputs.think_emb,
        inputs.answer_emb,
        inputs.answer_feat,
        inverse[inputs.rollout_query],
        inputs.query_labelled[perm],
    )
    model = make_model(kind, edge_types=EDGE_TYPES if kind == "gnn" else None).eval()
    with torch.no_grad():
        base = model(build_graph(inputs, k=2, think_k=2))
        torch.testing.assert_close(model(build_graph(permuted, k=2, think_k=2)), base, atol=1e-5, rtol=1e-5)


def test_pointing_a_rollout_at_another_query_changes_only_its_logit(graph):
    # in RewardGNN answer.query is read by the readout alone: only rollout 0's score can move
    model = make_model("gnn").eval()
    with torch.no_grad():
        base = model(graph)
        graph[ANSWER].query = graph[ANSWER].query.clone()
        graph[ANSWER].query[0] = 4
        moved = model(graph)
    assert not torch.isclose(moved[0], base[0])
    torch.testing.assert_close(moved[1:], base[1:])


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_eval_mode_is_deterministic_and_train_mode_drops_out(graph, kind):
    model = make_model(kind, dropout=0.5)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(graph), model(graph))
    model.train()
    torch.manual_seed(1)
    first = model(graph)
    second = model(graph)
    assert not torch.allclose(first, second)
    # the same seed gives the same dropout: seeded training is repeatable
    torch.manual_seed(1)
    assert torch.equal(model(graph), first)


def test_homogeneous_model_sees_every_edge_type(graph, graph_tt):
    model = make_model("homogeneous").eval()
    with torch.no_grad():
        assert not torch.allclose(model(graph), model(graph_tt))  # the think-think edges join the one edge set


def test_feature_mlp_is_a_function_of_each_rollouts_own_inputs(graph):
    model = make_model("mlp").eval()
    with torch.no_grad():
        base = model(graph)
        graph[THINK].x = graph[THINK].x.clone()
        graph[THINK].x[7] += 1.0
        moved = model(graph)
    changed = (~torch.isclose(moved, base)).nonzero().view(-1).tolist()
    assert changed == [7]  # no message passing: nothing else moves
    assert math.isfinite(float(moved[7]))


def test_no_think_model_ignores_think_nodes(graph, graph_tt):
    model = make_model("no_think").eval()
    assert model.readout.rollout_proj.weight.shape == (256, 2 * HIDDEN)  # [h_answer; feat], no think part
    with torch.no_grad():
        base = model(graph)
        graph[THINK].x = torch.randn_like(graph[THINK].x)
        torch.testing.assert_close(model(graph), base)
        torch.testing.assert_close(model(graph_tt), base)  # think-think edges are not read either


def test_no_think_model_passes_messages_through_the_queries_alone(graph):
    """A rollout's answer reaches its own query's rollouts (answer -> query -> answer) and, through the readout
    of the layer-2 query state, the rollouts of the queries that aggregate from its query; nothing else."""
    model = make_model("no_think").eval()
    with torch.no_grad():
        base = model(graph)
        graph[ANSWER].x = graph[ANSWER].x.clone()
        graph[ANSWER].x[7] += 1.0  # rollout 7 belongs to query 1 (rollouts 4..7)
        moved = model(graph)
    src, dst = graph[SIMILAR_TO].edge_index
    readers = {1} | set(dst[src == 1].tolist())
    assert readers == {0, 1, 2, 3}  # query 4's neighbours are 0 and 2 (the fixture's kNN)
    expected = [r for r in range(R) if r // N in readers]
    changed = (~torch.isclose(moved, base)).nonzero().view(-1).tolist()
    assert changed == expected
