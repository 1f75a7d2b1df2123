"""The `Rollout` record every engine returns, and the sampling parameters every engine takes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 means greedy decoding (then top_p/top_k are ignored).

    Attributes:
        n: completions per prompt.
        temperature: softmax temperature; 0 = greedy.
        top_p: nucleus sampling mass (1.0 = off).
        top_k: keep the k most likely tokens (0 = off).
        max_new_tokens: hard length limit of a completion.
        stop: generation ends after any of these strings (kept in the text).
        seed: seeds this call's sampling, prompt i from seed + i * n (vLLM: per prompt; transformers: per batch,
            from its first prompt), without moving the global RNG; None: draw from the global RNG.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def from_prompt(self, first: int) -> SamplingParams:
        """These parameters for a call on this call's prompts from the `first`-th on: the seed is the one that
        prompt has here (seed + first * n), so the call samples for them what this one does (a split of whole
        batches, for the transformers engine); unseeded, unchanged."""
        return self if self.seed is None else replace(self, seed=self.seed + int(first) * self.n)


@dataclass
class Rollout:
    """One completion of one prompt.

    Attributes:
        prompt_index: index of the prompt in the `generate` call.
        sample_index: 0..n-1 within the prompt's group.
        prompt: the prompt text.
        text: the completion text (special tokens removed).
        token_ids: completion token ids, up to and including the EOS token when one was emitted; no padding.
        prompt_token_ids: prompt token ids, no padding.
        finish_reason: "stop" (EOS or a stop string) or "length" (hit max_new_tokens).
        logprobs: the sampling engine's log-prob of each completion token, where the engine was asked for
            them (the vLLM engine's `logprobs=True`); None otherwise.
    """

    prompt_index: int
    sample_index: int
    prompt: str
    text: str
    token_ids: list[int] = field(repr=False)
    prompt_token_ids: list[int] = field(repr=False)
    finish_reason: str = "stop"
    logprobs: list[float] | None = field(default=None, repr=False)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)
