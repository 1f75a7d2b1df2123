"""Typed schema behind every config group: the one definition of every setting, its help text beside its default.

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
from omegaconf import MISSING, DictConfig, OmegaConf


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
    name_or_path: str = "tiny"
    """"tiny" (the tiny model of data.synthetic.task, built on first use and cached: the embedded default for the
    arithmetic task, the toys' own models for rule_tags and meds_strategies, docs/toys.md), a local Hugging Face
    model directory, a hub id (needs the network), or a memrl run / checkpoint directory"""
    tiny_layers: int | None = None
    """name_or_path=tiny: decoder layers of the tiny model (None: 4; another depth builds its own model, e.g. 8
    for a 4-value MEDS feature, docs/toys.md)"""
    dtype: str = "auto"
    """auto: bfloat16 on GPUs that support it, else float32"""
    device: str = "auto"
    """auto: cuda when available, else cpu"""
    prompt_style: PromptStyle = PromptStyle.auto
    """auto: chat when the tokenizer has a chat template, else plain; chat: the tokenizer's chat template;
    plain: the bare text"""
    system_prompt: str | None = None
    """system message for chat-style prompts; None: no system message"""
    trust_remote_code: bool = False
    """allow the model repository's own Python code (transformers' trust_remote_code)"""
    revision: str | None = None
    """hub revision (branch, tag or commit) of a hub model (None: the default branch)"""


@dataclass
class FieldMap:
    """Which record fields hold the id, question and answer (for local and hub datasets)."""

    id: str | None = "id"
    """None: the row number becomes the id"""
    question: str = "question"
    """the field that holds the question"""
    answer: str | None = "answer"
    """None: the dataset has no gold answers (code is graded by tests)"""


@dataclass
class DatasetSpec:
    name: str = MISSING
    """name used in result keys and file names"""
    source: Source = Source.bundled
    """bundled (data/) | local (a JSONL or Parquet file) | hub (a Hugging Face dataset; needs the network) |
    synthetic"""
    path: str | None = None
    """bundled: the folder under data/ (default: name); local: a .jsonl/.parquet file; hub: the dataset id"""
    split: str = "test"
    """the split to load (the synthetic task: train, validation, test)"""
    subset: str | None = None
    """hub dataset configuration name"""
    domain: Domain = Domain.math
    """how answers are graded: math | choice | code | mixed (each record's own `domain` field)"""
    fields: FieldMap = field(default_factory=FieldMap)
    """which record fields hold the id, question and answer (local and hub datasets)"""
    limit: int | None = None
    """keep only the first `limit` problems (None: all); eval.limit applies on top"""


@dataclass
class SyntheticConfig:
    """The seeded synthetic tasks: the arithmetic task of the embedded default, and the toys (docs/toys.md)."""

    seed: int = 1234
    """seeds which problem lands in which split and its numbers"""
    train_size: int = 4000
    """problems in the train split"""
    val_size: int = 200
    """problems in the validation split"""
    test_size: int = 200
    """problems in the test split"""
    families: list[str] = field(default_factory=lambda: ["add", "sub", "mul", "mix"])
    """problem families (see memrl.data.synthetic.FAMILIES)"""
    levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    """difficulty levels (more operands and larger numbers)"""
    task: str = "arithmetic"
    """which task (docs/toys.md): arithmetic (the default above), rule_tags (MemReward: arbitrary tags each hiding
    one rule; conf/data/rule_tags.yaml) or meds_strategies (MEDS: one dominant wrong strategy per family;
    conf/data/meds_strategies.yaml)"""
    n_tags: int = 300
    """rule_tags: how many tags (each hides one of memrl.data.toys.RULES)"""
    tag_style: str = "codes"
    """rule_tags: codes (T0, T1, ...: each tag's rule drawn alone, nothing links two tags) | words (words of six
    families, birds, fruits, ...: a family's tags hide the same rule, a likeness a sentence encoder sees and the
    policy's fresh one-token tags do not; at most 150 tags; docs/toys.md#rule_tags)"""
    rule_right_share: float = 0.4
    """rule_tags: the hidden rule's share in the warm-start data (three distractor rules share the rest)"""
    wrong_plurality_tags: float = 0.0
    """rule_tags control: fraction of tags on which a wrong rule is the warm start's plurality (0.5: the control)"""


@dataclass
class DataConfig:
    eval_sets: list[DatasetSpec] = field(default_factory=list)
    """the benchmarks `memrl eval` runs, in order (and `memrl train`'s final evaluation)"""
    train_set: DatasetSpec | None = None
    """`memrl train`: the training queries and the validation split of periodic evaluation (None: none)"""
    val_set: DatasetSpec | None = None
    """`memrl train`: the validation split of periodic evaluation (None: no validation)"""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """the seeded arithmetic task (source: synthetic)"""
    answer_format: AnswerFormat = AnswerFormat.boxed
    """where the prompt asks for the final answer: boxed (\\boxed{...}) | hash (#### ...)"""


@dataclass
class RolloutConfig:
    engine: str = "hf"
    """hf: transformers generate (CPU and GPU); vllm: an in-process vLLM engine (rollout=vllm; needs vllm
    installed)"""
    n: int = 8
    """`memrl train`: rollouts per prompt (the GRPO group size)"""
    batch_size: int = 64
    """prompts per generate call (each expands to n sequences)"""
    max_new_tokens: int = 64
    """longest completion, in tokens (also the length of DAPO's overlong buffer and Dr.GRPO's norm)"""
    temperature: float = 1.0
    """sampling temperature of the training rollouts (also the temperature of the policy's log-probs)"""
    top_p: float = 1.0
    """nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1.0: off)"""
    top_k: int = 0
    """0: no top-k filtering"""
    stop: list[str] = field(default_factory=list)
    """generation stops after any of these strings (the string is kept in the text)"""
    gpu_memory_utilization: float = 0.5
    """vLLM only (conf/rollout/vllm.yaml): share of GPU memory for weights + KV cache (on a CPU: of RAM)"""
    kv_cache_gb: float | None = None
    """vLLM only: KV-cache size in GiB, overrides gpu_memory_utilization for it (null: GPU from the utilization,
    CPU 1 GiB)"""
    enforce_eager: bool = False
    """vLLM only: no CUDA graphs / torch.compile (faster start, slower decoding)"""
    max_model_len: int | None = None
    """vLLM only: longest prompt + completion (null: the model's maximum)"""
    dtype: str = "auto"
    """vLLM only: weight dtype (auto: vLLM's choice, bfloat16 for a float32 checkpoint; float32 / bfloat16 /
    float16)"""
    sleep: bool = True
    """vLLM only: release the engine's memory during the policy update (level-2 sleep; CUDA/ROCm/XPU only)"""
    tensor_parallel_size: int = 1
    """vLLM only: GPUs one engine spans, for a model one GPU cannot hold (> 1 needs torchrun with dist=fsdp2;
    consecutive ranks form one engine; must divide the number of processes)"""


@dataclass
class EvalConfig:
    greedy: bool = True
    """greedy decoding accuracy"""
    n: int = 8
    """sampled completions per problem for pass@k and mean@n (0: no sampling)"""
    temperature: float = 1.0
    """sampling temperature of the pass@k completions"""
    top_p: float = 1.0
    """nucleus sampling of the pass@k completions (1.0: off)"""
    max_new_tokens: int | None = None
    """None: rollout.max_new_tokens"""
    limit: int | None = None
    """at most this many problems per benchmark (None: all)"""
    ks: list[int] | None = None
    """k values of pass@k (None: 1, 2, 4, ... up to n); every k must be <= n"""
    plot: bool = True
    """write the pass@k plot (eval/pass_at_k_<ts>.png)"""


@dataclass
class SandboxConfig:
    workers: int = 0
    """code programs run at once, each in its own sandbox (0: one per CPU)"""
    isolation: str = "auto"
    """auto (bwrap where it works, else rlimits; logged) | bwrap (bubblewrap namespaces, read-only root, seccomp) |
    rlimits (resource limits, seccomp and Landlock only; see docs/code-sandbox.md)"""
    python: str = ""
    """interpreter of the sandbox ("": the one running memrl); checked before any grading. As root the rlimits mode
    runs programs as nobody, who must be able to read it (e.g. /usr/bin/python3)"""
    timeout_s: float = 10.0
    """wall-clock seconds per program (the whole run is killed after)"""
    cpu_s: int = 5
    """CPU seconds per program"""
    memory_mb: int = 1024
    """address space per program (and for checking its values), in MiB"""
    open_files: int = 64
    """open file descriptors per program"""
    file_mb: int = 16
    """largest file a program may write, and the total size of its /tmp (bwrap), in MiB"""
    output_kb: int = 64
    """stdout + stderr kept per program, in KiB"""


@dataclass
class GradingConfig:
    num_workers: int = 2
    """worker processes for math grading (0: grade in this process)"""
    timeout_s: float = 5.0
    """hard time limit per answer, in seconds"""
    answer_formats: list[AnswerFormat] = field(default_factory=lambda: [AnswerFormat.boxed, AnswerFormat.hash])
    """answer extraction order: the first format found in a completion wins"""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """code completions run against their tests in this sandbox"""


@dataclass
class LoggerConfig:
    backend: str = "none"
    """none | wandb"""
    project: str = "memrl"
    """the wandb project"""
    mode: str = "offline"
    """offline unless the user opts in with logger.mode=online"""
    tags: list[str] = field(default_factory=list)
    """wandb tags of the run"""


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    """the folder that holds the bundled benchmarks"""
    output_root: str = "outputs"
    """where run directories go"""
    cache_dir: str = MISSING
    """cache of built artifacts (the tiny model); MEMRL_CACHE overrides the default"""
    output_dir: str = MISSING
    """this run's directory (set by Hydra)"""


@dataclass
class FilterGroupsConfig:
    """DAPO dynamic sampling: drop groups whose binary outcomes are all equal, generate more prompts."""

    enable: bool = False
    """keep only groups with mixed outcomes, generating more batches until train_batch_size groups qualify"""
    metric: str = "acc"
    """always the binary outcome (acc), never a shaped score: shaped all-fail groups would survive"""
    max_num_gen_batches: int = 10
    """generation batches per step at most (<= 0: no limit)"""


@dataclass
class AlgoConfig:
    """Advantage estimator and policy loss (verl's knob names)."""

    adv_estimator: str = "grpo"
    """the registered advantage estimator (memrl.rl.core_algos.ADV_ESTIMATORS): grpo | dr_grpo (no std) |
    grpo_entropy (MEDS' entropy-advantage baseline: A + min(coef * H.detach(), |A| * cap_ratio) per token); a
    plugin module registers more (plugins=[my_module])"""
    norm_adv_by_std_in_grpo: bool = True
    """grpo and grpo_entropy: divide by the group's std (false: Dr.GRPO's unscaled s - mean)"""
    entropy_advantage_coef: float = 0.4
    """grpo_entropy: the entropy bonus is coef * H.detach() (MEDS: 0.4) ..."""
    entropy_advantage_cap_ratio: float = 0.5
    """grpo_entropy: ... capped at cap_ratio * |A|, so it never flips a token's advantage (MEDS: 0.5)"""
    policy_loss: str = "vanilla"
    """the registered policy loss (memrl.rl.core_algos.POLICY_LOSSES): vanilla = PPO's clipped surrogate with
    clip-higher and dual-clip"""
    clip_ratio_low: float = 0.2
    """vanilla: the ratio's lower clip, 1 - clip_ratio_low"""
    clip_ratio_high: float = 0.2
    """vanilla: the ratio's upper clip, 1 + clip_ratio_high (DAPO's clip-higher: 0.28)"""
    clip_ratio_c: float | None = 3.0
    """dual-clip constant for negative advantages (None: off)"""
    loss_agg_mode: str = "token-mean"
    """token-mean (DAPO) | seq-mean-token-mean (GRPO) | seq-mean-token-sum | seq-mean-token-sum-norm (Dr.GRPO)"""
    use_kl_loss: bool = False
    """KL to the reference model, in the loss; no reference model is loaded unless this is on with coef > 0"""
    kl_loss_coef: float = 0.0
    """(with use_kl_loss) the weight of the KL term in the loss"""
    kl_loss_type: str = "low_var_kl"
    """the registered KL estimator (memrl.rl.core_algos.KL_ESTIMATORS): low_var_kl (k3) | kl (k1) | mse (k2) | abs
    (verl's names); a trailing "+" (k3+, low_var_kl+, k1+, ...) keeps that estimator's value with k2's gradient
    (verl's straight-through variant)"""
    entropy_coeff: float = 0.0
    """weight of an entropy bonus in the loss (0: none; the entropy is still logged)"""
    filter_groups: FilterGroupsConfig = field(default_factory=FilterGroupsConfig)
    """DAPO's dynamic sampling"""
    mask_truncated_completions: bool = False
    """zero the loss of completions that hit the length limit"""


@dataclass
class OverlongBufferConfig:
    """DAPO's soft overlong punishment (verl: reward_model.overlong_buffer)."""

    enable: bool = False
    """add DAPO's soft overlong penalty to the score"""
    len: int = 16
    """the buffer, in tokens: the penalty grows linearly over the last `len` tokens before rollout.max_new_tokens"""
    penalty_factor: float = 1.0
    """the penalty at rollout.max_new_tokens (-penalty_factor)"""


@dataclass
class MemRewardWarmupConfig:
    """Rollouts of the initial policy that fill the experience memory (docs/methods.md#experience-memory)."""

    n: int = 8
    """rollouts per query; the paper: 8 at temperature 1.5, top_p 0.95, 1024 tokens"""
    temperature: float = 1.5
    """sampling temperature of the warm-up rollouts"""
    top_p: float = 0.95
    """nucleus sampling of the warm-up rollouts"""
    max_new_tokens: int | None = None
    """None: rollout.max_new_tokens"""
    seed: int = 42
    """seeds the warm-up sampling"""


@dataclass
class GNNConfig:
    """The reward GNN and its training (docs/methods.md#reward-gnn: GATv2, 2 layers, 512 hidden, 4 heads, Adam 1e-3)."""

    hidden: int = 512
    """hidden width of every layer"""
    heads: int = 4
    """attention heads (GATv2); hidden must be a multiple"""
    layers: int = 2
    """message-passing layers"""
    dropout: float = 0.1
    """dropout between layers"""
    lr: float = 1.0e-3
    """Adam learning rate (no weight decay)"""
    max_epochs: int = 150
    """epochs per restart at most"""
    eval_every: int = 5
    """validate every eval_every epochs"""
    patience: int = 4
    """stop after `patience` validation checks without a better validation F1"""
    min_epochs: int = 100
    """no early stop before this epoch: with few correct rollouts the validation F1 is 0 for tens of epochs while
    the model still learns (the released pipeline has no such floor, i.e. 0)"""
    restarts: int = 1
    """best-of-N restarts (the released code: 40), chosen on validation by select_by"""
    select_by: str = "fpr"
    """fpr: lowest validation false-positive rate (the released code); f1: highest validation F1"""
    seed: int = 42
    """seeds restart r with seed + r"""


@dataclass
class OracleNoiseConfig:
    """reward.memreward.reward_model=oracle_noise, a DIAGNOSTIC control: the ground truth of unlabelled rollouts
    flipped at these rates (docs/memreward.md#oracle-noise-control)."""

    fpr: float = 0.1
    """false-positive rate: the share of wrong rollouts rewarded as right"""
    fnr: float = 0.1
    """false-negative rate: the share of right rollouts rewarded as wrong"""
    seed: int = 42
    """seeds the flips: each rollout's draw is a hash of (seed, query id, step, index in its group)"""


@dataclass
class MemRewardConfig:
    """MemReward: the experience memory, its graph, the GNN, and how predictions become rewards."""

    warmup: MemRewardWarmupConfig = field(default_factory=MemRewardWarmupConfig)
    """the warm-up rollouts that fill the memory"""
    gnn: GNNConfig = field(default_factory=GNNConfig)
    """the reward GNN and its training"""
    val_source: str = "split"
    """GNN validation queries (early stopping and selection): split = data.val_set, whose labels are counted on top
    of the budget (the released code); labelled = carved out of the labelled training queries"""
    val_fraction: float = 0.2
    """val_source=labelled: the share of the labelled queries kept for validation"""
    val_limit: int | None = 200
    """val_source=split: at most this many validation queries (None: all)"""
    report_queries: int = 200
    """unlabelled training queries rolled out for the GNN report only (their ground truth is read for that report's
    metrics, never by the reward); 0: no report on unlabelled queries"""
    k: int = 7
    """query-query edges: each query's k most similar labelled queries"""
    direction: str = "memory_to_query"
    """memory_to_query: a query receives messages from its labelled neighbours (the paper); query_to_memory: the
    released code's direction (docs/methods.md#message-direction)"""
    think_k: int = 0
    """think-think edges inside a group (0: none, as in the released pipeline)"""
    encoder_path: str | None = None
    """sentence encoder: None = the packaged all-MiniLM-L6-v2 (offline)"""
    encoder_batch_size: int = 64
    """texts per encoder batch"""
    reward_mode: str = "hard"
    """hard: reward 1[p > threshold] (the paper); soft: the probability p"""
    reward_model: str = "gnn"
    """which model of gnn/ scores unlabelled rollouts online: gnn (the paper) | homogeneous | no_think | mlp (the
    paper's ablations; trained by `memrl gnn` with the baselines, or alone when baselines=false) | oracle_noise
    (DIAGNOSTIC control, not a method: reads the ground truth of unlabelled queries and flips it at
    reward.memreward.oracle_noise.fpr / fnr, the ceiling of any predictor of that quality; no warm-up)"""
    oracle_noise: OracleNoiseConfig = field(default_factory=OracleNoiseConfig)
    """(reward_model=oracle_noise) the error rates of the diagnostic oracle"""
    threshold: float = 0.5
    """P(correct) above which a rollout counts as right (online rewards and the GNN's validation metrics)"""
    abstain_band: list[float] | None = None
    """[low, high]: a group with any prediction inside the band gets no reward signal (not trained on)"""
    baselines: bool = True
    """also train the MLP, homogeneous-graph and no-think-node ablations for the GNN report"""
    warmup_from: str | None = None
    """another run directory whose finished warm-up (memory/, graph/, gnn/) this run reuses instead of building its
    own: the paper's out-of-domain runs reuse the in-domain memory and GNN (copied in, so the run directory stays
    complete; its labels count as consumed)"""
    grow_memory: bool = False
    """beyond the paper (whose memory is frozen): add the labelled groups of each training step to the memory and
    fine-tune the GNN on the grown memory every refresh_every steps (early stopping on the same validation
    queries); no label beyond those the run reads anyway"""
    refresh_every: int = 10
    """(grow_memory) steps between refreshes of the GNN"""
    refresh_epochs: int = 20
    """a refresh fine-tunes the current GNN for at most this many epochs (early stopping from the start)"""


@dataclass
class RewardConfig:
    """Where rewards come from and how many ground-truth labels a run may read."""

    name: str = "oracle"
    """oracle: every query labelled; partial: only label_ratio of them, and only those are trained on (R1-p);
    memreward: ground truth for labelled queries, GNN-predicted rewards for the others"""
    shapers: list[str] = field(default_factory=lambda: ["overlong", "meds"])
    """shapers after the reward, in order (memrl.rewards.registry.REWARD_SHAPERS), each on when its own group says
    so: overlong (reward.overlong_buffer.enable) | meds (meds.enable); a plugin module registers more"""
    label_ratio: float = 1.0
    """share of the training queries whose ground truth the run may read (oracle: 1.0; partial, memreward: < 1)"""
    label_seed: int = 42
    """seeds the nested label split (queries labelled at 0.1 are among those labelled at 0.2)"""
    overlong_buffer: OverlongBufferConfig = field(default_factory=OverlongBufferConfig)
    """DAPO's soft overlong penalty (the `overlong` shaper)"""
    memreward: MemRewardConfig = field(default_factory=MemRewardConfig)
    """the MemReward reward (reward=memreward)"""


@dataclass
class MedsConfig:
    """MEDS reward shaping (docs/methods.md#meds): penalise wrong rollouts that repeat a prompt's past errors."""

    enable: bool = False
    """off by default; conf/meds/: disabled | monitor (memory and diagnostics, no penalty) | enabled"""
    penalty_coef: float = 0.1
    """alpha of the penalty alpha * min(log(cluster size + 1), C): 0.1 as in the released code"""
    penalty_cap: float = 2.0
    """C of the penalty: 2 as in the released code (at most alpha * C = 0.2)"""
    penalty_target: str = "wrong"
    """wrong (the paper) | right (the code's sign-preserving shrink) | both | none (memory without penalty)"""
    anchor_patterns: list[str] = field(default_factory=lambda: ["\\boxed{"])
    """the feature is read at the last occurrence of any of these (the token holding its last character)"""
    last_n_layers: int | None = None
    """layers kept, counted from the last (null: half of them, the paper's 14 of 28; 0: all)"""
    layer_diff: bool = False
    """differences between consecutive layers (all L - 1 of them, as np.diff in the released code), of which the
    last last_n_layers are kept, instead of the values"""
    final_norm: bool = False
    """apply the final norm to every layer (Hugging Face's last hidden state is already normed: false = the code)"""
    k: int = 3
    """kNN assignment (cosine) over the last HDBSCAN labels"""
    cluster_method: str = "hdbscan"
    """hdbscan | single (one cluster per prompt: a count-only penalty, the paper's ablation)"""
    min_cluster_size: int = 2
    """HDBSCAN's smallest cluster"""
    min_samples: int = 1
    """HDBSCAN's min_samples (how conservative the clustering is)"""
    noise: str = "count"
    """count (the code: a noise vote counts the stored noise points) | exclude (vote among non-noise only)"""
    max_per_prompt: int | None = None
    """keep the newest N vectors per (prompt, correctness) memory (null: unbounded, as the paper)"""
    cluster_source: str = "hdbscan"
    """hdbscan: clusters from the features (meds.cluster_method, the paper) | oracle: DIAGNOSTIC control, not a
    method: a rollout's cluster is the true strategy the synthetic training task knows (memrl.data.toys); if this
    arm shows no gain, no clustering can (docs/meds.md#controls-and-options)"""
    count: str = "cluster"
    """cluster: a cluster weighs its stored rollouts (the paper) | visits: the number of distinct past steps in which
    its rollouts were stored (HDBSCAN clusters one visit's duplicates; visits measure recurrence over time)"""
    apply_to: str = "after_filter"
    """after_filter: shape the groups DAPO's filter kept (the paper) | all_groups: also shape groups whose outcomes
    are all equal, which are then trained on when shaping made their scores differ (all-wrong groups get a signal)"""


@dataclass
class TrainerConfig:
    """The RL loop: batch sizes, optimiser, schedule, evaluation and checkpoints."""

    total_steps: int = 60
    """RL steps (each: generate, reward, update)"""
    total_epochs: float | None = None
    """when set, overrides total_steps: passes over the queries the run may train on (partial: the labelled ones
    only, so a label-limited baseline gets proportionally fewer steps, as the papers' epoch budgets)"""
    train_batch_size: int = 16
    """prompts per RL step (each with rollout.n rollouts)"""
    gen_batch_size: int | None = None
    """prompts per generation batch (dynamic sampling may need several; None: train_batch_size)"""
    ppo_mini_batch_size: int = 16
    """prompts per optimiser step: train_batch_size / ppo_mini_batch_size optimiser steps per RL step"""
    ppo_epochs: int = 1
    """passes over a step's batch (each a fresh shuffle into mini-batches)"""
    micro_batch_size: int = 64
    """sequences per forward/backward (gradient accumulation inside a mini-batch)"""
    lr: float = 1e-6
    """AdamW learning rate"""
    lr_warmup_steps: int = 0
    """steps of linear learning-rate warm-up from 0 (0: constant)"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas"""
    grad_clip: float = 1.0
    """clip the gradient norm of every optimiser step to this"""
    compute_dtype: str = "auto"
    """bf16 autocast on a GPU (parameters and optimiser stay float32); float32 everywhere on CPU"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass (less memory, slower)"""
    test_freq: int = 0
    """validation pass@k every test_freq steps (0: never), and before training"""
    val_before_train: bool = False
    """also validate before the first step"""
    val_n: int = 4
    """sampled completions per validation problem (pass@k for k <= val_n; 0: greedy only)"""
    val_limit: int | None = None
    """at most this many validation problems (None: all of data.val_set)"""
    save_freq: int = 0
    """checkpoint every save_freq steps (0: only at the end)"""
    max_ckpt_to_keep: int | None = 2
    """keep the newest max_ckpt_to_keep checkpoints (None: all)"""
    final_checkpoint: str = "last"
    """which policy the final evaluation tests: last (the last step) | best_val (the validation step with the best
    greedy accuracy, MemReward's checkpoint selection; needs test_freq > 0 and data.val_set; its checkpoint is kept
    whatever max_ckpt_to_keep says)"""
    resume: str = "auto"
    """auto: continue from this run directory's train/latest when there is one, and reuse its MemReward warm-up;
    refused when they were built with another result-changing config (more total_steps continue a finished run;
    docs/run-directory.md lists what is compared). disable (`--force`): start over: train/ and eval/ are removed,
    and warm-up parts built with another config are rebuilt"""
    final_eval: bool = True
    """evaluate the final policy on data.eval_sets (greedy + pass@k) and write eval/ like `memrl eval`"""
    initial_eval: bool = True
    """with final_eval: also evaluate the initial policy first (false: skip it, e.g. in a sweep whose jobs all
    start from the same model; `memrl eval` measures it once)"""
    progress: bool = True
    """a progress bar (false: one log line per step)"""
    checkpoint: TrainerCheckpointConfig = field(default_factory=lambda: TrainerCheckpointConfig())
    """how checkpoints are written (dist=fsdp2)"""


@dataclass
class TrainerCheckpointConfig:
    """How a run's checkpoints are written."""

    async_save: bool = False
    """dist=fsdp2 only: write the sharded DCP checkpoint in the background (DCP async_save on a gloo process group
    of its own) while training continues; the step's trainer state, reward state and train/latest follow when it
    completes (at the next save or the end of the run)"""


@dataclass
class EvalAppConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """the policy (or the evaluated model)"""
    data: DataConfig = field(default_factory=DataConfig)
    """benchmarks and training data"""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """how completions are generated"""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """`memrl eval` and the final evaluation of `memrl train`: greedy accuracy and pass@k"""
    grading: GradingConfig = field(default_factory=GradingConfig)
    """how answers are graded (math, choice, code in a sandbox)"""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """experiment tracking"""
    paths: PathsConfig = field(default_factory=PathsConfig)
    """where things are"""
    task_name: str = "eval"
    """names the run directory: outputs/<task_name>/<date_time>"""
    seed: int = 0
    """seeds Python, NumPy and torch (and the prompt order of training)"""


@dataclass
class TrainAppConfig(EvalAppConfig):
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """advantage estimator and policy loss"""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """where rewards come from and how many labels a run may read"""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """the RL loop"""
    meds: MedsConfig = field(default_factory=MedsConfig)
    """MEDS reward shaping"""
    dist: DistConfig = field(default_factory=lambda: DistConfig())
    """one process (none) or FSDP2 over every torchrun process (fsdp2; docs/scaling.md)"""
    task_name: str = "train"
    """names the run directory: outputs/<task_name>/<date_time>"""
    plugins: list[str] = field(default_factory=list)
    """Python modules imported before any registry lookup: their @register_adv_est, @register_policy_loss,
    @register_kl and @register_reward decorators add names the config can choose (the current directory is on the
    import path: plugins=[my_module] finds ./my_module.py)"""


def register_configs() -> None:
    """Register the app schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="eval_schema", node=EvalAppConfig)
    cs.store(name="train_schema", node=TrainAppConfig)


# ---------------------------------------------------------------------------------------------------
# dist: scale-out on FSDP2 + DCP + torchrun (memrl/dist, docs/scaling.md); TrainAppConfig.dist.


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

    replicate: int = 1
    """replicas of the sharded model (1: plain FSDP over every process)"""
    shard: int | None = None
    """processes one copy of the model is sharded over (None: world size / replicate)"""


@dataclass
class DistMixedPrecisionConfig:
    """FSDP2's MixedPrecisionPolicy; the sharded parameters and the optimiser state stay float32."""

    param_dtype: DistDtype = DistDtype.auto
    """dtype of the gathered parameters, i.e. of forward and backward compute"""
    reduce_dtype: DistDtype = DistDtype.auto
    """dtype of the gradient reduce-scatter / all-reduce"""


@dataclass
class DistConfig:
    """Distributed training: launched by torchrun (docs/scaling.md)."""

    strategy: DistStrategy = DistStrategy.none
    """none (one process, one device) | fsdp2 (torch's fully_shard over all torchrun processes; HSDP with
    mesh.replicate > 1)"""
    backend: DistBackend = DistBackend.auto
    """the torch.distributed backend: auto (nccl when CUDA is available, else gloo) | nccl | gloo"""
    mesh: DistMeshConfig = field(default_factory=DistMeshConfig)
    """the device mesh: replicate x shard processes"""
    mixed_precision: DistMixedPrecisionConfig = field(default_factory=DistMixedPrecisionConfig)
    """FSDP2's mixed-precision policy (the sharded parameters and the optimiser state stay float32)"""
    reshard_after_forward: bool = True
    """free each decoder layer's gathered parameters after its forward (less memory, one more all-gather)"""
    cpu_offload: bool = False
    """keep sharded parameters, gradients and optimiser state in CPU memory (FSDP2's CPUOffloadPolicy)"""
    timeout_s: int = 600
    """seconds a collective may wait before every rank fails (a dead or stuck rank ends the run, never hangs it)"""


def train_config(*overrides: str) -> DictConfig:
    """`TrainAppConfig`'s defaults with dotted overrides (`"algo.clip_ratio_high=0.28"`), typed and in struct mode,
    without YAML or Hydra: for tests and scripts that build a `Trainer` directly (a misspelt key fails here)."""
    return OmegaConf.merge(OmegaConf.structured(TrainAppConfig), OmegaConf.from_dotlist(list(overrides)))
