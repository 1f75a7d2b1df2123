"""The reward pipeline: components that see whole groups of rollouts and keep checkpointable state."""

from memrl.rewards.base import Group, RewardComponent, RewardContext, RewardPipeline
from memrl.rewards.labels import GroundTruth, UnlabelledAccessError, nested_labelled_ids

__all__ = [
    "GroundTruth",
    "Group",
    "RewardComponent",
    "RewardContext",
    "RewardPipeline",
    "UnlabelledAccessError",
    "nested_labelled_ids",
]
