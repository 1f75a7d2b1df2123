"""The tiny default model: a ~1M-parameter Qwen2 built on first use, on the CPU, and cached.

`ensure_tiny_model()` returns `<cache>/tiny-qwen2-v1-<key>/` (cache: `$MEMRL_CACHE`, else `~/.cache/memrl`; the
key: `build_key`, a hash of what the build consumes), building it when absent. The build, about two minutes on two idle cores:

1. Tokenizer: byte-level BPE (any text encodes, no unknown tokens) with every digit a token of its own
   (a `Digits(individual_digits=True)` pre-tokenizer before `ByteLevel`), trained on the warm-start corpus
   and the answer-format instruction lines; a few hundred tokens; `<|endoftext|>` is both eos and pad;
   left padding; no chat template (so `model.prompt_style=auto` resolves to plain prompts).
2. Model: `Qwen2ForCausalLM`, hidden 128, 4 layers, 4 heads of dim 32 (vLLM needs head_dim >= 32), 2 KV
   heads, MLP 512, tied embeddings.
3. Supervised warm start on `memrl.data.synthetic.sft_examples` (loss on completion tokens only), a fixed
   number of steps of batch 32, AdamW with warm-up and cosine decay. The data mixes a careful, correct
   behaviour with tempting wrong ones (see `memrl.data.synthetic`), so that RL has something to select.
4. Measurement on the synthetic test split: greedy accuracy (overall, per family, per level); at
   temperature 1 with 8 samples per problem: mean sample accuracy, pass@8, the fraction of mixed groups,
   how often each form is chosen and how often the careful and the shortcut forms are right. Everything
   goes to `build_info.json` with the settings, seed, versions and build time.

The build is deterministic given the seed on one machine (fixed step count, seeded data and torch, a fixed
thread count). It writes into a temporary directory that is renamed into place only when complete, under
an exclusive file lock of its key, so concurrent callers (pytest workers, a CLI run) build once, and a killed build
leaves nothing that could be mistaken for a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import memrl
from memrl.config.schema import SyntheticConfig
from memrl.data.synthetic import FORM_MARKERS, FORMS, SHORTCUT_FORMS, classify_form, load_split, sft_examples
from memrl.data.templates import INSTRUCTIONS, format_prompt
from memrl.grading.extract import last_boxed

log = logging.getLogger(__name__)

TINY_NAME = "tiny-qwen2-v1"
EOS_TOKEN = "<|endoftext|>"
BUILD_INFO = "build_info.json"


@dataclass(frozen=True)
class TinySettings:
    """Everything that decides the tiny model; recorded in build_info.json."""

    seed: int = 0
    # tokenizer: 256 byte tokens + the special token + merges
    vocab_size: int = 400
    # model
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    # supervised warm start: steps x batch_size examples, each a fresh train question
    sft_steps: int = 960
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    # cosine decay from lr to lr * min_lr_ratio
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    # measurement on the synthetic test split (seed of the default data config)
    data_seed: int = 1234
    eval_problems: int = 400
    eval_samples: int = 8
    eval_temperature: float = 1.0
    max_new_tokens: int = 64


# ---------------------------------------------------------------------------------------------------
# cache, lock, atomic build


def default_cache_dir() -> Path:
    """`$MEMRL_CACHE`, else `~/.cache/memrl`."""
    env = os.environ.get("MEMRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memrl"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# The build recipe's revision: bump it when a change to the build code (tokenizer training, the model's config,
# the warm-start loop, the measurement) changes what it builds. Edits that do not (moving imports, renaming,
# comments) leave the cache key, and so the cached model, as they are.
RECIPE = 1

# Folders built before the key covered the build's inputs (it hashed the source of this module and of
# memrl/data/synthetic.py), by the inputs of the key they stand for, so that the change of key rebuilds nothing:
# main at f0e808c built tiny-qwen2-v1-18e0fdecb8 with the settings, libraries (build_info.json: Python 3.11,
# torch 2.13, transformers 5.24, tokenizers 0.23) and build code of key 0367fb1b5c, from data of the same hash
# (efc5aba7..., main's build_tiny_model and measure against `build_inputs`, both generated and compared).
LEGACY_FOLDERS = {"0367fb1b5c": f"{TINY_NAME}-18e0fdecb8"}

# the code that generates the build's data (under the memrl package): the on-disk memo of its hash is valid while
# these files are unchanged
_PACKAGE = Path(__file__).resolve().parents[1]
_DATA_SOURCES = ("data/*.py", "policy/tiny.py", "policy/tiny_toys.py")


@dataclass(frozen=True)
class BuildInputs:
    """What a build consumes besides its settings: the warm-start examples (prompt, completion) in training
    order, the tokenizer's training texts, and the problems the build measures the model on."""

    examples: list[tuple[str, str]]
    corpus: list[str]
    measured: list[Any]


def build_inputs(settings: TinySettings) -> BuildInputs:
    """The default model's data: `sft_steps * batch_size` warm-start examples of the synthetic task (seed
    `data_seed`) shuffled by `seed`, the first 20000 of them and the instruction lines for the tokenizer, and
    `eval_problems` problems of the test split for the measurement."""
    data_cfg = SyntheticConfig(seed=settings.data_seed)
    rng = random.Random(settings.seed)
    examples = sft_examples(data_cfg, rng, n=settings.sft_steps * settings.batch_size)
    rng.shuffle(examples)
    corpus = [p + c for p, c in examples[:20000]] + list(INSTRUCTIONS.values())
    measured = load_split("test", dataclasses.replace(data_cfg, test_size=settings.eval_problems))
    return BuildInputs(examples, corpus, measured)


def library_versions() -> dict[str, str]:
    """The versions of what a build runs on, to the part that promises the same results: Python's minor, the
    libraries' major (the minor below 1.0: tokenizers 0.21.0 -> 0.21)."""

    def compat(v: str) -> str:
        parts = v.split("+")[0].split(".")
        return ".".join(parts[:2]) if parts[0] == "0" else parts[0]

    out = {"python": ".".join(platform.python_version_tuple()[:2])}
    out.update({lib: compat(version(lib)) for lib in ("torch", "transformers", "tokenizers")})
    return out


def _data_hash(inputs: BuildInputs) -> str:
    h = hashlib.sha256()
    for part in (inputs.examples, inputs.corpus, [(p.id, p.question, p.answer) for p in inputs.measured]):
        h.update(json.dumps(part, ensure_ascii=False).encode())
        h.update(b"\0")
    return h.hexdigest()


# data hashes computed in this process, by `what` (the loaded code generated them)
_DATA_HASHES: dict[str, str] = {}


def _memo_data_hash(what: str, cache_dir: Path, make: Callable[[], BuildInputs]) -> str:
    """The hash of `make()`'s data, memoized in this process by `what` and on disk
    (`<cache>/.tiny-data-<hash>`) by `what` and the source of the code that generates it: generating the data
    takes seconds, reading a memo does not, and an edit of that code costs one regeneration, not a build."""
    if what in _DATA_HASHES:
        return _DATA_HASHES[what]
    src = hashlib.sha256(what.encode())
    for pattern in _DATA_SOURCES:
        for path in sorted(_PACKAGE.glob(pattern)):
            src.update(path.name.encode() + b"\0" + path.read_bytes())
    memo = cache_dir / f".tiny-data-{src.hexdigest()[:24]}"
    if memo.is_file():
        value = _DATA_HASHES[what] = memo.read_text().strip()
        return value
    value = _DATA_HASHES[what] = _data_hash(make())
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, memo)
    return value


def build_key(settings: TinySettings, make: Callable[[], BuildInputs], cache_dir: Path, task: Any = None) -> str:
    """The cache key of a build: a hash of its inputs, not of the code that computes them.

    It covers the recipe's revision (RECIPE), the build settings, the task's settings (`task`, toys), the
    library versions that can change the result (`library_versions`) and the data the build consumes
    (`make()`: warm-start examples, tokenizer corpus, measured problems; memoized, see `_memo_data_hash`).
    """
    head = {"recipe": RECIPE, "settings": dataclasses.asdict(settings), "task": task}
    what = json.dumps(head, sort_keys=True, default=str)
    data = _memo_data_hash(what, Path(cache_dir), make)
    full = {**head, "libraries": library_versions(), "data": data}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:10]


def tiny_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the tiny model lives (or will live) in the cache; builds nothing.

    The folder name carries the build's key (`<cache>/tiny-qwen2-v1-<key>`, `build_key`): a hash of what the
    build consumes, so changing a setting or the generated data builds a new model instead of silently reusing
    a stale one, while an edit of the code that leaves them as they are reuses the cached model.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    settings = TinySettings()
    key = build_key(settings, lambda: build_inputs(settings), cache_dir)
    return cache_dir / LEGACY_FOLDERS.get(key, f"{TINY_NAME}-{key}")


def _is_built(path: Path) -> bool:
    return (path / BUILD_INFO).is_file() and (path / "config.json").is_file()


def ensure_built(target: Path, build: Callable[[Path], Any], announce: str | None = None) -> Path:
    """`target`, built first by `build(tmp)` if it is not complete: under a lock of its own
    (`.<name>.lock`, so builds of other keys go on), into a temporary folder renamed into place when complete.

    Leftovers of killed builds of this key are swept; a target folder without build_info.json is not trusted.
    """
    if _is_built(target):
        return target
    cache_dir, prefix = target.parent, f".{target.name}"
    with _file_lock(cache_dir / f"{prefix}.lock"):
        if _is_built(target):  # another process built it while we waited
            return target
        # leftovers of killed builds (we hold the lock: nobody else is building this key)
        for stale in cache_dir.glob(f"{prefix}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # an incomplete folder that is not ours to trust
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}.tmp-", dir=cache_dir))
        try:
            if announce:
                print(announce, file=sys.stderr)
            build(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def ensure_tiny_model(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The directory of the tiny default model, built first if it is not in the cache.

    Args:
        cache_dir: where models are cached; None: `default_cache_dir()`.
        progress: show a progress bar with the time left while building.

    Returns:
        `tiny_model_dir(cache_dir)`, a Hugging Face model folder (config, weights, tokenizer) with
        `build_info.json`.
    """
    target = tiny_model_dir(cache_dir)
    announce = f"Building the tiny default model in {target} (once; about two minutes)" if progress else None
    return ensure_built(target, lambda tmp: build_tiny_model(tmp, TinySettings(), progress=progress), announce)


# ---------------------------------------------------------------------------------------------------
# tokenizer


def train_tokenizer(corpus: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with single-digit tokens, wrapped for transformers (left padding)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        padding_side="left",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


# ---------------------------------------------------------------------------------------------------
# build


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def build_timing(t0: float, t_tok: float, t_sft: float, t_eval: float) -> dict:
    """build_info.json's clock fields of a tiny-model build: when it ended, and the seconds of its phases (data
    and tokenizer, warm start, measurement) from the `time.time()` readings that start each one and end the last."""
    return {
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.time() - t0, 1),
        "timing_s": {
            "data_and_tokenizer": round(t_tok - t0, 1),
            "sft": round(t_sft - t_tok, 1),
            "measure": round(t_eval - t_sft, 1),
        },
    }


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "memrl": getattr(memrl, "__version__", "unknown"),
    }


class _Progress:
    """A rich progress bar with the time left, or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._bar.start()
        return self

    def task(self, description: str, total: int) -> Any:
        return self._bar.add_task(description, total=total, info="") if self._bar else None

    def advance(self, task: Any, n: int = 1, info: str | None = None) -> None:
        if self._bar is not None and task is not None:
            self._bar.update(task, advance=n, **({"info": info} if info is not None else {}))

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def build_tiny_model(out_dir: Path, settings: TinySettings = TinySettings(), progress: bool = True) -> dict:
    """Build the tiny model into `out_dir` (tokenizer, SFT, measurement); returns the build info.

    `ensure_tiny_model` is the entry point; this function does the work in whatever folder it is given.
    """
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    threads = _threads()
    torch.set_num_threads(threads)
    try:
        data_cfg = SyntheticConfig(seed=settings.data_seed)
        inputs = build_inputs(settings)
        examples, corpus = inputs.examples, inputs.corpus
        tokenizer = train_tokenizer(corpus, settings.vocab_size)
        t_tok = time.time()

        torch.manual_seed(settings.seed)
        model = _new_model(tokenizer, settings)
        with _Progress(progress) as bar:
            sft = _sft(model, tokenizer, examples, settings, bar)
            t_sft = time.time()
            model.eval()
            metrics = measure(model, tokenizer, data_cfg, settings, bar, problems=inputs.measured)
        t_eval = time.time()

        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        info = {
            "name": TINY_NAME,
            **build_timing(t0, t_tok, t_sft, t_eval),
            "seed": settings.seed,
            "threads": threads,
            "versions": _versions(),
            "settings": dataclasses.asdict(settings),
            "data": dataclasses.asdict(data_cfg),
            "tokenizer": {
                "type": "byte-level BPE, digits split individually (Digits(individual_digits=True) + ByteLevel)",
                "vocab_size": len(tokenizer),
                "eos_token": EOS_TOKEN,
                "pad_token": EOS_TOKEN,
                "padding_side": "left",
                "trained_on": f"{len(corpus)} texts of the warm-start corpus and the instruction lines",
            },
            "model": {
                "architecture": "Qwen2ForCausalLM",
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "sft": sft,
            "eval": metrics,
        }
        (out_dir / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
        return info
    finally:
        torch.set_num_threads(threads_before)


def _new_model(tokenizer: Any, s: TinySettings) -> Any:
    eos = tokenizer.eos_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers,
        num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_key_value_heads,
        head_dim=s.head_dim,
        max_position_embeddings=s.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, do_sample=False, max_new_tokens=s.max_new_tokens
    )
    return model


def _encode_examples(tokenizer: Any, examples: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example; labels are -100 on the prompt, so the loss is on the completion."""
    eos = tokenizer.eos_token_id
    prompts = sorted({p for p, _ in examples})
    prompt_ids = dict(zip(prompts, tokenizer(prompts, add_special_tokens=False)["input_ids"]))
    completion_ids = tokenizer([c for _, c in examples], add_special_tokens=False)["input_ids"]
    out = []
    for (p, _), c in zip(examples, completion_ids):
        pi = prompt_ids[p]
        out.append((pi + c + [eos], [-100] * len(pi) + c + [eos]))
    return out


def _sft(model: Any, tokenizer: Any, examples: Sequence[tuple[str, str]], s: TinySettings, bar: _Progress) -> dict:
    encoded = _encode_examples(tokenizer, examples)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=s.adam_betas, weight_decay=s.weight_decay)

    def lr_factor(step: int) -> float:
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        t = (step - s.warmup_steps) / max(1, s.sft_steps - s.warmup_steps)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    pad = tokenizer.pad_token_id
    model.train()
    task = bar.task("warm start", s.sft_steps)
    losses: list[float] = []
    curve: list[list[float]] = []
    t0 = time.time()
    for step in range(s.sft_steps):
        batch = encoded[step * s.batch_size : (step + 1) * s.batch_size]
        width = max(len(ids) for ids, _ in batch)
        # right padding and no attention mask: with causal attention no real token sees a pad token
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch])
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 40 == 0:
            curve.append([step + 1, round(sum(losses[-40:]) / 40, 4)])
        bar.advance(task, info=f"loss {loss.item():.3f}")
        if not bar.enabled and (step + 1) % 200 == 0:
            log.info("tiny model warm start: step %d/%d, loss %.3f", step + 1, s.sft_steps, loss.item())
    seconds = time.time() - t0
    tail = losses[-50:]
    return {
        "steps": s.sft_steps,
        "examples": len(encoded),
        "seconds": round(seconds, 1),
        "steps_per_second": round(s.sft_steps / seconds, 2),
        "loss_first": round(losses[0], 4),
        "loss_last50_mean": round(sum(tail) / len(tail), 4),
        "loss_curve": curve,
    }


# ---------------------------------------------------------------------------------------------------
# measurement


def _answer_int(text: str) -> int | None:
    boxed = last_boxed(text)
    if boxed is None:
        return None
    try:
        return int(str(boxed).strip())
    except ValueError:
        return None


def _is_correct(text: str, gold: str | None) -> bool:
    value = _answer_int(text)
    return value is not None and gold is not None and value == int(gold)


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
) -> list[list[str]]:
    """`n` completions per prompt with `model.generate` (left padding, batched); greedy when temperature 0."""
    sample = temperature > 0
    out: list[list[str]] = []
    per_call = max(1, batch_size // n) if sample else batch_size
    with torch.inference_mode():
        for i in range(0, len(prompts), per_call):
            chunk = list(prompts[i : i + per_call])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            kwargs: dict[str, Any] = dict(
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            if sample:
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=n)
            else:
                kwargs.update(do_sample=False)
            gen = model.generate(**enc, **kwargs)
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            k = n if sample else 1
            out.extend(texts[j * k : (j + 1) * k] for j in range(len(chunk)))
    return out


def measure(
    model: Any,
    tokenizer: Any,
    data_cfg: Any,
    s: TinySettings,
    bar: _Progress | None = None,
    problems: Sequence[Any] | None = None,
) -> dict:
    """Greedy and sampled accuracy of the model on the synthetic test split (see the module docstring): its first
    `s.eval_problems` problems of `data_cfg`, or `problems` (the build passes the ones its key covers)."""
    bar = bar or _Progress(False)
    if problems is None:
        problems = load_split("test", dataclasses.replace(data_cfg, test_size=s.eval_problems))
    prompts = [format_prompt(p, style="plain") for p in problems]
    task = bar.task("measuring", 3 * len(problems))

    greedy: list[str] = []
    for i in range(0, len(prompts), 64):
        greedy += [
            g[0] for g in generate_completions(model, tokenizer, prompts[i : i + 64], max_new_tokens=s.max_new_tokens)
        ]
        bar.advance(task, len(prompts[i : i + 64]))
    torch.manual_seed(s.seed)
    samples: list[list[str]] = []
    for i in range(0, len(prompts), 32):
        samples += generate_completions(
            model,
            tokenizer,
            prompts[i : i + 32],
            n=s.eval_samples,
            temperature=s.eval_temperature,
            max_new_tokens=s.max_new_tokens,
            batch_size=256,
        )
        bar.advance(task, len(prompts[i : i + 32]))

    # the careful procedure on its own: greedy decoding after the prompt and the careful form's first word
    marker = FORM_MARKERS["careful"]
    forced: list[str] = []
    for i in range(0, len(prompts), 64):
        chunk = [pr + marker for pr in prompts[i : i + 64]]
        forced += [
            marker + g[0] for g in generate_completions(model, tokenizer, chunk, max_new_tokens=s.max_new_tokens)
        ]
        bar.advance(task, len(chunk))

    g_ok = [_is_correct(t, p.answer) for t, p in zip(greedy, problems)]
    f_ok = [_is_correct(t, p.answer) for t, p in zip(forced, problems)]
    s_ok = [[_is_correct(t, p.answer) for t in group] for group, p in zip(samples, problems)]

    def mean(xs: Sequence[float]) -> float | None:
        return round(sum(xs) / len(xs), 4) if xs else None

    def by(key: str) -> dict:
        groups: dict[Any, list[int]] = {}
        for i, p in enumerate(problems):
            groups.setdefault(p.metadata[key], []).append(i)
        return {
            str(k): {
                "n": len(ix),
                "greedy_accuracy": mean([g_ok[i] for i in ix]),
                "sample_accuracy": mean([c for i in ix for c in s_ok[i]]),
                f"pass@{s.eval_samples}": mean([any(s_ok[i]) for i in ix]),
                "careful_share": mean([classify_form(t) == "careful" for i in ix for t in samples[i]]),
                "careful_forced_greedy_accuracy": mean([f_ok[i] for i in ix]),
                "greedy_form": _form_counts([greedy[i] for i in ix]),
            }
            for k, ix in groups.items()
        }

    flat = [(t, c) for group, oks in zip(samples, s_ok) for t, c in zip(group, oks)]
    forms = {f: [c for t, c in flat if classify_form(t) == f] for f in FORMS}
    shortcut = [c for f in SHORTCUT_FORMS for c in forms[f]]
    n_first = min(64, len(problems))
    return {
        "split": "test",
        "n_problems": len(problems),
        "greedy": {
            "accuracy": mean(g_ok),
            f"accuracy_first{n_first}": mean(g_ok[:n_first]),
            "forms": _form_counts(greedy),
            # greedy decoding forced onto the careful path (prompt + "Careful:"): the careful procedure's accuracy
            "careful_forced_accuracy": mean(f_ok),
        },
        "sampled": {
            "temperature": s.eval_temperature,
            "n": s.eval_samples,
            "mean_accuracy": mean([c for oks in s_ok for c in oks]),
            f"pass@{s.eval_samples}": mean([any(oks) for oks in s_ok]),
            "mixed_group_fraction": mean([0 < sum(oks) < len(oks) for oks in s_ok]),
            "form_share": {f: mean([classify_form(t) == f for t, _ in flat]) for f in FORMS},
            "unknown_form_share": mean([classify_form(t) is None for t, _ in flat]),
            "careful_form_accuracy": mean(forms["careful"]),
            "shortcut_form_accuracy": mean(shortcut),
        },
        "per_family": by("family"),
        "per_level": by("level"),
        "greedy_correct": {p.id: ok for p, ok in zip(problems, g_ok)},
    }


def _form_counts(texts: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in texts:
        key = classify_form(t) or "other"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
