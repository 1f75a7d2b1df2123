"""Padded tensors of a step's trained rollouts, in the layout the scoring and update passes use.

Each row is `[left-padded prompt | response, right-padded]`: every response starts at the same column
`P` (the longest prompt), so the logits that score the response are the last `R + 1` positions of the
forward pass (`logits_to_keep`) for every row, and `response_mask` is a plain [B, R] mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

from memrl.rollout.records import Rollout


@dataclass
class RolloutBatch:
    """B sequences of prompt + response.

    Attributes:
        input_ids: [B, P + R].
        attention_mask: [B, P + R] 1 on real tokens.
        position_ids: [B, P + R] 0-based positions of the real tokens (left padding does not shift them).
        response_mask: [B, R] float, 1.0 on response tokens that count in the loss.
        group_ids: [B] the prompt group of each row.
        scores: [B] sequence scores.
        old_log_prob, ref_log_prob, advantages: [B, R] or None until computed.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_mask: torch.Tensor
    group_ids: torch.Tensor
    scores: torch.Tensor
    old_log_prob: torch.Tensor | None = None
    ref_log_prob: torch.Tensor | None = None
    advantages: torch.Tensor | None = None

    @property
    def response_length(self) -> int:
        return self.response_mask.shape[1]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1] - self.response_length

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> RolloutBatch:
        """The rows at `index` (a new batch; tensors that are None stay None)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self,
            **{f.name: getattr(self, f.name)[idx] for f in fields(self) if getattr(self, f.name) is not None},
        )

    def to(self, device: torch.device | str) -> RolloutBatch:
        return replace(
            self,
            **{f.name: getattr(self, f.name).to(device) for f in fields(self) if getattr(self, f.name) is not None},
        )


def build_batch(
    rollouts: Sequence[Rollout],
    group_ids: Sequence[int],
    scores: Sequence[float],
    pad_id: int,
    mask_truncated: bool = False,
) -> RolloutBatch:
    """Pad rollouts into a `RolloutBatch`.

    Args:
        rollouts: one per row, with `prompt_token_ids` and `token_ids`.
        group_ids: the group of each row.
        scores: the sequence score of each row.
        pad_id: the pad token id.
        mask_truncated: zero the response mask of rollouts that hit the length limit (DAPO's overlong
            filtering, TRL's `mask_truncated_completions`).
    """
    if not rollouts:
        raise ValueError("build_batch needs at least one rollout")
    P = max(len(r.prompt_token_ids) for r in rollouts)
    R = max(1, max(len(r.token_ids) for r in rollouts))
    B = len(rollouts)
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + R), dtype=torch.long)
    response_mask = torch.zeros((B, R), dtype=torch.float32)
    for i, r in enumerate(rollouts):
        p, c = r.prompt_token_ids, r.token_ids
        input_ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        attention_mask[i, P - len(p) : P] = 1
        if c:
            input_ids[i, P : P + len(c)] = torch.tensor(c, dtype=torch.long)
            attention_mask[i, P : P + len(c)] = 1
            if not (mask_truncated and r.finish_reason == "length"):
                response_mask[i, : len(c)] = 1.0
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        response_mask=response_mask,
        group_ids=torch.as_tensor(list(group_ids), dtype=torch.long),
        scores=torch.as_tensor(list(scores), dtype=torch.float32),
    )
