"""Binary metrics against hand-computed confusion matrices and AUCs.

The 6-item example (prediction = prob > 0.5):

| prob  | 0.9 | 0.8 | 0.7 | 0.7 | 0.3 | 0.1 |
| label |  1  |  0  |  1  |  0  |  1  |  0  |
| pred  |  1  |  1  |  1  |  1  |  0  |  0  |
|       | TP  | FP  | TP  | FP  | FN  | TN  |

TP 2, FP 2, FN 1, TN 1: accuracy 3/6, precision 2/4, recall 2/3, f1 = 2 (1/2)(2/3) / (7/6) = 4/7,
fpr 2/3, positive_rate 4/6, base_rate 3/6.
AUC over the 9 (positive, negative) pairs: 0.9 beats all 3 negatives; 0.7 loses to 0.8, ties 0.7 (1/2),
beats 0.1; 0.3 beats only 0.1: (3 + 1.5 + 1) / 9 = 5.5 / 9.
"""

from __future__ import annotations

import pytest
import torch

from memrl.memreward.metrics import average_ranks, binary_metrics, roc_auc

PROB = torch.tensor([0.9, 0.8, 0.7, 0.7, 0.3, 0.1])
LABEL = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])


def test_six_item_example_by_hand():
    m = binary_metrics(PROB, LABEL)
    assert m == {
        "n": 6,
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": round(2 / 3, 4),
        "f1": round(4 / 7, 4),
        "fpr": round(2 / 3, 4),
        "roc_auc": round(5.5 / 9, 4),
        "positive_rate": round(4 / 6, 4),
        "base_rate": 0.5,
    }
    assert isinstance(m["n"], int) and all(isinstance(v, float) for k, v in m.items() if k != "n")


def test_bool_labels_give_the_same_metrics():
    assert binary_metrics(PROB, LABEL.bool()) == binary_metrics(PROB, LABEL)


def test_threshold_is_strict_and_movable():
    # at 0.7 the two 0.7s turn negative: TP 1 (0.9), FP 1 (0.8), FN 2, TN 2
    m = binary_metrics(PROB, LABEL, threshold=0.7)
    assert (m["precision"], m["recall"], m["fpr"], m["accuracy"]) == (0.5, round(1 / 3, 4), round(1 / 3, 4), 0.5)
    assert m["f1"] == 0.4  # 2 (1/2)(1/3) / (5/6)
    assert m["roc_auc"] == round(5.5 / 9, 4)  # the AUC does not depend on the threshold
    # a probability equal to the threshold is negative
    assert binary_metrics(torch.tensor([0.5]), torch.tensor([1.0]))["recall"] == 0.0


def test_zero_division_cases():
    # nothing predicted positive: precision 0, and so f1 0
    m = binary_metrics(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 0.0, 1.0]))
    assert (m["precision"], m["recall"], m["f1"], m["fpr"], m["positive_rate"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert m["roc_auc"] == 0.5  # 0.1 and 0.3 vs 0.2: one win, one loss
    # no positives: recall 0, auc undefined
    m = binary_metrics(torch.tensor([0.9, 0.2]), torch.tensor([0.0, 0.0]))
    assert (m["recall"], m["precision"], m["fpr"], m["roc_auc"], m["base_rate"]) == (0.0, 0.0, 0.5, None, 0.0)
    # no negatives: fpr 0, auc undefined
    m = binary_metrics(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 1.0]))
    assert (m["fpr"], m["precision"], m["recall"], m["f1"], m["roc_auc"]) == (0.0, 1.0, 0.5, round(2 / 3, 4), None)
    # nothing at all
    m = binary_metrics(torch.zeros(0), torch.zeros(0))
    assert m["n"] == 0 and m["accuracy"] == 0.0 and m["roc_auc"] is None


def test_perfect_and_inverted_rankings():
    label = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert binary_metrics(torch.tensor([0.1, 0.2, 0.8, 0.9]), label)["roc_auc"] == 1.0
    assert binary_metrics(torch.tensor([0.9, 0.8, 0.2, 0.1]), label)["roc_auc"] == 0.0
    assert binary_metrics(torch.full((4,), 0.6), label)["roc_auc"] == 0.5  # all tied


def test_average_ranks_share_ties():
    ranks = average_ranks(torch.tensor([0.3, 0.1, 0.3, 0.2, 0.3]))
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]  # the three 0.3s span ranks 3..5


def test_auc_matches_sklearn_with_many_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 5, (200,), generator=g).float() / 4  # 5 distinct values: heavy ties
    label = torch.rand(200, generator=g) < 0.4
    expected = sklearn_metrics.roc_auc_score(label.numpy(), score.numpy())
    assert roc_auc(score, label) == pytest.approx(expected, abs=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="equal length"):
        binary_metrics(torch.rand(3), torch.ones(2))
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics(torch.rand(2), torch.tensor([1.0, float("nan")]))


def test_gnn_group_auc_by_hand():
    """Per group, the AUC over its (right, wrong) pairs; the mean over groups holding both classes.

    group 1: right 0.9, 0.4; wrong 0.4, 0.1: pairs (0.9, 0.4) 1, (0.9, 0.1) 1, (0.4, 0.4) tie 1/2, (0.4, 0.1) 1
             -> 3.5 / 4 = 0.875
    group 2: right 0.2, wrong 0.8 -> 0
    group 3: only right rollouts -> skipped;  group 4: not scored by the reward model -> skipped
    mean (0.875 + 0) / 2 = 0.4375 over 2 groups.
    """
    from memrl.memreward.metrics import gnn_group_auc

    groups = [
        ([0.9, 0.4, 0.4, 0.1], [1.0, 1.0, 0.0, 0.0]),
        ([0.2, 0.8], [1.0, 0.0]),
        ([0.3, 0.6], [1.0, 1.0]),
        (None, [1.0, 0.0]),
    ]
    assert gnn_group_auc(groups) == {"reward/gnn_group_auc": 0.4375, "reward/gnn_group_auc_groups": 2.0}
    assert gnn_group_auc(groups[2:]) == {}
