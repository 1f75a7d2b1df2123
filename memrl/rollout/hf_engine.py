"""Rollouts with transformers `generate`: batched, `n` completions per prompt, CPU or GPU.

The engine holds a reference to the live policy module, so a policy update is visible to the next
`generate` call without copying weights (`sync_weights` is a no-op kept for the engine interface;
a vLLM engine holds its own copy and must be synced).

With `n > 1` each prompt goes through the model once, not `n` times: the KV cache of the prompt (all
but its last token) is computed per prompt and repeated for its `n` copies, and `generate` continues
from it (`_shared_prompt_cache`). Positions, masks and random draws are those of the plain call, so the
completions are the same (bit for bit on the CPU, tests/rollout); only the prompt's compute is saved,
(n - 1) / n of it.

Seeded sampling (`SamplingParams.seed` s) restarts torch's RNG at every batch, from the seed of the batch's
first prompt i (`params.from_prompt(i)`: s + i * n, vLLM's seed for that prompt), and leaves the global RNG as
it was. A call on whole batches from prompt i on, with `params.from_prompt(i)`, therefore samples exactly what
the call on all prompts samples for them (same batches, same padding, same draws): evaluation splits its
batches over ranks this way (memrl.eval.runner). Unseeded calls draw from the global RNG, batch after batch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from memrl.rollout.records import Rollout, SamplingParams

log = logging.getLogger(__name__)


class HFEngine:
    """transformers `generate` behind the rollout-engine interface.

    Args:
        model: a causal LM (its device is used for inputs).
        tokenizer: left-padding tokenizer with a pad token.
        batch_size: prompts per `generate` call (each expands to `n` sequences).

    Attributes:
        synced_gpus: pass `synced_gpus=True` to `generate` (a sharded policy over several ranks: a rank whose
            sequences ended keeps running forward passes until every rank's have, as FSDP's all-gathers need).
    """

    synced_gpus = False

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 64) -> None:
        if tokenizer.padding_side != "left":
            raise ValueError("HFEngine needs a left-padding tokenizer (tokenizer.padding_side='left')")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))

    def sync_weights(self, model: Any) -> None:
        """Point the engine at `model` (the same module in the colocated CPU setup: nothing to copy)."""
        self.model = model

    def sleep(self) -> None:
        """Nothing to free before the policy update: the engine holds no memory of its own."""

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Rollout]]:
        """Sample `params.n` completions for each prompt.

        Args:
            prompts: prompt strings.
            params: sampling parameters.
            progress: called with the number of prompts finished after each batch.

        Returns:
            One list of `n` rollouts per prompt, in prompt order.
        """
        out: list[list[Rollout]] = []
        was_training = self.model.training
        self.model.eval()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            # a seeded call does not move the global RNG (as vLLM's does not)
            with torch.random.fork_rng(devices=devices, enabled=params.seed is not None):
                for start in range(0, len(prompts), self.batch_size):
                    batch = list(prompts[start : start + self.batch_size])
                    if params.seed is not None:
                        torch.manual_seed(params.from_prompt(start).seed)
                    out.extend(self._generate_batch(batch, start, params))
                    if progress is not None:
                        progress(len(batch))
        finally:
            self.model.train(was_training)
        return out

    def _generate_batch(self, prompts: list[str], offset: int, params: SamplingParams) -> list[list[Rollout]]:
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if self.synced_gpus:
            gen_kwargs["synced_gpus"] = True
        if params.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
            )
        if params.stop:
            gen_kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        inputs: dict[str, Any] = dict(enc)
        cache = _shared_prompt_cache(self.model, enc["input_ids"], enc["attention_mask"], params.n)
        if cache is not None:
            # the prompts' rows repeated as num_return_sequences would, the prompt already in the cache
            inputs = {k: v.repeat_interleave(params.n, dim=0) for k, v in enc.items()}
            inputs[_cache_kwarg(self.model)] = cache
            gen_kwargs["num_return_sequences"] = 1
        seqs = self.model.generate(**inputs, **gen_kwargs)
        prompt_len = enc["input_ids"].shape[1]
        completions = seqs[:, prompt_len:].tolist()
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        groups: list[list[Rollout]] = []
        for i, prompt in enumerate(prompts):
            group = []
            for j in range(params.n):
                ids, reason = _trim(completions[i * params.n + j], tok.eos_token_id, tok.pad_token_id, params)
                text = tok.decode(ids, skip_special_tokens=True)
                if reason == "length" and any(s in text for s in params.stop):
                    reason = "stop"
                group.append(Rollout(offset + i, j, prompt, text, ids, prompt_ids[i], reason))
            groups.append(group)
        return groups


def _shared_prompt_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int) -> Any:
    """The KV cache of each (left-padded) prompt but its last token, computed once and repeated `n` times.

    `generate(num_return_sequences=n)` repeats each prompt `n` times and runs every copy through the model;
    from this cache it runs only the last prompt token of each copy, at the positions it would have used
    (attention-mask cumsum, as `generate` computes them), then samples as before. Returns None where it
    does not apply (n == 1, one-token prompts) or the model cannot take a `DynamicCache` (then the plain
    call runs).
    """
    if n < 2 or input_ids.shape[1] < 2 or not getattr(model.config, "use_cache", True):
        return None
    try:
        try:
            cache = DynamicCache(config=model.config)  # sliding-window layers keep their window
        except TypeError:  # an older transformers
            cache = DynamicCache()
        ids, mask = input_ids[:, :-1], attention_mask[:, :-1]
        position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{_cache_kwarg(model): cache},
        )
        cache.batch_repeat_interleave(n)
    except (TypeError, ValueError, AttributeError, NotImplementedError) as e:
        log.debug("no shared prompt cache for %s (%s); each copy of a prompt is run", type(model).__name__, e)
        return None
    return cache


def _cache_kwarg(model: Any) -> str:
    """The keyword `model` takes a KV cache under: `cache` in current transformers (which deprecate
    `past_key_values` with a FutureWarning on every forward and generate call), `past_key_values` before."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _trim(ids: list[int], eos_id: int | None, pad_id: int | None, params: SamplingParams) -> tuple[list[int], str]:
    """Cut a generated row after its EOS (kept) or before its right padding; say why it ended."""
    if eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id) + 1], "stop"
    # a row that ended on a stop string is right-padded with pad tokens up to the batch length
    end = len(ids)
    while end > 0 and pad_id is not None and ids[end - 1] == pad_id:
        end -= 1
    if end < len(ids):
        return ids[:end], "stop"
    return ids, "length" if len(ids) >= params.max_new_tokens else "stop"
