"""Groups of rollouts, the reward-component interface and the pipeline that runs the components.

A step's rewards come in two phases (docs/architecture.md#data-flow-of-memrl-train):

1. `score`: right after generation, on every group of the generation batch. Components set each
   rollout's binary `outcome` (what DAPO's dynamic sampling filters on) and add to its sequence `score`
   (ground truth, a predicted reward, the overlong penalty).
2. `shape`: after dynamic sampling and the trainer's no-grad scoring pass, on the groups that are
   trained on. A component that asked for hidden states (`hidden_state_request`) receives them here
   (MEDS shapes scores with its memory of past errors), before group normalisation.

Components keep whatever state they need across steps and expose it through `state_dict` /
`load_state_dict`, which the trainer saves with every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from memrl.data.labels import GroundTruth
from memrl.data.problem import Problem
from memrl.grading import Grader
from memrl.rollout.records import Rollout


@dataclass
class Group:
    """The `n` rollouts of one prompt.

    Attributes:
        problem: the query as reward code sees it (`answer` is None: read labels through `GroundTruth`).
        prompt: the prompt text.
        rollouts: the completions.
        labelled: whether the query's ground truth may be read.
        outcome: per rollout, the binary outcome (1.0 right, 0.0 wrong) the reward believes in; None where
            no component could judge it (an unlabelled query without a reward model).
        score: per rollout, the sequence score that becomes the advantage after group normalisation.
        extra: per-rollout values components want logged, by name.
    """

    problem: Problem
    prompt: str
    rollouts: list[Rollout]
    labelled: bool
    outcome: list[float | None] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.outcome:
            self.outcome = [None] * len(self.rollouts)
        if not self.score:
            self.score = [0.0] * len(self.rollouts)

    @property
    def judged(self) -> bool:
        """Every rollout has an outcome."""
        return all(o is not None for o in self.outcome)


@dataclass
class RewardContext:
    """What components may use: the labels they are allowed to read, a grader, the step."""

    labels: GroundTruth
    grader: Grader
    step: int
    max_response_length: int


@dataclass
class HiddenStateRequest:
    """Hidden states a component wants from the trainer's no-grad scoring pass (no extra forward pass).

    Attributes:
        positions: given the trained rollouts (in batch order), one response-token index per rollout (or
            -1 for none); the scoring pass returns every layer's hidden state at that position.
    """

    positions: Callable[[Sequence[Rollout]], list[int]]


@dataclass
class ScoringOutputs:
    """What the scoring pass hands to `shape`.

    Attributes:
        hidden_states: [B, L + 1, H] float32 hidden states at the requested positions (embedding output
            first, then each layer; Hugging Face's last entry is already final-normed), zeros where the
            position was -1; None when nothing was requested.
        positions: [B] the requested positions (-1: none).
        model: the policy (read-only use, e.g. its output embedding for logit-lens features).
        features: what the requesting component's `features` made of the hidden states, when a distributed
            run computed them on each rank and gathered them to rank 0 (hidden_states and model are None then).
    """

    hidden_states: torch.Tensor | None
    positions: torch.Tensor | None
    model: Any = None
    features: Any = None


class RewardComponent:
    """One part of the reward. Subclasses override what they need; the defaults do nothing."""

    name = "component"

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        """Phase 1: set outcomes and add to scores of freshly generated groups (in place)."""

    def hidden_state_request(self) -> HiddenStateRequest | None:
        """Hidden states to collect in the scoring pass for `shape` (None: none)."""
        return None

    def features(self, scoring: ScoringOutputs, rollouts: list[Rollout]) -> Any:
        """What `shape` needs of the hidden states, computed where they are (each rank of a distributed run;
        gathered to rank 0 as `ScoringOutputs.features`). Components that request hidden states define it."""
        return None

    def shape(self, groups: list[Group], scoring: ScoringOutputs, ctx: RewardContext) -> dict[str, float]:
        """Phase 2: shape the scores of the trained groups (in place); returns metrics to log."""
        return {}

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        """Metrics of phase 1 over a step's groups (namespaced by the pipeline)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class RewardPipeline:
    """Runs components in order; saves and restores their state by name."""

    def __init__(self, components: Sequence[RewardComponent]) -> None:
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"reward components need distinct names, got {names}")
        self.components = list(components)

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        for c in self.components:
            c.score(groups, ctx)

    def hidden_state_request(self) -> HiddenStateRequest | None:
        requests = [r for c in self.components if (r := c.hidden_state_request()) is not None]
        if len(requests) > 1:
            raise ValueError("only one reward component may request hidden states")
        return requests[0] if requests else None

    def features(self, scoring: ScoringOutputs, rollouts: list[Rollout]) -> Any:
        """The hidden-state requester's `features` (None when no component requests hidden states)."""
        for c in self.components:
            if c.hidden_state_request() is not None:
                return c.features(scoring, rollouts)
        return None

    def shape(self, groups: list[Group], scoring: ScoringOutputs, ctx: RewardContext) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.components:
            out.update(c.shape(groups, scoring, ctx))
        return out

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.components:
            out.update(c.metrics(groups))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {c.name: c.state_dict() for c in self.components}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for c in self.components:
            if c.name in state:
                c.load_state_dict(state[c.name])
