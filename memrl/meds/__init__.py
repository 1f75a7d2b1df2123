"""MEDS: memory-enhanced dynamic reward shaping from layer-wise logits (docs/methods.md#meds).

- `anchor`: where in a response the feature is read (the last `\\boxed{`, or another anchor pattern).
- `features`: the layer-wise logit of the first answer token at the anchor (one row of the output matrix).
- `memory`: one memory of past feature vectors per (prompt, correctness), kNN assignment, HDBSCAN refits.
- `penalty`: the cluster-size penalty on sequence scores.
- `diversity`: the per-step diagnostics (covariance eigenvalue ratio, distinct and novel answers).

The reward component that wires them into a training step is `memrl.rewards.meds.MEDSShaper`.
"""
