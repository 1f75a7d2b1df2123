"""Training-curve plot: panels follow the logged metrics; the PNG is written."""

from __future__ import annotations

from memrl.rl.plots import curve, plot_training_curves


def _rows():
    rows = []
    for step in range(1, 7):
        row = {"step": step, "reward/gt_acc": 0.1 * step, "critic/score/mean": 0.05 * step, "actor/grad_norm": 1.0}
        if step % 3 == 0:
            row.update({"val/greedy_acc": 0.2, "val/mean@8": 0.15})
        rows.append(row)
    return rows


def test_curve_takes_rows_that_carry_the_key_and_expands_a_prefix():
    rows = _rows()
    assert curve(rows, "val/greedy_acc") == ([3, 6], [0.2, 0.2])
    assert curve(rows, "val/mean@*") == ([3, 6], [0.15, 0.15])
    assert curve(rows, "reward/gt_acc")[0] == [1, 2, 3, 4, 5, 6]
    assert curve(rows, "actor/entropy") == ([], [])
    assert curve(rows, "val/pass@*") == ([], [])


def test_plot_draws_only_panels_with_data(tmp_path):
    path = tmp_path / "curves.png"
    drawn = plot_training_curves(_rows(), path)
    assert drawn == ["accuracy", "reward", "update"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))


def test_plot_with_no_known_metric_writes_nothing(tmp_path):
    assert plot_training_curves([{"step": 1, "other": 1.0}], tmp_path / "c.png") == []
    assert not (tmp_path / "c.png").exists()
