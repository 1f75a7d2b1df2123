"""Which prompts each step trains on: seeded epochs of shuffled indices, with a resumable position."""

from __future__ import annotations

from typing import Any

import torch


class PromptSampler:
    """Draws prompt indices epoch by epoch, each epoch a fresh seeded permutation of `range(size)`.

    Its whole state is (epoch, position), so a resumed run draws exactly the prompts the uninterrupted run
    would have drawn.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("the training set is empty")
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def next(self, k: int) -> list[int]:
        """The next `k` indices (crossing into new epochs as needed)."""
        out: list[int] = []
        while len(out) < k:
            if self.position >= self.size:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(k - len(out), self.size - self.position)
            out += self._order[self.position : self.position + take]
            self.position += take
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["size"] != self.size:
            raise ValueError(f"the checkpoint was made with {state['size']} training prompts, this run has {self.size}")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)
