"""Full-batch training of a reward model on the memory graph (docs/methods.md#gnn-training-and-selection), with restarts.

One restart: Adam (no weight decay), BCE-with-logits on the training answer nodes, a validation check
every `eval_every` epochs (F1 at `threshold`), early stop after `patience` checks without a better F1, and
the weights of the best check kept. Among restarts, the one with the lowest validation false-positive rate
(the released selection) or the highest F1 wins.

Two departures from the released code, both deliberate:

- the best weights are a real copy (`v.detach().clone()`); the released `state_dict().copy()` is shallow,
  so its "best" checkpoint was in fact the last epoch's;
- restart r seeds torch with `seed + r`: the released code seeded all 40 runs with 42 and relied on GPU
  nondeterminism for the variation, which gives identical runs on CPU and unrepeatable ones on GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from memrl.config.schema import MemRewardConfig
from memrl.errors import UserError
from memrl.memreward.graph import ANSWER, GraphInputs, MemoryGraph
from memrl.memreward.metrics import binary_metrics

SELECT_BY = ("fpr", "f1")


# what `fit` reads of the `reward.memreward` group: these of its `gnn` group, and its `threshold`
GNN_FIELDS = ("lr", "max_epochs", "eval_every", "patience", "min_epochs", "restarts", "select_by", "seed")
FIELDS = (*GNN_FIELDS, "threshold")


def _read(memreward: MemRewardConfig) -> dict[str, Any]:
    """`FIELDS`' values in `memreward` (a MemRewardConfig or its DictConfig), each read spelt out so that the
    schema's dead-key check (tests/config/test_schema.py) sees them."""
    gnn = memreward.gnn
    return {
        "lr": gnn.lr,
        "max_epochs": gnn.max_epochs,
        "eval_every": gnn.eval_every,
        "patience": gnn.patience,
        "min_epochs": gnn.min_epochs,
        "restarts": gnn.restarts,
        "select_by": gnn.select_by,
        "seed": gnn.seed,
        "threshold": memreward.threshold,
    }


class _Setting:
    """A FitSettings attribute: the override, else the config's value, as `cast`."""

    def __init__(self, cast: Callable[[Any], Any]) -> None:
        self.cast = cast

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else self.cast(obj._get(self.name))


class FitSettings:
    """How `fit` trains: a read-only view of the `reward.memreward` config group, not a copy of it.

    `lr`, `max_epochs`, `eval_every`, `patience`, `min_epochs`, `restarts`, `select_by` and `seed` read
    `reward.memreward.gnn.<name>`; `threshold` (of the validation metrics) reads `reward.memreward.threshold`. Their
    meaning and defaults: `GNNConfig` and `MemRewardConfig` in memrl/config/schema.py (the released pipeline's,
    except `min_epochs`, 0 there, and `restarts`, 40 there).

    Args:
        memreward: the `reward.memreward` group (a typed `MemRewardConfig` or its DictConfig).
        overrides: values that replace some of the above for one use (a refresh of the online reward model
            fine-tunes for `refresh_epochs`, without an epoch floor, in one run).

    Raises:
        TypeError: an override that is none of `FIELDS`.
    """

    def __init__(self, memreward: Any, **overrides: Any) -> None:
        unknown = sorted(set(overrides) - set(FIELDS))
        if unknown:
            raise TypeError(f"FitSettings: unknown settings {unknown}; valid: {', '.join(FIELDS)}")
        self._mr = memreward
        self._overrides = overrides

    def _get(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return _read(self._mr)[name]

    lr = _Setting(float)
    max_epochs = _Setting(int)
    eval_every = _Setting(int)
    patience = _Setting(int)
    min_epochs = _Setting(int)
    restarts = _Setting(int)
    select_by = _Setting(str)
    seed = _Setting(int)
    threshold = _Setting(float)


@dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        model: the selected restart's model with its best weights, in eval mode.
        best_epoch: the epoch those weights are from (1-based).
        val_metrics: `binary_metrics` on the validation nodes at that epoch ({} without validation nodes).
        restart_index: the selected restart.
        history: one row per check: {"restart", "epoch", "loss", "val_<metric>" for each validation metric}.
        restarts: one row per restart: {"restart", "seed", "best_epoch", "epochs", "val_<metric>"...} at
            its best check; "epochs" is how many it ran before stopping.
    """

    model: nn.Module
    best_epoch: int
    val_metrics: dict
    restart_index: int
    history: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    # a real copy: state_dict() tensors alias the live parameters (the released code's bug)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _prefixed(metrics: dict) -> dict:
    return {f"val_{k}": v for k, v in metrics.items()}


def _better_restart(candidate: dict, best: dict, select_by: str) -> bool:
    """Whether a restart's best validation metrics beat the best so far (equal ones do not: first wins)."""
    if select_by == "fpr":
        return (candidate["fpr"], -candidate["f1"]) < (best["fpr"], -best["f1"])
    return (-candidate["f1"], candidate["fpr"]) < (-best["f1"], best["fpr"])


def _check_inputs(graph: HeteroData, train_mask: Tensor, val_mask: Tensor, settings: FitSettings) -> Tensor:
    answer = graph[ANSWER]
    if "y" not in answer:
        raise ValueError("fit(): the graph has no labels (graph['answer'].y); build it with rollout_label")
    y = answer.y
    for name, mask in (("train_mask", train_mask), ("val_mask", val_mask)):
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(y.shape):
            raise ValueError(f"fit(): {name} must be a [{y.shape[0]}] bool tensor over the answer nodes")
        if bool(torch.isnan(y[mask]).any()):
            raise ValueError(f"fit(): {name} selects answer nodes without a label (nan)")
    if not bool(train_mask.any()):
        raise ValueError("fit(): train_mask selects no answer node")
    if settings.select_by not in SELECT_BY:
        raise UserError(f"unknown restart selection '{settings.select_by}'; valid: {', '.join(SELECT_BY)}")
    if settings.max_epochs < 1 or settings.eval_every < 1 or settings.restarts < 1 or settings.patience < 1:
        raise UserError("max_epochs, eval_every, restarts and patience must all be >= 1")
    return y


def _train_once(
    model: nn.Module,
    graph: HeteroData,
    y: Tensor,
    train_mask: Tensor,
    val_mask: Tensor,
    settings: FitSettings,
    restart: int,
    history: list[dict],
    progress: Callable[[int], None] | None,
) -> tuple[dict[str, Tensor], int, dict, int]:
    """One restart. Returns (best state, best epoch, best validation metrics, epochs run); without validation
    nodes the last epoch's state and {} metrics."""
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    has_val = bool(val_mask.any())
    best_state, best_epoch, best_metrics, best_f1 = None, 0, {}, float("-inf")
    stale = 0
    epoch = 0
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(graph)[train_mask], y[train_mask])
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress(1)
        if epoch % settings.eval_every and epoch != settings.max_epochs:
            continue
        row = {"restart": restart, "epoch": epoch, "loss": round(float(loss.detach()), 6)}
        if not has_val:
            history.append(row)
            continue
        metrics = binary_metrics(predict_proba(model, graph)[val_mask], y[val_mask], settings.threshold)
        history.append(row | _prefixed(metrics))
        if metrics["f1"] > best_f1:  # strict: on a tie the earlier check stays
            best_state, best_epoch, best_metrics, best_f1 = _state_copy(model), epoch, metrics, metrics["f1"]
            stale = 0
        else:
            stale += 1
            if stale >= settings.patience and epoch >= settings.min_epochs:
                break
    if progress is not None and epoch < settings.max_epochs:
        progress(settings.max_epochs - epoch)  # the skipped epochs, so a bar over restarts x max_epochs ends full
    if not has_val:
        # nothing to select on: the last weights
        return _state_copy(model), epoch, {}, epoch
    return best_state, best_epoch, best_metrics, epoch


def fit(
    make_model: Callable[[], nn.Module],
    graph: HeteroData,
    train_mask: Tensor,
    val_mask: Tensor,
    settings: FitSettings,
    progress: Callable[[int], None] | None = None,
) -> FitResult:
    """Train `settings.restarts` models on `graph` and return the selected one with its best weights.

    Args:
        make_model: builds a fresh model (called once per restart, after seeding torch with seed + r); the
            model is moved to the graph's device.
        graph: a memory graph with labels graph["answer"].y [R] (0/1, nan where unknown).
        train_mask: [R] bool, the answer nodes of the loss (all labelled).
        val_mask: [R] bool, the answer nodes of the validation checks (all labelled). When it is empty,
            each restart trains for max_epochs and keeps its last weights, and the first restart is returned.
        settings: see `FitSettings`.
        progress: called with a number of epochs done (restarts x max_epochs in all).

    Returns:
        A `FitResult`; its model is in eval mode.

    Raises:
        ValueError: no labels, masks of the wrong shape or selecting unlabelled nodes, an empty train_mask.
        UserError: an unknown select_by or non-positive counts in the settings.
    """
    y = _check_inputs(graph, train_mask, val_mask, settings).float()
    # restarts seed torch; the caller's random stream (a training run's sampling) must not notice
    devices = [y.device.index or 0] if y.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _fit(make_model, graph, y, train_mask, val_mask, settings, progress)


def _fit(
    make_model: Callable[[], nn.Module],
    graph: HeteroData,
    y: Tensor,
    train_mask: Tensor,
    val_mask: Tensor,
    settings: FitSettings,
    progress: Callable[[int], None] | None,
) -> FitResult:
    device = y.device
    history: list[dict] = []
    summaries: list[dict] = []
    chosen = None  # (restart, model, state, epoch, metrics)
    for restart in range(settings.restarts):
        seed = settings.seed + restart
        torch.manual_seed(seed)
        model = make_model().to(device)
        state, best_epoch, metrics, epochs = _train_once(
            model, graph, y, train_mask, val_mask, settings, restart, history, progress
        )
        summaries.append(
            {"restart": restart, "seed": seed, "best_epoch": best_epoch, "epochs": epochs} | _prefixed(metrics)
        )
        if chosen is None or (metrics and _better_restart(metrics, chosen[4], settings.select_by)):
            chosen = (restart, model, state, best_epoch, metrics)
    restart, model, state, best_epoch, metrics = chosen
    model.load_state_dict(state)
    model.eval()
    return FitResult(model, best_epoch, metrics, restart, history, summaries)


def supervised_graph(memory: MemoryGraph, val: GraphInputs, val_labels: Tensor) -> tuple[HeteroData, Tensor, Tensor]:
    """The graph a reward model trains on: the labelled memory with the validation queries attached as
    unlabelled queries (exactly as online queries are), their labels set for the validation checks only.

    Args:
        memory: the labelled memory.
        val: the validation queries and rollouts (unlabelled inputs).
        val_labels: [R_val] 0/1 labels of the validation rollouts.

    Returns:
        (graph, train_mask [R], val_mask [R]): the masks select the memory's and the validation rollouts.
    """
    graph, val_index = memory.attach(val)
    graph[ANSWER].y[val_index] = val_labels.to(graph[ANSWER].y)
    train_mask = torch.zeros(graph[ANSWER].num_nodes, dtype=torch.bool, device=val_index.device)
    train_mask[: memory.inputs.num_rollouts] = True
    val_mask = torch.zeros_like(train_mask)
    val_mask[val_index] = True
    return graph, train_mask, val_mask


def predict_proba(model: nn.Module, graph: HeteroData) -> Tensor:
    """P(correct) of every answer node: [R] sigmoid of the logits, in eval mode and without gradients.

    Leaves the model in eval mode.
    """
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(graph))
