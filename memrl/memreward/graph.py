"""The heterogeneous memory graph of MemReward (docs/methods.md#memory-graph) as a PyTorch Geometric `HeteroData`.

Nodes: one `query` node per query, one `think` and one `answer` node per rollout; `x` holds the
384-d sentence embeddings. Edges (`[2, E]` long tensors, row 0 = source, row 1 = target; in PyG the
target aggregates messages from the source):

- `(query, generates_reasoning, think)`: a query to each of its rollouts' think nodes, plus the reverse
  `(think, rev_generates_reasoning, query)`;
- `(think, leads_to, answer)`: rollout r's think to rollout r's answer, plus `(answer, rev_leads_to, think)`;
- `(query, similar_to, query)`: cosine top-k neighbours among the LABELLED queries only. A labelled query
  gets its k most similar other labelled queries, an unlabelled one its k most similar labelled queries
  (fewer when fewer exist). `direction="memory_to_query"` (the paper's story, default) stores
  `[neighbour, query]`, so a query aggregates from its labelled neighbours; `"query_to_memory"` (the
  released code, docs/methods.md#message-direction) stores `[query, neighbour]`;
- `(think, competes_with, think)`, only when `think_k > 0`: within each query's group, each think to its
  `think_k` most similar other thinks (`[think, neighbour]`, as the released code). With `think_k == 0`
  the edge type is absent, in training and in inference alike (the released code adds it empty at
  inference only, docs/methods.md#think-edges-at-inference).

The released `(query, generates, answer)` edge type is left out: no convolution reads it.

Online use: `MemoryGraph` builds the memory part once (edges, normalised labelled query embeddings);
`MemoryGraph.attach(new)` then appends a batch of new, unlabelled queries and their rollouts, computing
only the new queries' kNN against the labelled memory and the new groups' structural (and think) edges.
Memory edges never change: a new query is never anyone's neighbour, so the result is exactly the graph
that `build_graph` gives for the memory plus the new queries marked unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from memrl.errors import UserError

QUERY, THINK, ANSWER = "query", "think", "answer"
NODE_TYPES = (QUERY, THINK, ANSWER)
GENERATES_REASONING = (QUERY, "generates_reasoning", THINK)
REV_GENERATES_REASONING = (THINK, "rev_generates_reasoning", QUERY)
LEADS_TO = (THINK, "leads_to", ANSWER)
REV_LEADS_TO = (ANSWER, "rev_leads_to", THINK)
SIMILAR_TO = (QUERY, "similar_to", QUERY)
COMPETES_WITH = (THINK, "competes_with", THINK)
EDGE_TYPES = (GENERATES_REASONING, REV_GENERATES_REASONING, LEADS_TO, REV_LEADS_TO, SIMILAR_TO, COMPETES_WITH)
DIRECTIONS = ("memory_to_query", "query_to_memory")


@dataclass
class GraphInputs:
    """Everything the graph is built from, as plain tensors (independent of how the memory is stored).

    Attributes:
        query_emb: [Q, D] query embeddings.
        think_emb: [R, D] one row per rollout.
        answer_emb: [R, D].
        answer_feat: [R, F] answer features (`features.answer_features`, F = 3).
        rollout_query: [R] long, the query of each rollout, in 0..Q-1.
        query_labelled: [Q] bool, the query is in the labelled memory (its rollouts have ground truth).
        rollout_label: [R] float, 0/1 for rollouts of labelled queries and nan elsewhere (training targets).
    """

    query_emb: Tensor
    think_emb: Tensor
    answer_emb: Tensor
    answer_feat: Tensor
    rollout_query: Tensor
    query_labelled: Tensor
    rollout_label: Tensor | None = None

    @property
    def num_queries(self) -> int:
        return int(self.query_emb.shape[0])

    @property
    def num_rollouts(self) -> int:
        return int(self.think_emb.shape[0])

    def validate(self) -> None:
        """Raise ValueError when the shapes or dtypes do not fit together."""
        q, r = self.num_queries, self.num_rollouts
        for name in ("query_emb", "think_emb", "answer_emb", "answer_feat"):
            if getattr(self, name).dim() != 2:
                raise ValueError(f"GraphInputs.{name} must be 2-D, got shape {tuple(getattr(self, name).shape)}")
        for name in ("answer_emb", "answer_feat", "rollout_query"):
            if getattr(self, name).shape[0] != r:
                raise ValueError(f"GraphInputs.{name} has {getattr(self, name).shape[0]} rows for {r} rollouts")
        if self.rollout_query.dim() != 1 or self.rollout_query.dtype != torch.long:
            raise ValueError("GraphInputs.rollout_query must be a 1-D long tensor")
        if r and (int(self.rollout_query.min()) < 0 or int(self.rollout_query.max()) >= q):
            raise ValueError(f"GraphInputs.rollout_query must lie in 0..{q - 1}")
        if self.query_labelled.dtype != torch.bool or tuple(self.query_labelled.shape) != (q,):
            raise ValueError(f"GraphInputs.query_labelled must be a [{q}] bool tensor")
        if self.rollout_label is not None and tuple(self.rollout_label.shape) != (r,):
            raise ValueError(f"GraphInputs.rollout_label must have shape [{r}]")

    def to_dict(self) -> dict[str, Tensor | None]:
        """The tensors by field name (what `torch.save` stores; `from_dict` reads it back)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, state: dict[str, Tensor | None]) -> GraphInputs:
        return cls(**state)

    def to(self, device: torch.device | str) -> GraphInputs:
        """The same inputs on `device`."""
        label = None if self.rollout_label is None else self.rollout_label.to(device)
        return GraphInputs(
            self.query_emb.to(device),
            self.think_emb.to(device),
            self.answer_emb.to(device),
            self.answer_feat.to(device),
            self.rollout_query.to(device),
            self.query_labelled.to(device),
            label,
        )


def concat_inputs(first: GraphInputs, second: GraphInputs) -> GraphInputs:
    """`first` then `second` as one set of inputs: queries and rollouts of `second` come after those of
    `first` (its `rollout_query` shifted by `first.num_queries`); a missing `rollout_label` becomes nan."""
    if first.rollout_label is None and second.rollout_label is None:
        label = None
    else:
        label = torch.cat([_labels_or_nan(first), _labels_or_nan(second)])
    return GraphInputs(
        torch.cat([first.query_emb, second.query_emb]),
        torch.cat([first.think_emb, second.think_emb]),
        torch.cat([first.answer_emb, second.answer_emb]),
        torch.cat([first.answer_feat, second.answer_feat]),
        torch.cat([first.rollout_query, second.rollout_query + first.num_queries]),
        torch.cat([first.query_labelled, second.query_labelled]),
        label,
    )


def _labels_or_nan(inputs: GraphInputs) -> Tensor:
    if inputs.rollout_label is not None:
        return inputs.rollout_label.float()
    return torch.full((inputs.num_rollouts,), float("nan"), device=inputs.think_emb.device)


# ---------------------------------------------------------------------------------------------------
# edge construction (pure functions)


def topk_neighbours(sim: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Row-wise top-k of a similarity matrix; entries set to -inf are never chosen.

    Args:
        sim: [N, M] similarities (-inf marks a forbidden pair).
        k: neighbours per row (fewer where a row has fewer allowed entries).

    Returns:
        (row [E], col [E]) long: row-major, most similar first within a row.
    """
    kk = min(k, sim.shape[1])
    if kk <= 0 or sim.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=sim.device)
        return empty, empty.clone()
    vals, cols = sim.topk(kk, dim=1)
    keep = vals > float("-inf")
    rows = torch.arange(sim.shape[0], device=sim.device).unsqueeze(1).expand(-1, kk)
    return rows[keep], cols[keep]


def query_knn(query_unit: Tensor, labelled: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each query's k most similar labelled queries (cosine), never itself.

    Args:
        query_unit: [Q, D] unit-norm query embeddings.
        labelled: [Q] bool, which queries may be neighbours.
        k: neighbours per query.

    Returns:
        (query [E], neighbour [E]) long indices in 0..Q-1, grouped by query, most similar first.
    """
    labelled_idx = labelled.nonzero().view(-1)
    sim = query_unit @ query_unit[labelled_idx].T  # [Q, L]
    # a labelled query is a candidate of itself: forbid the diagonal of the labelled block
    sim[labelled_idx, torch.arange(len(labelled_idx), device=sim.device)] = float("-inf")
    rows, cols = topk_neighbours(sim, k)
    return rows, labelled_idx[cols]


def group_knn(unit: Tensor, group: Tensor, k: int, num_groups: int | None = None) -> tuple[Tensor, Tensor]:
    """Within each group, each member's k most similar other members (cosine).

    Groups are padded to the largest one and compared with one batched matmul, so the cost is
    num_groups x G_max^2 x D.

    Args:
        unit: [R, D] unit-norm embeddings.
        group: [R] long group of each row, in 0..num_groups-1.
        k: neighbours per member (fewer in groups of k members or less).
        num_groups: number of groups (default: group.max() + 1).

    Returns:
        (member [E], neighbour [E]) long row indices, ordered by group, then by row, most similar first.
    """
    device = unit.device
    r = unit.shape[0]
    if r == 0 or k <= 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    g = int(group.max()) + 1 if num_groups is None else num_groups
    order = torch.argsort(group, stable=True)
    g_sorted = group[order]
    counts = torch.bincount(g_sorted, minlength=g)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(r, device=device) - starts[g_sorted]
    width = int(counts.max())
    slots = torch.full((g, width), -1, dtype=torch.long, device=device)  # [G, W] row index or -1 (padding)
    slots[g_sorted, pos] = order
    padded = unit.new_zeros(g, width, unit.shape[1])
    padded[g_sorted, pos] = unit[order]
    sim = padded @ padded.transpose(1, 2)  # [G, W, W]
    valid = slots >= 0
    allowed = valid.unsqueeze(2) & valid.unsqueeze(1) & ~torch.eye(width, dtype=torch.bool, device=device)
    sim = sim.masked_fill(~allowed, float("-inf"))
    kk = min(k, width - 1)
    if kk <= 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    vals, cols = sim.topk(kk, dim=2)  # [G, W, kk]
    keep = vals > float("-inf")
    member = slots.unsqueeze(2).expand(-1, -1, kk)[keep]
    neighbour = torch.gather(slots, 1, cols.reshape(g, -1)).reshape(g, width, kk)[keep]
    return member, neighbour


def structural_edges(rollout_query: Tensor, query_offset: int = 0, rollout_offset: int = 0) -> dict:
    """The query->think and think->answer edges (and their reverses) of a set of rollouts.

    Args:
        rollout_query: [R] long, each rollout's query.
        query_offset / rollout_offset: added to query / rollout indices (to append to an existing graph).

    Returns:
        {edge type: [2, R] long edge index} for the four structural edge types.
    """
    rollout = torch.arange(rollout_query.shape[0], device=rollout_query.device) + rollout_offset
    gen = torch.stack([rollout_query + query_offset, rollout])
    leads = torch.stack([rollout, rollout])
    return {GENERATES_REASONING: gen, REV_GENERATES_REASONING: gen.flip(0), LEADS_TO: leads, REV_LEADS_TO: leads}


def _similar_index(query: Tensor, neighbour: Tensor, direction: str) -> Tensor:
    return torch.stack([neighbour, query] if direction == "memory_to_query" else [query, neighbour])


def _check_options(k: int, direction: str, think_k: int) -> None:
    if direction not in DIRECTIONS:
        raise UserError(f"unknown graph direction '{direction}'; valid: {', '.join(DIRECTIONS)}")
    if k < 0:
        raise UserError(f"graph k (query neighbours) must be >= 0, got {k}")
    if think_k < 0:
        raise UserError(f"graph think_k (think neighbours per group) must be >= 0, got {think_k}")


def _assemble(inputs: GraphInputs, edges: dict) -> HeteroData:
    data = HeteroData()
    data[QUERY].x = inputs.query_emb
    data[QUERY].labelled = inputs.query_labelled
    data[THINK].x = inputs.think_emb
    data[ANSWER].x = inputs.answer_emb
    data[ANSWER].feat = inputs.answer_feat
    data[ANSWER].query = inputs.rollout_query
    if inputs.rollout_label is not None:
        data[ANSWER].y = inputs.rollout_label.float()
    for edge_type in EDGE_TYPES:
        if edge_type in edges:
            data[edge_type].edge_index = edges[edge_type]
    return data


# ---------------------------------------------------------------------------------------------------
# graphs


class MemoryGraph:
    """The frozen memory part of the graph, built once; `attach` appends a batch of new queries.

    Holds the memory's inputs, its edge indices and its normalised labelled query embeddings, so an
    online step only computes [Q_new, L] similarities and the new groups' edges, then concatenates.

    Args:
        inputs: the memory (labelled queries, and any unlabelled ones such as validation queries).
        k: query neighbours (`similar_to`), 7 in the released code.
        direction: "memory_to_query" (default) or "query_to_memory"; see the module docstring.
        think_k: think neighbours within a group (`competes_with`); 0 = no such edge type.
    """

    def __init__(self, inputs: GraphInputs, k: int = 7, direction: str = "memory_to_query", think_k: int = 0) -> None:
        _check_options(k, direction, think_k)
        inputs.validate()
        self.inputs, self.k, self.direction, self.think_k = inputs, k, direction, think_k
        query_unit = F.normalize(inputs.query_emb.float(), dim=-1)
        self.labelled_idx = inputs.query_labelled.nonzero().view(-1)
        self.labelled_unit = query_unit[self.labelled_idx]  # [L, D]
        self.edges = structural_edges(inputs.rollout_query)
        query, neighbour = query_knn(query_unit, inputs.query_labelled, k)
        self.edges[SIMILAR_TO] = _similar_index(query, neighbour, direction)
        if think_k > 0:
            think_unit = F.normalize(inputs.think_emb.float(), dim=-1)
            self.edges[COMPETES_WITH] = torch.stack(
                group_knn(think_unit, inputs.rollout_query, think_k, inputs.num_queries)
            )

    @property
    def device(self) -> torch.device:
        return self.inputs.query_emb.device

    def graph(self) -> HeteroData:
        """The memory graph alone (what `build_graph(inputs, ...)` returns)."""
        return _assemble(self.inputs, self.edges)

    def attach(self, new: GraphInputs) -> tuple[HeteroData, Tensor]:
        """The memory graph plus new unlabelled queries and their rollouts.

        New queries get `similar_to` edges to their k most similar LABELLED memory queries; memory
        edges are unchanged. Node order: memory nodes first, then the new ones in `new`'s order.

        Args:
            new: the new queries and rollouts; `new.query_labelled` must be all False.

        Returns:
            (graph, answer_index): answer_index [R_new] long, the new rollouts' `answer` nodes.
        """
        new.validate()
        if bool(new.query_labelled.any()):
            raise ValueError("attach(): new queries are unlabelled by definition; query_labelled must be all False")
        new = new.to(self.device)
        q0, r0 = self.inputs.num_queries, self.inputs.num_rollouts
        edges = structural_edges(new.rollout_query, q0, r0)
        sim = F.normalize(new.query_emb.float(), dim=-1) @ self.labelled_unit.T  # [Q_new, L]
        rows, cols = topk_neighbours(sim, self.k)
        edges[SIMILAR_TO] = _similar_index(rows + q0, self.labelled_idx[cols], self.direction)
        if self.think_k > 0:
            think_unit = F.normalize(new.think_emb.float(), dim=-1)
            member, neighbour = group_knn(think_unit, new.rollout_query, self.think_k, new.num_queries)
            edges[COMPETES_WITH] = torch.stack([member + r0, neighbour + r0])
        merged = {et: torch.cat([self.edges[et], edges[et]], dim=1) for et in edges}
        answer_index = torch.arange(r0, r0 + new.num_rollouts, device=self.device)
        return _assemble(concat_inputs(self.inputs, new), merged), answer_index


def build_graph(inputs: GraphInputs, k: int = 7, direction: str = "memory_to_query", think_k: int = 0) -> HeteroData:
    """The heterogeneous graph of `inputs` (layout in the module docstring).

    Node stores: `query`: x [Q, D], labelled [Q]; `think`: x [R, D]; `answer`: x [R, D], feat [R, F],
    query [R] (its query), y [R] (only when `inputs.rollout_label` is given).

    Raises:
        UserError: k or think_k negative, or an unknown direction.
    """
    return MemoryGraph(inputs, k, direction, think_k).graph()


def attach(
    memory: GraphInputs, new: GraphInputs, k: int = 7, direction: str = "memory_to_query", think_k: int = 0
) -> tuple[HeteroData, Tensor]:
    """One-off `MemoryGraph(memory, ...).attach(new)`; build a `MemoryGraph` once to attach every step."""
    return MemoryGraph(memory, k, direction, think_k).attach(new)


def to_homogeneous_graph(data: HeteroData) -> tuple[Tensor, Tensor, Tensor]:
    """All nodes in one node set and all edges in one edge index (the homogeneous-graph ablation).

    Args:
        data: a graph from `build_graph` / `attach`.

    Returns:
        x [Q + 2R, D] (query, then think, then answer nodes), edge_index [2, E] long over those rows
        (every edge type, reverses included), answer_index [R] long (the answer nodes' rows).
    """
    offsets, start = {}, 0
    for node_type in NODE_TYPES:
        offsets[node_type] = start
        start += data[node_type].num_nodes
    x = torch.cat([data[t].x for t in NODE_TYPES])
    parts = []
    for src, rel, dst in data.edge_types:
        shift = torch.tensor([[offsets[src]], [offsets[dst]]], device=x.device)
        parts.append(data[src, rel, dst].edge_index + shift)
    edge_index = torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.long, device=x.device)
    answer_index = torch.arange(offsets[ANSWER], start, device=x.device)
    return x, edge_index, answer_index


def receptive_subgraph(data: HeteroData, answer_index: Tensor, hops: int) -> tuple[HeteroData, Tensor]:
    """The part of `data` that a `hops`-layer model reads to score the rollouts `answer_index`.

    A readout reads, after the last layer, each target rollout's answer and think nodes and its query.
    Going back one layer per hop along incoming edges gives every node whose input can reach them; the
    subgraph induced by those nodes holds every incoming edge of every node within `hops - 1` hops, so
    the targets' outputs are exactly those of the full graph (GATv2 normalises attention over a node's
    incoming edges, all of which are kept). Online, this scores a batch against a memory of any size at
    the cost of its k-neighbourhood.

    Args:
        data: a graph from `build_graph` / `MemoryGraph.attach`.
        answer_index: [T] long, the answer nodes to score.
        hops: message-passing layers of the model (0 for a model without a graph).

    Returns:
        (subgraph, index [T] of the targets' answer nodes in it); `answer.query` is renumbered.
    """
    device = answer_index.device
    keep = {t: torch.zeros(data[t].num_nodes, dtype=torch.bool, device=device) for t in NODE_TYPES}
    keep[ANSWER][answer_index] = True
    keep[THINK][answer_index] = True
    keep[QUERY][data[ANSWER].query[answer_index]] = True
    frontier = {t: keep[t].clone() for t in NODE_TYPES}
    for _ in range(hops):
        reached = {t: torch.zeros_like(keep[t]) for t in NODE_TYPES}
        for src, rel, dst in data.edge_types:
            edge_index = data[src, rel, dst].edge_index
            reached[src][edge_index[0][frontier[dst][edge_index[1]]]] = True
        frontier = {t: reached[t] & ~keep[t] for t in NODE_TYPES}
        keep = {t: keep[t] | reached[t] for t in NODE_TYPES}
    # the readout pairs think r with answer r, and reads each answer's query: keep whole rollouts and their
    # queries. What this adds lies outside the field, so it feeds no node whose output a target reads.
    keep[THINK] |= keep[ANSWER]
    keep[ANSWER] = keep[THINK].clone()
    keep[QUERY][data[ANSWER].query[keep[ANSWER]]] = True
    nodes = {t: keep[t].nonzero().view(-1) for t in NODE_TYPES}
    sub = data.subgraph(nodes)
    query_map = torch.full((data[QUERY].num_nodes,), -1, dtype=torch.long, device=device)
    query_map[nodes[QUERY]] = torch.arange(len(nodes[QUERY]), device=device)
    sub[ANSWER].query = query_map[data[ANSWER].query[nodes[ANSWER]]]
    answer_map = torch.full((data[ANSWER].num_nodes,), -1, dtype=torch.long, device=device)
    answer_map[nodes[ANSWER]] = torch.arange(len(nodes[ANSWER]), device=device)
    return sub, answer_map[answer_index]
