"""Typed schema behind every config group.

Each group of `conf/` (model, data, rollout, eval, grading, logger, paths) has a dataclass here. The
top-level app schemas (`EvalAppConfig`, ...) are registered in Hydra's ConfigStore and named first in
the defaults list of `conf/<app>.yaml`, so every YAML file and every command-line override is merged
onto a typed, struct-mode node: a misspelt key fails at compose time with the key's name, and a
choice field (an Enum) lists its valid values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Source(str, Enum):
    """Where a dataset comes from."""

    bundled = "bundled"  # a benchmark shipped in data/
    local = "local"  # any local JSONL or Parquet file, with a field mapping
    hub = "hub"  # a Hugging Face hub dataset (needs the network)
    synthetic = "synthetic"  # the seeded arithmetic task of the embedded default


class Domain(str, Enum):
    """How answers of a dataset are graded."""

    math = "math"
    choice = "choice"
    code = "code"
    # local and hub files only: each record's `domain` field (math, choice or code), for mixtures
    mixed = "mixed"


class PromptStyle(str, Enum):
    """How a question becomes a prompt: `chat` uses the tokenizer's chat template, `plain` does not."""

    auto = "auto"  # chat when the tokenizer has a chat template, else plain
    plain = "plain"
    chat = "chat"


class AnswerFormat(str, Enum):
    """Where the model is asked to put its final answer."""

    boxed = "boxed"  # \boxed{...}
    hash = "hash"  # #### ...


@dataclass
class ModelConfig:
    # "tiny" (the embedded default, built on first use), a local Hugging Face model directory,
    # a hub id (needs the network), or a memrl run / checkpoint directory
    name_or_path: str = "tiny"
    # auto: bfloat16 on GPUs that support it, else float32
    dtype: str = "auto"
    # auto: cuda when available, else cpu
    device: str = "auto"
    prompt_style: PromptStyle = PromptStyle.auto
    # system message for chat-style prompts; None: no system message
    system_prompt: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None


@dataclass
class FieldMap:
    """Which record fields hold the id, question and answer (for local and hub datasets)."""

    # None: the row number becomes the id
    id: str | None = "id"
    question: str = "question"
    # None: the dataset has no gold answers (code is graded by tests)
    answer: str | None = "answer"


@dataclass
class DatasetSpec:
    # name used in result keys and file names
    name: str = MISSING
    source: Source = Source.bundled
    # bundled: the folder under data/ (default: name); local: a .jsonl/.parquet file; hub: the dataset id
    path: str | None = None
    split: str = "test"
    # hub dataset configuration name
    subset: str | None = None
    domain: Domain = Domain.math
    fields: FieldMap = field(default_factory=FieldMap)
    # keep only the first `limit` problems (None: all); eval.limit applies on top
    limit: int | None = None


@dataclass
class SyntheticConfig:
    """The seeded synthetic tasks: the arithmetic task of the embedded default, and the toys (docs/toys.md)."""

    seed: int = 1234
    train_size: int = 4000
    val_size: int = 200
    test_size: int = 200
    # problem families (see memrl.data.synthetic.FAMILIES)
    families: list[str] = field(default_factory=lambda: ["add", "sub", "mul", "mix"])
    levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    # which task (docs/toys.md): arithmetic (the default above), rule_tags (MemReward: arbitrary tags each
    # hiding one rule; conf/data/rule_tags.yaml) or meds_strategies (MEDS: one dominant wrong strategy per
    # family; conf/data/meds_strategies.yaml)
    task: str = "arithmetic"
    # rule_tags: how many tags (each hides one of memrl.data.toys.RULES)
    n_tags: int = 300
    # rule_tags: the hidden rule's share in the warm-start data (three distractor rules share the rest)
    rule_right_share: float = 0.4
    # rule_tags control: fraction of tags on which a wrong rule is the warm start's plurality (0.5: the control)
    wrong_plurality_tags: float = 0.0


@dataclass
class DataConfig:
    # the benchmarks `memrl eval` runs, in order (and `memrl train`'s final evaluation)
    eval_sets: list[DatasetSpec] = field(default_factory=list)
    # `memrl train`: the training queries and the validation split of periodic evaluation (None: none)
    train_set: DatasetSpec | None = None
    val_set: DatasetSpec | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    answer_format: AnswerFormat = AnswerFormat.boxed


@dataclass
class RolloutConfig:
    # hf: transformers generate (CPU and GPU); vllm: an in-process vLLM engine (rollout=vllm; needs vllm installed)
    engine: str = "hf"
    # `memrl train`: rollouts per prompt (the GRPO group size)
    n: int = 8
    # prompts per generate call (each expands to n sequences)
    batch_size: int = 64
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    # 0: no top-k filtering
    top_k: int = 0
    # generation stops after any of these strings (the string is kept in the text)
    stop: list[str] = field(default_factory=list)
    # vLLM only (conf/rollout/vllm.yaml): share of GPU memory for weights + KV cache (on a CPU: of RAM)
    gpu_memory_utilization: float = 0.5
    # vLLM only: KV-cache size in GiB, overrides gpu_memory_utilization for it (null: GPU from the
    # utilization, CPU 1 GiB)
    kv_cache_gb: float | None = None
    # vLLM only: no CUDA graphs / torch.compile (faster start, slower decoding)
    enforce_eager: bool = False
    # vLLM only: longest prompt + completion (null: the model's maximum)
    max_model_len: int | None = None
    # vLLM only: weight dtype (auto: vLLM's choice, bfloat16 for a float32 checkpoint; float32 / bfloat16 / float16)
    dtype: str = "auto"
    # vLLM only: release the engine's memory during the policy update (level-2 sleep; CUDA/ROCm/XPU only)
    sleep: bool = True


@dataclass
class EvalConfig:
    # greedy decoding accuracy
    greedy: bool = True
    # sampled completions per problem for pass@k and mean@n (0: no sampling)
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    # None: rollout.max_new_tokens
    max_new_tokens: int | None = None
    # at most this many problems per benchmark (None: all)
    limit: int | None = None
    # k values of pass@k (None: 1, 2, 4, ... up to n); every k must be <= n
    ks: list[int] | None = None
    plot: bool = True


@dataclass
class SandboxConfig:
    # code programs run at once, each in its own sandbox (0: one per CPU)
    workers: int = 0
    # auto (bwrap where it works, else rlimits; logged) | bwrap (bubblewrap namespaces, read-only root,
    # seccomp) | rlimits (resource limits, seccomp and Landlock only; see docs/code-sandbox.md)
    isolation: str = "auto"
    # interpreter of the sandbox ("": the one running memrl); checked before any grading. As root the
    # rlimits mode runs programs as nobody, who must be able to read it (e.g. /usr/bin/python3)
    python: str = ""
    # wall-clock seconds per program (the whole run is killed after)
    timeout_s: float = 10.0
    # CPU seconds per program
    cpu_s: int = 5
    # address space per program (and for checking its values), in MiB
    memory_mb: int = 1024
    # open file descriptors per program
    open_files: int = 64
    # largest file a program may write, and the total size of its /tmp (bwrap), in MiB
    file_mb: int = 16
    # stdout + stderr kept per program, in KiB
    output_kb: int = 64


@dataclass
class GradingConfig:
    # worker processes for math grading (0: grade in this process)
    num_workers: int = 2
    # hard time limit per answer, in seconds
    timeout_s: float = 5.0
    # answer extraction order: the first format found in a completion wins
    answer_formats: list[AnswerFormat] = field(default_factory=lambda: [AnswerFormat.boxed, AnswerFormat.hash])
    # code completions run against their tests in this sandbox
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)


@dataclass
class LoggerConfig:
    # none | wandb
    backend: str = "none"
    project: str = "memrl"
    # offline unless the user opts in with logger.mode=online
    mode: str = "offline"
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    # the folder that holds the bundled benchmarks
    data_dir: str = MISSING
    # where run directories go
    output_root: str = "outputs"
    # cache of built artifacts (the tiny model); MEMRL_CACHE overrides the default
    cache_dir: str = MISSING
    # this run's directory (set by Hydra)
    output_dir: str = MISSING


@dataclass
class FilterGroupsConfig:
    """DAPO dynamic sampling: drop groups whose binary outcomes are all equal, generate more prompts."""

    enable: bool = False
    # always the binary outcome (acc), never a shaped score: shaped all-fail groups would survive
    metric: str = "acc"
    # generation batches per step at most (<= 0: no limit)
    max_num_gen_batches: int = 10


@dataclass
class AlgoConfig:
    """Advantage estimator and policy loss (verl's knob names)."""

    name: str = "grpo"
    norm_adv_by_std_in_grpo: bool = True
    # MEDS' entropy-advantage baseline: A + min(coef * H.detach(), |A| * cap_ratio)
    use_entropy_advantage: bool = False
    entropy_advantage_coef: float = 0.4
    entropy_advantage_cap_ratio: float = 0.5
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    # dual-clip constant for negative advantages (None: off)
    clip_ratio_c: float | None = 3.0
    # token-mean (DAPO) | seq-mean-token-mean (GRPO) | seq-mean-token-sum | seq-mean-token-sum-norm (Dr.GRPO)
    loss_agg_mode: str = "token-mean"
    # KL to the reference model, in the loss; no reference model is loaded unless this is on with coef > 0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.0
    # low_var_kl (k3) | kl (k1) | mse (k2) | abs (verl's names); a trailing "+" (k3+, low_var_kl+, k1+, ...)
    # keeps that estimator's value with k2's gradient (verl's straight-through variant)
    kl_loss_type: str = "low_var_kl"
    entropy_coeff: float = 0.0
    filter_groups: FilterGroupsConfig = field(default_factory=FilterGroupsConfig)
    # zero the loss of completions that hit the length limit
    mask_truncated_completions: bool = False


@dataclass
class OverlongBufferConfig:
    """DAPO's soft overlong punishment (verl: reward_model.overlong_buffer)."""

    enable: bool = False
    len: int = 16
    penalty_factor: float = 1.0


@dataclass
class MemRewardWarmupConfig:
    """Rollouts of the initial policy that fill the experience memory (docs/methods.md#experience-memory)."""

    # rollouts per query; the paper: 8 at temperature 1.5, top_p 0.95, 1024 tokens
    n: int = 8
    temperature: float = 1.5
    top_p: float = 0.95
    # None: rollout.max_new_tokens
    max_new_tokens: int | None = None
    seed: int = 42


@dataclass
class GNNConfig:
    """The reward GNN and its training (docs/methods.md#reward-gnn: GATv2, 2 layers, 512 hidden, 4 heads, Adam 1e-3)."""

    hidden: int = 512
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    lr: float = 1.0e-3
    max_epochs: int = 150
    # validate every eval_every epochs; stop after `patience` checks without a better validation F1
    eval_every: int = 5
    patience: int = 4
    # no early stop before this epoch: with few correct rollouts the validation F1 is 0 for tens of epochs
    # while the model still learns (the released pipeline has no such floor, i.e. 0)
    min_epochs: int = 100
    # best-of-N restarts (the released code: 40), chosen on validation by select_by
    restarts: int = 1
    # fpr: lowest validation false-positive rate (the released code); f1: highest validation F1
    select_by: str = "fpr"
    seed: int = 42


@dataclass
class MemRewardConfig:
    """MemReward: the experience memory, its graph, the GNN, and how predictions become rewards."""

    warmup: MemRewardWarmupConfig = field(default_factory=MemRewardWarmupConfig)
    gnn: GNNConfig = field(default_factory=GNNConfig)
    # GNN validation queries (early stopping and selection): split = data.val_set, whose labels are counted on
    # top of the budget (the released code); labelled = carved out of the labelled training queries
    val_source: str = "split"
    # val_source=labelled: the share of the labelled queries kept for validation
    val_fraction: float = 0.2
    # val_source=split: at most this many validation queries (None: all)
    val_limit: int | None = 200
    # unlabelled training queries rolled out for the GNN report only (their ground truth is read for that
    # report's metrics, never by the reward); 0: no report on unlabelled queries
    report_queries: int = 200
    # query-query edges: each query's k most similar labelled queries
    k: int = 7
    # memory_to_query: a query receives messages from its labelled neighbours (the paper);
    # query_to_memory: the released code's direction (docs/methods.md#message-direction)
    direction: str = "memory_to_query"
    # think-think edges inside a group (0: none, as in the released pipeline)
    think_k: int = 0
    # sentence encoder: None = the packaged all-MiniLM-L6-v2 (offline)
    encoder_path: str | None = None
    encoder_batch_size: int = 64
    # hard: reward 1[p > threshold] (the paper); soft: the probability p
    reward_mode: str = "hard"
    # which model of gnn/ scores unlabelled rollouts online: gnn (the paper) | homogeneous | no_think | mlp (the
    # paper's ablations; trained by `memrl gnn` with the baselines, or alone when baselines=false)
    reward_model: str = "gnn"
    threshold: float = 0.5
    # [low, high]: a group with any prediction inside the band gets no reward signal (not trained on)
    abstain_band: list[float] | None = None
    # also train the MLP, homogeneous-graph and no-think-node ablations for the GNN report
    baselines: bool = True
    # another run directory whose finished warm-up (memory/, graph/, gnn/) this run reuses instead of building
    # its own: the paper's out-of-domain runs reuse the in-domain memory and GNN (copied in, so the run
    # directory stays complete; its labels count as consumed)
    warmup_from: str | None = None
    # beyond the paper (whose memory is frozen): add the labelled groups of each training step to the memory
    # and fine-tune the GNN on the grown memory every refresh_every steps (early stopping on the same
    # validation queries); no label beyond those the run reads anyway
    grow_memory: bool = False
    refresh_every: int = 10
    # a refresh fine-tunes the current GNN for at most this many epochs (early stopping from the start)
    refresh_epochs: int = 20


@dataclass
class RewardConfig:
    """Where rewards come from and how many ground-truth labels a run may read."""

    # oracle: every query labelled; partial: only label_ratio of them, and only those are trained on (R1-p);
    # memreward: ground truth for labelled queries, GNN-predicted rewards for the others
    name: str = "oracle"
    label_ratio: float = 1.0
    # seeds the nested label split (queries labelled at 0.1 are among those labelled at 0.2)
    label_seed: int = 42
    overlong_buffer: OverlongBufferConfig = field(default_factory=OverlongBufferConfig)
    memreward: MemRewardConfig = field(default_factory=MemRewardConfig)


@dataclass
class MedsConfig:
    """MEDS reward shaping (docs/methods.md#meds): penalise wrong rollouts that repeat a prompt's past errors."""

    # off by default; conf/meds/: disabled | monitor (memory and diagnostics, no penalty) | enabled
    enable: bool = False
    # alpha * min(log(cluster size + 1), cap): alpha 0.1, C 2 (beta = 0.2) as in the released code
    penalty_coef: float = 0.1
    penalty_cap: float = 2.0
    # wrong (the paper) | right (the code's sign-preserving shrink) | both | none (memory without penalty)
    penalty_target: str = "wrong"
    # the feature is read at the last occurrence of any of these (the token holding its last character)
    anchor_patterns: list[str] = field(default_factory=lambda: ["\\boxed{"])
    # layers kept, counted from the last (null: half of them, the paper's 14 of 28; 0: all)
    last_n_layers: int | None = None
    # differences between consecutive layers (all L - 1 of them, as np.diff in the released code), of which the
    # last last_n_layers are kept, instead of the values
    layer_diff: bool = False
    # apply the final norm to every layer (Hugging Face's last hidden state is already normed: false = the code)
    final_norm: bool = False
    # kNN assignment (cosine) over the last HDBSCAN labels
    k: int = 3
    # hdbscan | single (one cluster per prompt: a count-only penalty, the paper's ablation)
    cluster_method: str = "hdbscan"
    min_cluster_size: int = 2
    min_samples: int = 1
    # count (the code: a noise vote counts the stored noise points) | exclude (vote among non-noise only)
    noise: str = "count"
    # keep the newest N vectors per (prompt, correctness) memory (null: unbounded, as the paper)
    max_per_prompt: int | None = None


@dataclass
class TrainerConfig:
    """The RL loop: batch sizes, optimiser, schedule, evaluation and checkpoints."""

    total_steps: int = 60
    # when set, overrides total_steps: passes over the queries the run may train on (partial: the labelled
    # ones only, so a label-limited baseline gets proportionally fewer steps, as the papers' epoch budgets)
    total_epochs: float | None = None
    # prompts per RL step (each with rollout.n rollouts)
    train_batch_size: int = 16
    # prompts per generation batch (dynamic sampling may need several; None: train_batch_size)
    gen_batch_size: int | None = None
    # prompts per optimiser step: train_batch_size / ppo_mini_batch_size optimiser steps per RL step
    ppo_mini_batch_size: int = 16
    ppo_epochs: int = 1
    # sequences per forward/backward (gradient accumulation inside a mini-batch)
    micro_batch_size: int = 64
    lr: float = 1e-6
    lr_warmup_steps: int = 0
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    # bf16 autocast on a GPU (parameters and optimiser stay float32); float32 everywhere on CPU
    compute_dtype: str = "auto"
    gradient_checkpointing: bool = False
    # validation pass@k every test_freq steps (0: never), and before training
    test_freq: int = 0
    val_before_train: bool = False
    val_n: int = 4
    val_limit: int | None = None
    # checkpoint every save_freq steps (0: only at the end)
    save_freq: int = 0
    # keep the newest max_ckpt_to_keep checkpoints (None: all)
    max_ckpt_to_keep: int | None = 2
    # which policy the final evaluation tests: last (the last step) | best_val (the validation step with the best
    # greedy accuracy, MemReward's checkpoint selection; needs test_freq > 0 and data.val_set; its checkpoint
    # is kept whatever max_ckpt_to_keep says)
    final_checkpoint: str = "last"
    # auto: continue from this run directory's train/latest when there is one, and reuse its MemReward warm-up;
    # refused when they were built with another result-changing config (more total_steps continue a finished run;
    # docs/run-directory.md lists what is compared). disable (`--force`): start over: train/ and eval/ are removed,
    # and warm-up parts built with another config are rebuilt
    resume: str = "auto"
    # evaluate the final policy on data.eval_sets (greedy + pass@k) and write eval/ like `memrl eval`
    final_eval: bool = True
    # with final_eval: also evaluate the initial policy first (false: skip it, e.g. in a sweep whose jobs all
    # start from the same model; `memrl eval` measures it once)
    initial_eval: bool = True
    progress: bool = True


@dataclass
class EvalAppConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # names the run directory: outputs/<task_name>/<date_time>
    task_name: str = "eval"
    seed: int = 0


@dataclass
class TrainAppConfig(EvalAppConfig):
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    meds: MedsConfig = field(default_factory=MedsConfig)
    task_name: str = "train"


def register_configs() -> None:
    """Register the app schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="eval_schema", node=EvalAppConfig)
    cs.store(name="train_schema", node=TrainAppConfig)


# ---------------------------------------------------------------------------------------------------
# dist: scale-out on FSDP2 + DCP + torchrun (memrl/dist, docs/scaling.md). Not yet part of the train
# app's defaults: the trainer is wired to it in a later step.


class DistStrategy(str, Enum):
    """How the policy is trained across processes."""

    none = "none"  # one process, one device (today's behaviour)
    fsdp2 = "fsdp2"  # torch's fully_shard over all torchrun processes (HSDP with mesh.replicate > 1)


class DistBackend(str, Enum):
    """The torch.distributed backend of the process group."""

    auto = "auto"  # nccl when CUDA is available, else gloo
    nccl = "nccl"
    gloo = "gloo"


class DistDtype(str, Enum):
    """A dtype of FSDP2's mixed-precision policy."""

    auto = "auto"  # param_dtype: bfloat16 on a GPU that supports it, else float32; reduce_dtype: float32
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class DistMeshConfig:
    """The device mesh: replicate x shard processes (HSDP: replicate across nodes, shard inside one)."""

    # replicas of the sharded model (1: plain FSDP over every process)
    replicate: int = 1
    # processes one copy of the model is sharded over (None: world size / replicate)
    shard: int | None = None


@dataclass
class DistMixedPrecisionConfig:
    """FSDP2's MixedPrecisionPolicy; the sharded parameters and the optimiser state stay float32."""

    # dtype of the gathered parameters, i.e. of forward and backward compute
    param_dtype: DistDtype = DistDtype.auto
    # dtype of the gradient reduce-scatter / all-reduce
    reduce_dtype: DistDtype = DistDtype.auto


@dataclass
class DistConfig:
    """Distributed training: launched by torchrun (docs/scaling.md)."""

    strategy: DistStrategy = DistStrategy.none
    backend: DistBackend = DistBackend.auto
    mesh: DistMeshConfig = field(default_factory=DistMeshConfig)
    mixed_precision: DistMixedPrecisionConfig = field(default_factory=DistMixedPrecisionConfig)
    # free each decoder layer's gathered parameters after its forward (less memory, one more all-gather)
    reshard_after_forward: bool = True
    # keep sharded parameters, gradients and optimiser state in CPU memory (FSDP2's CPUOffloadPolicy)
    cpu_offload: bool = False
    # seconds a collective may wait before every rank fails (a dead or stuck rank ends the run, never hangs it)
    timeout_s: int = 600
