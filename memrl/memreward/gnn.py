"""MemReward's reward models over the memory graph (docs/methods.md#reward-gnn), and two ablations.

Every model is called as `model(data) -> logits [R]`, one logit of "this rollout is correct" per `answer`
node of `data` (a graph from `graph.build_graph` / `graph.attach`), in node order:

- `RewardGNN`: the released `UnifiedGNNDotProduct`: per-type input projections, `layers` x HeteroConv of
  GATv2Conv (self-loops only on same-type edges), and a scaled dot-product readout of query against rollout;
- `HomogeneousGNN`: the same without node and edge types (`graph.to_homogeneous_graph`), one shared
  input projection and one GATv2Conv per layer;
- `NoThinkGNN`: the "w/o thinking node" ablation: no think nodes, each query linked straight to its rollouts'
  answer nodes, and a readout of the answer alone;
- `FeatureMLP`: no graph at all, an MLP over each rollout's query, think, answer embeddings and features.

Shapes: Q queries, R rollouts, D embedding dim, F answer-feature dim, H hidden.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.nn import GATv2Conv, HeteroConv

from memrl.errors import UserError
from memrl.memreward.graph import (
    ANSWER,
    COMPETES_WITH,
    EDGE_TYPES,
    NODE_TYPES,
    QUERY,
    SIMILAR_TO,
    THINK,
    to_homogeneous_graph,
)

MODEL_KINDS = ("gnn", "homogeneous", "no_think", "mlp")
# the released default: think competition is off in training and inference (docs/methods.md#memory-graph)
DEFAULT_EDGE_TYPES = tuple(et for et in EDGE_TYPES if et != COMPETES_WITH)
FEAT_HIDDEN = 64  # answer_feat_proj's inner width in the released model

EdgeType = tuple[str, str, str]


def dot_score(q_hat: Tensor, r_hat: Tensor, bias: Tensor) -> Tensor:
    """Scaled dot-product score of each rollout against its query.

    Args:
        q_hat: [R, K] normalised query representation of each rollout's query.
        r_hat: [R, K] normalised rollout representation.
        bias: [] learnable scalar.

    Returns:
        [R] logits (q_hat . r_hat) / sqrt(K) + bias; the sqrt keeps the logit scale independent of K.
    """
    return (q_hat * r_hat).sum(-1) / math.sqrt(q_hat.shape[-1]) + bias


class DotProductReadout(nn.Module):
    """q_hat = LayerNorm(Linear(H -> K)(h_query)); r_hat = LayerNorm(Linear(P*H -> K)([part_1; ...; part_P]));
    score = dot_score(q_hat, r_hat, b). The released model's P = 3 parts are [h_think; h_answer; feat_proj]."""

    def __init__(self, hidden: int, readout_dim: int = 256, parts: int = 3) -> None:
        super().__init__()
        self.query_proj = nn.Linear(hidden, readout_dim)
        self.query_norm = nn.LayerNorm(readout_dim)
        self.rollout_proj = nn.Linear(parts * hidden, readout_dim)
        self.rollout_norm = nn.LayerNorm(readout_dim)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, h_query: Tensor, *rollout_parts: Tensor) -> Tensor:
        """h_query [R, H] (each rollout's query, already gathered), each of the P rollout parts [R, H] -> [R]."""
        q_hat = self.query_norm(self.query_proj(h_query))
        r_hat = self.rollout_norm(self.rollout_proj(torch.cat(rollout_parts, dim=-1)))
        return dot_score(q_hat, r_hat, self.bias)


def _feat_proj(feat_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(feat_dim, FEAT_HIDDEN), nn.ReLU(), nn.Linear(FEAT_HIDDEN, hidden))


def _check_heads(hidden: int, heads: int) -> None:
    if heads < 1 or hidden % heads:
        raise UserError(f"GNN hidden size ({hidden}) must be a multiple of the number of attention heads ({heads})")


def hetero_conv(edge_types: Sequence[EdgeType], hidden: int, heads: int, dropout: float) -> HeteroConv:
    """One layer: a GATv2Conv per edge type (H -> H, `heads` heads concatenated), averaged per target type."""
    return HeteroConv(
        {
            # a self-loop needs source and target in the same node set; the released model sets it on
            # query-query only, the one same-type edge it trains with
            et: GATv2Conv(hidden, hidden // heads, heads=heads, dropout=dropout, add_self_loops=et[0] == et[2])
            for et in edge_types
        },
        aggr="mean",
    )


def propagate(convs: nn.ModuleList, h: dict[str, Tensor], edge_index: dict[EdgeType, Tensor]) -> dict[str, Tensor]:
    """Node representations {type: [N_type, H]} after every layer of `convs` (ReLU after each)."""
    for conv in convs:
        out = conv(h, edge_index)
        # a node type that no edge type reaches gets no output from HeteroConv: it keeps its representation
        h = {t: torch.relu(out[t]) if t in out else h[t] for t in h}
    return h


class RewardGNN(nn.Module):
    """The heterogeneous GNN of docs/methods.md#reward-gnn (the released `UnifiedGNNDotProduct`).

    Args:
        in_dim: node embedding dim D (384 for MiniLM).
        feat_dim: answer feature dim F.
        hidden: H; a multiple of `heads` (the heads' outputs are concatenated back to H).
        heads: GATv2 attention heads.
        layers: message-passing layers.
        dropout: GATv2 attention dropout.
        edge_types: the edge types the model has convolutions for (default: all but COMPETES_WITH). At
            forward time only those also present in the graph are used, so a model without COMPETES_WITH
            runs on a graph with it (ignoring it), and one with it runs on a graph without it.
        readout_dim: K of the dot-product readout.
    """

    def __init__(
        self,
        in_dim: int = 384,
        feat_dim: int = 3,
        hidden: int = 512,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
        edge_types: Sequence[EdgeType] | None = None,
        readout_dim: int = 256,
    ) -> None:
        super().__init__()
        _check_heads(hidden, heads)
        self.edge_types = [tuple(et) for et in (DEFAULT_EDGE_TYPES if edge_types is None else edge_types)]
        unknown = [et for et in self.edge_types if et not in EDGE_TYPES]
        if unknown:
            raise UserError(f"unknown edge types {unknown}; valid: {list(EDGE_TYPES)}")
        self.input_proj = nn.ModuleDict({t: nn.Linear(in_dim, hidden) for t in NODE_TYPES})
        self.answer_feat_proj = _feat_proj(feat_dim, hidden)
        with warnings.catch_warnings():
            # PyG warns when a node type is no edge type's target; `encode` keeps such a type's representation
            warnings.filterwarnings("ignore", message="There exist node types")
            self.convs = nn.ModuleList(hetero_conv(self.edge_types, hidden, heads, dropout) for _ in range(layers))
        self.readout = DotProductReadout(hidden, readout_dim)

    def encode(self, data: HeteroData) -> dict[str, Tensor]:
        """Node representations after the last layer: {node type: [N_type, H]}."""
        h = {t: self.input_proj[t](data[t].x) for t in NODE_TYPES}
        edge_index = {et: data[et].edge_index for et in self.edge_types if et in data.edge_types}
        return propagate(self.convs, h, edge_index)

    def forward(self, data: HeteroData) -> Tensor:
        """data: a memory graph -> [R] logits of its answer nodes, in node order."""
        h = self.encode(data)
        answer = data[ANSWER]
        return self.readout(h[QUERY][answer.query], h[THINK], h[ANSWER], self.answer_feat_proj(answer.feat))


class HomogeneousGNN(nn.Module):
    """The homogeneous-graph ablation: all nodes in one set, all edges in one edge index, one GATv2Conv per
    layer (with self-loops), one shared input projection; the readout of `RewardGNN`.

    Args: as `RewardGNN` (there are no edge types to choose: every edge type in the graph is used).
    """

    def __init__(
        self,
        in_dim: int = 384,
        feat_dim: int = 3,
        hidden: int = 512,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
        readout_dim: int = 256,
    ) -> None:
        super().__init__()
        _check_heads(hidden, heads)
        self.input_proj = nn.Linear(in_dim, hidden)
        self.answer_feat_proj = _feat_proj(feat_dim, hidden)
        self.convs = nn.ModuleList(
            GATv2Conv(hidden, hidden // heads, heads=heads, dropout=dropout, add_self_loops=True) for _ in range(layers)
        )
        self.readout = DotProductReadout(hidden, readout_dim)

    def forward(self, data: HeteroData) -> Tensor:
        """data: a memory graph -> [R] logits of its answer nodes, in node order."""
        x, edge_index, answer_index = to_homogeneous_graph(data)  # rows: Q queries, R thinks, R answers
        h = self.input_proj(x)
        for conv in self.convs:
            h = torch.relu(conv(h, edge_index))
        answer = data[ANSWER]
        num_queries = data[QUERY].num_nodes
        think_index = num_queries + torch.arange(answer_index.shape[0], device=h.device)
        return self.readout(h[answer.query], h[think_index], h[answer_index], self.answer_feat_proj(answer.feat))


# the no-think ablation's own edge types, derived from each answer node's query
GENERATES_ANSWER = (QUERY, "generates_answer", ANSWER)
REV_GENERATES_ANSWER = (ANSWER, "rev_generates_answer", QUERY)


class NoThinkGNN(nn.Module):
    """The "w/o thinking node" ablation: `RewardGNN` on a graph without think nodes.

    Each rollout is its answer node alone, linked to its query by `(query, generates_answer, answer)` and the
    reverse (built from `answer.query`, so it runs on the graphs of `build_graph` / `attach`, whose think
    nodes and edges it ignores); `(query, similar_to, query)` is kept. The readout scores
    [h_answer; feat_proj] against the query. A query's answers are one hop from it here (two through the
    think nodes in `RewardGNN`); `graph.receptive_subgraph` keeps every kept query's whole rollouts, so the
    same number of hops still holds everything this model reads.

    Args: as `RewardGNN`, without `edge_types` (think-think edges have no meaning here).
    """

    def __init__(
        self,
        in_dim: int = 384,
        feat_dim: int = 3,
        hidden: int = 512,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
        readout_dim: int = 256,
    ) -> None:
        super().__init__()
        _check_heads(hidden, heads)
        self.input_proj = nn.ModuleDict({t: nn.Linear(in_dim, hidden) for t in (QUERY, ANSWER)})
        self.answer_feat_proj = _feat_proj(feat_dim, hidden)
        edge_types = (GENERATES_ANSWER, REV_GENERATES_ANSWER, SIMILAR_TO)
        self.convs = nn.ModuleList(hetero_conv(edge_types, hidden, heads, dropout) for _ in range(layers))
        self.readout = DotProductReadout(hidden, readout_dim, parts=2)

    def forward(self, data: HeteroData) -> Tensor:
        """data: a memory graph -> [R] logits of its answer nodes, in node order."""
        answer = data[ANSWER]
        rollouts = torch.arange(answer.num_nodes, device=answer.query.device)
        generates = torch.stack([answer.query, rollouts])
        edge_index = {GENERATES_ANSWER: generates, REV_GENERATES_ANSWER: generates.flip(0)}
        if SIMILAR_TO in data.edge_types:
            edge_index[SIMILAR_TO] = data[SIMILAR_TO].edge_index
        h = propagate(self.convs, {t: self.input_proj[t](data[t].x) for t in (QUERY, ANSWER)}, edge_index)
        return self.readout(h[QUERY][answer.query], h[ANSWER], self.answer_feat_proj(answer.feat))


class FeatureMLP(nn.Module):
    """The no-graph ablation: an MLP over [x_query of its query; x_think; x_answer; feat] of each rollout.

    Args:
        in_dim: D; feat_dim: F; hidden: H; dropout: between the two hidden layers.
    """

    def __init__(self, in_dim: int = 384, feat_dim: int = 3, hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(3 * in_dim + feat_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, data: HeteroData) -> Tensor:
        """data: a memory graph (only its node stores are read) -> [R] logits of its answer nodes."""
        answer = data[ANSWER]
        x = torch.cat([data[QUERY].x[answer.query], data[THINK].x, answer.x, answer.feat], dim=-1)  # [R, 3D + F]
        return self.mlp(x).squeeze(-1)


def build_model(
    kind: str,
    in_dim: int,
    feat_dim: int,
    hidden: int,
    heads: int,
    layers: int,
    dropout: float,
    edge_types: Sequence[EdgeType] | None = None,
) -> nn.Module:
    """A reward model by name: "gnn" (`RewardGNN`), "homogeneous" (`HomogeneousGNN`), "no_think"
    (`NoThinkGNN`), "mlp" (`FeatureMLP`).

    `heads` and `layers` are ignored by "mlp", `edge_types` by all but "gnn".

    Raises:
        UserError: an unknown kind, or hidden not a multiple of heads.
    """
    if kind == "gnn":
        return RewardGNN(in_dim, feat_dim, hidden, heads, layers, dropout, edge_types)
    if kind == "homogeneous":
        return HomogeneousGNN(in_dim, feat_dim, hidden, heads, layers, dropout)
    if kind == "no_think":
        return NoThinkGNN(in_dim, feat_dim, hidden, heads, layers, dropout)
    if kind == "mlp":
        return FeatureMLP(in_dim, feat_dim, hidden, dropout)
    raise UserError(f"unknown reward model kind '{kind}'; valid: {', '.join(MODEL_KINDS)}")
