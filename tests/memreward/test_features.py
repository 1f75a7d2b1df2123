"""Answer parsing and MemReward's per-rollout answer features against hand-computed values.

log1p values by hand: ln(13) = 2.564949, ln(14) = 2.639057, ln(4) = 1.386294, ln(1.5) = 0.405465.
"""

from __future__ import annotations

import pytest
import torch

from memrl.errors import UserError
from memrl.memreward.features import ANSWER_FEAT_DIM, answer_features, majority_answer, parse_numeric_answer


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 12", 12.0),
        ("so 3 + 4 = 7 #### 12 apples", 12.0),  # #### wins over a later or earlier number
        ("#### $1,234.50", 1234.5),  # thousands comma and decimals
        ("#### -7", -7.0),
        ("#### 3/4", 0.75),
        ("first 5, then \\boxed{2} and finally \\boxed{\\frac{3}{4}} plus 9", 0.75),  # last boxed, LaTeX frac
        ("\\boxed{-\\dfrac{1}{8}}", -0.125),
        ("\\boxed{-7}  then 9", -7.0),  # boxed beats the last number
        ("\\boxed{x} so 5", 5.0),  # an empty boxed falls through to the last number
        ("#### A, after 3 steps", 3.0),  # no number after ####: the rest of the rule chain
        ("the list 1,2,3", 3.0),  # "1,2,3" is three numbers, not 123
        ("it costs 1,000,000 dollars", 1_000_000.0),
        ("answer: \u22122.5.", -2.5),  # unicode minus
        ("1/0 or 6", 6.0),  # a zero denominator is no number
        ("no number here", None),
        ("", None),
    ],
)
def test_parse_numeric_answer(text, expected):
    assert parse_numeric_answer(text) == expected


def test_answer_features_example_group():
    feats = answer_features(["#### 12", "\\boxed{12}", "13", "no number"], "math")
    # values 12, 12, 13, None; majority 12
    close(
        feats,
        [
            [2.564949 / 20, 1.0, 1.0],
            [2.564949 / 20, 1.0, 1.0],
            [2.639057 / 20, 1.0, 0.0],
            [0.0, 0.0, 0.0],
        ],
    )
    assert feats.shape == (4, ANSWER_FEAT_DIM) and feats.dtype == torch.float32


def test_answer_features_sign_clip_and_fraction():
    feats = answer_features(["#### -3", "#### 1000000000000", "#### 1/2", "#### -3"], "math")
    # -3: -ln(4)/20; 1e12: ln(1e12 + 1)/20 = 1.38 -> clipped to 1; 0.5: ln(1.5)/20; majority -3
    close(feats[:, 0], [-1.386294 / 20, 1.0, 0.405465 / 20, -1.386294 / 20])
    close(feats[:, 2], [1.0, 0.0, 0.0, 1.0])


def test_majority_ties_go_to_the_first_seen():
    assert majority_answer(["5", "7", "7", "5"]) == 5.0
    assert majority_answer(["7", "5", "5", "7"]) == 7.0
    close(answer_features(["5", "7", "7", "5"], "math")[:, 2], [1.0, 0.0, 0.0, 1.0])


def test_majority_rounds_to_two_decimals_and_neighbours_do_not_match():
    # 2.004 and 2.001 both round to 2.0 (the majority); 2.01 is one rounding unit away, not equal
    assert majority_answer(["2.004", "2.001", "2.01"]) == 2.0
    close(answer_features(["2.004", "2.001", "2.01"], "math")[:, 2], [1.0, 1.0, 0.0])


def test_zero_majority_counts():
    close(answer_features(["#### 0", "#### 0", "#### 1"], "math")[:, 2], [1.0, 1.0, 0.0])


def test_majority_ignores_unparseable_answers():
    assert majority_answer(["none", "nothing", "#### 4"]) == 4.0
    assert majority_answer(["none", "nothing"]) is None
    assert majority_answer([]) is None
    close(answer_features(["none", "nothing"], "math"), [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("domain", ["choice", "code"])
def test_other_domains_give_zeros(domain):
    close(answer_features(["#### 12", "#### B"], domain), [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_empty_group_and_unknown_domain():
    assert answer_features([], "math").shape == (0, ANSWER_FEAT_DIM)
    with pytest.raises(UserError, match="unknown answer domain 'physics'"):
        answer_features(["1"], "physics")
