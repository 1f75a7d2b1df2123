"""Name -> implementation registries for the pluggable parts, and the import of user plugin modules.

The registries themselves live next to what they hold: advantage estimators, policy losses and KL
estimators in `memrl.rl.core_algos`; reward components and shapers in `memrl.rewards.registry`. A user
adds one from their own module with the decorator and names it in the config; `plugins=[my_module]`
imports that module before any lookup:

    # my_module.py
    from memrl.rl.core_algos import register_adv_est

    @register_adv_est("my_est")
    def my_est(scores, group_ids, algo):  # [N] sequence scores -> [N] advantages
        return scores - scores.mean()

    memrl train plugins=[my_module] algo.adv_estimator=my_est
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from memrl.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Implementations by name, for one config key.

    Args:
        kind: what the entries are, for messages ("advantage estimator").
        key: the config key that names an entry ("algo.adv_estimator").
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T] = {}
        # built-ins whose module is heavy are named as "module:attribute" and imported on first lookup
        self._lazy: dict[str, str] = {}
        # names in the order they were registered: a lazy entry keeps its place once imported, so error
        # messages and listings do not depend on which modules earlier code happened to import
        self._order: list[str] = []

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name` (a name is registered once)."""

        def add(obj: T) -> T:
            if (name in self._entries and self._entries[name] != obj) or name in self._lazy:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            if name not in self._order:
                self._order.append(name)
            return obj

        return add

    def register_lazy(self, name: str, target: str) -> None:
        """Register `name` as "module:attribute", imported when first looked up (for heavy modules)."""
        if name in self._entries or name in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._lazy[name] = target
        self._order.append(name)

    def get(self, name: str) -> T:
        """The entry registered as `name`; a `UserError` naming the config key and the registered names if none."""
        if name in self._lazy:
            module, attr = self._lazy.pop(name).split(":")
            self._entries[name] = getattr(importlib.import_module(module), attr)
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(
                f"unknown {self.key}={name}; registered {self.kind}{'es' if self.kind.endswith('s') else 's'}: "
                f"{', '.join(self.names())} "
                "(a plugin module registers more: plugins=[my_module])"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in the order they were registered."""
        return [n for n in self._order if n in self]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy


def import_plugins(modules: Iterable[str]) -> list[Any]:
    """Import the user's plugin modules (config key `plugins`), whose decorators fill the registries.

    The current directory is on the import path, so `plugins=[my_module]` finds ./my_module.py.

    Raises:
        UserError: a module cannot be imported (the message names it and the import error).
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(str(name)))
        except ImportError as e:
            raise UserError(f"plugins: cannot import {name!r}: {e}") from e
    return out
