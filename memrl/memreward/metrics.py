"""Binary-classification metrics of predicted rewards against ground truth (MemReward's validation and reports).

The released pipeline validates on F1 at threshold 0.5 and keeps the run with the lowest false-positive
rate (docs/methods.md#gnn-training-and-selection); a false positive rewards a wrong rollout, the costly error in RL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

_DIGITS = 4


def _ratio(num: float, den: float) -> float:
    """num / den, and 0.0 when den is 0 (nothing to divide: the rate counts as zero)."""
    return num / den if den else 0.0


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of `values`, ties sharing the mean of the ranks they span.

    Args:
        values: [N].

    Returns:
        [N] float64 ranks (as scipy.stats.rankdata(method="average")).
    """
    v = values.detach().double().reshape(-1)
    order = torch.argsort(v, stable=True)
    _, counts = torch.unique_consecutive(v[order], return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # last 1-based rank of each tie group
    group_rank = ends - (counts.double() - 1) / 2  # mean of start..end
    ranks = torch.empty_like(v)
    ranks[order] = torch.repeat_interleave(group_rank, counts)
    return ranks


def roc_auc(score: Tensor, label: Tensor) -> float | None:
    """Area under the ROC curve as Mann-Whitney U / (P * N): a tie between a positive and a negative counts 1/2.

    Args:
        score: [N] any real scores.
        label: [N] bool.

    Returns:
        The AUC, or None when only one class is present (the AUC is undefined).
    """
    pos = int(label.sum())
    neg = int(label.numel()) - pos
    if pos == 0 or neg == 0:
        return None
    u = float(average_ranks(score)[label].sum()) - pos * (pos + 1) / 2
    return u / (pos * neg)


def gnn_group_auc(groups: Sequence[tuple[Sequence[float] | None, Sequence[float]]]) -> dict[str, float]:
    """`reward/gnn_group_auc`: the reward model's AUC between the right and wrong rollouts of one group (all that
    GRPO's group normalisation reads of a reward), averaged over the groups that hold both classes.

    For metrics only: the truth is the hidden ground truth of unlabelled queries (the trainer's
    `_metrics_only_truth`, after the step's rewards are final).

    Args:
        groups: per group, (the reward model's P(correct) of each rollout or None when it did not score the group,
            the true outcome 1.0 / 0.0 of each rollout).

    Returns:
        {"reward/gnn_group_auc", "reward/gnn_group_auc_groups"}: the mean AUC (ties count 1/2) and the number of
        groups it averages; {} when no scored group has both classes.
    """
    aucs = []
    for probs, truth in groups:
        if probs is None:
            continue
        auc = roc_auc(torch.tensor(list(probs), dtype=torch.float64), torch.tensor([t >= 0.5 for t in truth]))
        if auc is not None:
            aucs.append(auc)
    if not aucs:
        return {}
    return {"reward/gnn_group_auc": sum(aucs) / len(aucs), "reward/gnn_group_auc_groups": float(len(aucs))}


def binary_metrics(prob: Tensor, label: Tensor, threshold: float = 0.5) -> dict[str, float | int | None]:
    """Confusion-matrix metrics and ROC AUC of probabilities against 0/1 labels.

    The prediction is `prob > threshold` (a probability equal to the threshold is negative, as the released
    code's hard reward `1.0 if sigmoid > 0.5 else 0.0`).

    Args:
        prob: [N] probabilities in [0, 1].
        label: [N] 0/1, float or bool (no nan).
        threshold: decision threshold.

    Returns:
        {n (int), accuracy, precision, recall, f1, fpr, roc_auc, positive_rate, base_rate}: Python floats
        rounded to 4 decimals. A ratio with a zero denominator is 0.0 (precision with nothing predicted
        positive, recall with no positives, fpr with no negatives, f1 when precision + recall = 0, and the
        shares when N = 0); roc_auc is None when only one class is present.

    Raises:
        ValueError: prob and label are not 1-D of the same length, or label holds values other than 0/1.
    """
    if prob.dim() != 1 or label.shape != prob.shape:
        raise ValueError(
            f"prob and label must be 1-D of equal length, got {tuple(prob.shape)} and {tuple(label.shape)}"
        )
    prob, label = prob.detach().cpu(), label.detach().cpu()
    if label.dtype != torch.bool:
        if not bool(((label == 0) | (label == 1)).all()):
            raise ValueError("label must hold only 0 and 1 (nan marks an unknown label: mask it out first)")
        label = label == 1
    pred = prob > threshold
    n = int(label.numel())
    tp = int((pred & label).sum())
    fp = int((pred & ~label).sum())
    fn = int((~pred & label).sum())
    tn = n - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    auc = roc_auc(prob, label)
    out = {
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "fpr": _ratio(fp, fp + tn),
        "roc_auc": auc,
        "positive_rate": _ratio(tp + fp, n),
        "base_rate": _ratio(tp + fn, n),
    }
    return {"n": n} | {k: None if v is None else round(float(v), _DIGITS) for k, v in out.items()}


def print_report_table(report: dict[str, Any]) -> None:
    """The reward-prediction table of `gnn/report.json` on the held-out (report) queries."""
    split = report["report_on"]
    n_q = report["report_queries"] if split == "report" else report["val_queries"]
    table = Table(
        title=f"reward prediction on {n_q} {'held-out unlabelled' if split == 'report' else 'validation'} "
        f"queries (threshold {report['threshold']})"
    )
    cols = ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr")
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in report["models"].items():
        m = row.get(split) or {}
        table.add_row(name, *("-" if m.get(c) is None else f"{m[c]:.3f}" for c in cols))
    Console().print(table)
