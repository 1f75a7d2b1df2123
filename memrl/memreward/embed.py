"""From groups of rollouts to `GraphInputs`: embeddings and answer features, the same offline and online.

A group is one query and its rollouts, each already split into thinking and answer
(`memrl.rollout.split.split_thinking_answer`, the same rule in the warm-up memory and in training).
Texts are cut to the released code's limits (query 1000, thinking 1000, answer 500 characters) before
they are embedded, so a text embeds (and caches) identically wherever it appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from memrl.memreward.encoder import ANSWER_CHARS, QUERY_CHARS, THINK_CHARS, TextEncoder, truncate
from memrl.memreward.features import answer_features
from memrl.memreward.graph import GraphInputs
from memrl.memreward.memory import ExperienceMemory


@dataclass
class TextGroup:
    """One query and its rollouts as text.

    Attributes:
        question: the query text that is embedded.
        domain: "math", "choice" or "code" (answer features exist for math only).
        thinks / answers: per rollout, the thinking and the answer part.
        labels: per rollout, ground-truth correctness where the query is labelled; None otherwise.
    """

    question: str
    domain: str
    thinks: list[str]
    answers: list[str]
    labels: list[bool] | None = None


def build_inputs(encoder: TextEncoder, groups: Sequence[TextGroup], labelled: bool) -> GraphInputs:
    """Embed `groups` into graph inputs.

    Args:
        encoder: the sentence encoder (its cache makes repeated texts free).
        groups: G groups with R rollouts in all.
        labelled: whether these queries are labelled memory (their `labels` become training targets and
            they may be other queries' neighbours); False for validation, report and online queries.

    Returns:
        GraphInputs with query_emb [G, D], think_emb / answer_emb [R, D], answer_feat [R, 3],
        rollout_query [R], query_labelled [G], rollout_label [R] (0/1 when labelled, else nan).
    """
    thinks = [truncate(t, THINK_CHARS) for g in groups for t in g.thinks]
    answers = [truncate(a, ANSWER_CHARS) for g in groups for a in g.answers]
    queries = [truncate(g.question, QUERY_CHARS) for g in groups]
    # one pass over every text: the encoder batches them by length across the three kinds
    emb = encoder.encode(queries + thinks + answers)
    query_emb, think_emb, answer_emb = emb.split([len(queries), len(thinks), len(answers)])
    feats = [answer_features(g.answers, g.domain) for g in groups]
    answer_feat = torch.cat(feats) if feats else torch.zeros(0, 3)
    rollout_query = torch.tensor([i for i, g in enumerate(groups) for _ in g.answers], dtype=torch.long)
    if labelled:
        if any(g.labels is None for g in groups):
            raise ValueError("labelled groups need their labels")
        label = torch.tensor([float(x) for g in groups for x in g.labels], dtype=torch.float32)  # type: ignore[union-attr]
    else:
        label = torch.full((len(answers),), float("nan"))
    return GraphInputs(
        query_emb,
        think_emb,
        answer_emb,
        answer_feat,
        rollout_query,
        torch.full((len(groups),), labelled, dtype=torch.bool),
        label,
    )


def memory_groups(memory: ExperienceMemory, role: str, with_labels: bool) -> list[TextGroup]:
    """The memory's groups of one role, in query order.

    Args:
        with_labels: attach the stored correctness (train role: training targets; val and report roles:
            validation and report metrics, read by the caller only).
    """
    by_query: dict[int, list] = {i: [] for i in memory.indices(role)}
    for r in memory.rollouts:
        if r.query in by_query:
            by_query[r.query].append(r)
    out = []
    for qi, rows in by_query.items():
        q = memory.queries[qi]
        rows.sort(key=lambda r: r.sample_index)
        out.append(
            TextGroup(
                q.question,
                q.domain,
                [r.think for r in rows],
                [r.answer for r in rows],
                [r.correct for r in rows] if with_labels else None,
            )
        )
    return out


def group_labels(groups: Sequence[TextGroup]) -> torch.Tensor:
    """[R] float 0/1 labels of groups that carry them (validation and report metrics)."""
    return torch.tensor([float(x) for g in groups for x in (g.labels or [])], dtype=torch.float32)
