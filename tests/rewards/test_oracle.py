"""DAPO's overlong penalty (`memrl.rewards.oracle.overlong_penalty`) against hand-computed values."""

from __future__ import annotations

import pytest

from memrl.rewards.oracle import overlong_penalty

# ---------------------------------------------------------------------------------------------------
# overlong_penalty (DAPO): max 20, buffer 4 -> the buffer starts at 20 - 4 = 16


def test_overlong_no_penalty_up_to_buffer_start():
    # L <= 16: -(L - 16) / 4 >= 0 -> min(., 0) = 0
    assert overlong_penalty(10, 20, 4) == 0.0
    assert overlong_penalty(16, 20, 4) == 0.0


def test_overlong_linear_inside_buffer():
    # L=18: -(18 - 16) / 4 * 1 = -0.5 (half-way -> -factor/2);  L=17: -1/4 = -0.25
    assert overlong_penalty(18, 20, 4) == pytest.approx(-0.5)
    assert overlong_penalty(17, 20, 4) == pytest.approx(-0.25)
    # factor 0.5: L=18 -> -2/4 * 0.5 = -0.25
    assert overlong_penalty(18, 20, 4, factor=0.5) == pytest.approx(-0.25)
    # MEDS settings (max 3072, buffer 512): L=2816 -> -(2816 - 2560) / 512 = -0.5
    assert overlong_penalty(2816, 3072, 512) == pytest.approx(-0.5)


def test_overlong_full_penalty_at_max():
    # L=20: -(20 - 16) / 4 * factor = -factor
    assert overlong_penalty(20, 20, 4) == pytest.approx(-1.0)
    assert overlong_penalty(20, 20, 4, factor=0.5) == pytest.approx(-0.5)


def test_overlong_buffer_zero_is_off():
    assert overlong_penalty(20, 20, 0) == 0.0
    assert overlong_penalty(25, 20, 0, factor=2.0) == 0.0
