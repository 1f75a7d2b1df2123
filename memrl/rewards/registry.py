"""Reward components by config name: `reward.name` picks the reward, `reward.shapers` the shapers after it.

Built-ins: rewards `oracle`, `partial` (`memrl.rewards.oracle`) and `memreward` (`memrl.rewards.memreward`);
shapers `overlong` (`memrl.rewards.oracle`) and `meds` (`memrl.rewards.meds`). They are registered by
"module:attribute" and imported on first lookup, so a run without MemReward never imports the graph
library. A user adds one from a plugin module (`plugins=[my_module]`):

    from memrl.rewards.registry import register_shaper

    @register_shaper("length_bonus")
    def length_bonus(cfg, ctx):  # -> a RewardComponent, or None when off
        return MyComponent(...)

    memrl train plugins=[my_module] 'reward.shapers=[overlong,meds,length_bonus]'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memrl.rewards.base import RewardComponent, RewardPipeline
from memrl.utils.registry import Registry


@dataclass
class BuildContext:
    """What builders may need beyond the config.

    Attributes:
        tokenizer: the policy's tokenizer (MEDS' anchor search).
        run_dir: the run directory (MemReward reads its warm-up artifacts there).
        warmup: runs MemReward's warm-up stages (memory/, graph/, gnn/, each skipped when done) and returns
            their outputs; the train stage supplies it, with its rollout engine, prompts and grader.
    """

    tokenizer: Any = None
    run_dir: Any = None
    warmup: Callable[[], dict[str, Any]] | None = None


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward or shaper.

    Attributes:
        build: (cfg, ctx) -> the components (a reward: a list; a shaper: one component, or None when off).
        check: (cfg) -> None, raising a `UserError` that names the key; run before any model is loaded.
    """

    build: Callable[[Any, BuildContext], Any]
    check: Callable[[Any], None] | None = None


REWARDS: Registry[RewardSpec] = Registry("reward", "reward.name")
REWARD_SHAPERS: Registry[RewardSpec] = Registry("reward shaper", "reward.shapers")
REWARDS.register_lazy("oracle", "memrl.rewards.oracle:ORACLE")
REWARDS.register_lazy("partial", "memrl.rewards.oracle:PARTIAL")
REWARDS.register_lazy("memreward", "memrl.rewards.memreward:MEMREWARD")
REWARD_SHAPERS.register_lazy("overlong", "memrl.rewards.oracle:OVERLONG")
REWARD_SHAPERS.register_lazy("meds", "memrl.rewards.meds:MEDS")


def register_reward(name: str, check: Callable[[Any], None] | None = None):
    """Decorator: register `build(cfg, ctx) -> list[RewardComponent]` as reward `name` (`reward.name`)."""

    def add(build):
        REWARDS.register(name)(RewardSpec(build, check))
        return build

    return add


def register_shaper(name: str, check: Callable[[Any], None] | None = None):
    """Decorator: register `build(cfg, ctx) -> RewardComponent | None` as shaper `name` (`reward.shapers`)."""

    def add(build):
        REWARD_SHAPERS.register(name)(RewardSpec(build, check))
        return build

    return add


def _specs(cfg: Any) -> list[RewardSpec]:
    return [REWARDS.get(str(cfg.reward.name)), *(REWARD_SHAPERS.get(str(n)) for n in cfg.reward.shapers)]


def check_reward_config(cfg: Any) -> None:
    """The configured reward and shapers exist and their settings are valid (a `UserError` names the key)."""
    for spec in _specs(cfg):
        if spec.check is not None:
            spec.check(cfg)


def build_reward_pipeline(cfg: Any, ctx: BuildContext | None = None) -> RewardPipeline:
    """The reward named by `reward.name`, then each shaper of `reward.shapers` that is on, in order."""
    ctx = ctx or BuildContext()
    reward, *shapers = _specs(cfg)
    components: list[RewardComponent] = list(reward.build(cfg, ctx))
    for spec in shapers:
        component = spec.build(cfg, ctx)
        if component is not None:
            components.append(component)
    return RewardPipeline(components)
