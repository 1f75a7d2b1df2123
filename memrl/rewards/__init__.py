"""The reward pipeline: components that see whole groups of rollouts and keep checkpointable state.

`base` (the interface and the pipeline), `registry` (components by config name), `oracle` (ground truth,
overlong penalty), `memreward` (MemReward's online reward), `meds` (MEDS' shaper). The label store they read
through is `memrl.data.labels.GroundTruth`.
"""

from memrl.rewards.base import Group, RewardComponent, RewardContext, RewardPipeline

__all__ = ["Group", "RewardComponent", "RewardContext", "RewardPipeline"]
