"""MemReward: an experience memory, a heterogeneous query/think/answer graph and a GNN that predicts rewards.

- `fill`: which queries the memory holds, and rolling the initial policy out on them;
- `memory`: the experience memory (rollouts and their correctness) and its files;
- `encoder`, `embed`, `features`: sentence embeddings and answer features of groups of rollouts;
- `graph`: the memory graph (`MemoryGraph`, `GraphInputs`); `gnn`: the reward models over it;
- `training`, `metrics`: fitting and selecting a reward model, and its binary metrics and report table;
- `predictor`: the frozen reward predictor of a training run; `artifacts`: the run directory's memory/,
  graph/ and gnn/ and the builders from the `reward.memreward` config.

Elsewhere: the warm-up stages that write memory/, graph/, gnn/ are `memrl.stages.rollout`, `.graph`, `.gnn`
(in turn: `memrl.stages.warmup`); the online reward of a training run is `memrl.rewards.memreward`.
"""
