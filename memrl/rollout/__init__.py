"""Rollout engines behind one interface (`generate`, `sync_weights`) and the `Rollout` record."""

from memrl.rollout.records import Rollout, SamplingParams
from memrl.rollout.split import split_thinking_answer

__all__ = ["Rollout", "SamplingParams", "split_thinking_answer"]
