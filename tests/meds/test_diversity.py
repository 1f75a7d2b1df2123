"""Diversity diagnostics: covariance eigenvalue ratio, distinct answers, across-step novelty."""

from __future__ import annotations

import math

import pytest
import torch

from memrl.meds.diversity import AnswerNovelty, distinct_answers, top1_eigen_ratio


def test_top1_eigen_ratio():
    # points on a line: all variance on one direction
    line = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]])
    assert top1_eigen_ratio(line) == pytest.approx(1.0)
    # the four corners of a square: equal variance on both axes
    square = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert top1_eigen_ratio(square) == pytest.approx(0.5)
    # variances 4 and 1 on the axes: 4 / 5
    x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert top1_eigen_ratio(x) == pytest.approx(0.8)
    assert math.isnan(top1_eigen_ratio(torch.ones(1, 3)))
    assert math.isnan(top1_eigen_ratio(torch.ones(4, 3)))


def test_distinct_and_novel_answers():
    assert distinct_answers(["4", "4", "5", None]) == 3
    nov = AnswerNovelty()
    assert math.isnan(nov.update([("p", ["1", "2"])]))  # a first visit does not count
    assert nov.update([("p", ["1", "3", "3", "2"]), ("q", ["9"])]) == pytest.approx(0.5)
    assert nov.update([("q", ["9", "8"])]) == pytest.approx(0.5)
    restored = AnswerNovelty()
    restored.load_state_dict(nov.state_dict())
    assert restored.seen == nov.seen
