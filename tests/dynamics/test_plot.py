"""recurrax.plot draws what it is given and writes PNGs; without matplotlib it says how to get it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from recurrax import dynamics as dyn
from recurrax import plot


def test_curves_and_points_are_drawn_and_saved(tmp_path):
    norms = {"c": np.geomspace(1e-3, 1.0, 11), "h": np.geomspace(1e-8, 1.0, 11)}
    fig = plot.gradient_flow(norms)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), np.arange(10, -1, -1))  # steps back from T
    np.testing.assert_allclose(line.get_ydata(), norms["c"])
    fig.savefig(tmp_path / "flow.png")
    zeros = plot.gradient_flow({"c": [0.0, 1.0]}).axes[0].lines[0].get_ydata()  # nothing drawn at 0 on a log axis
    assert np.isnan(zeros[0]) and zeros[1] == 1.0

    fig = plot.lyapunov_spectrum({"lstm": [0.1, -0.2, -0.5]})
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [0.1, -0.2, -0.5])

    fig = plot.perturbation_decay({"c": [0, 0, 2.0, 1.0, 0.5]}, t0=2)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1.0, 0.5, 0.25])

    rng = np.random.default_rng(0)
    trajectory = rng.normal(size=(50, 4)) * [3.0, 1.0, 0.1, 0.1]
    fig = plot.fixed_points(trajectory.reshape(2, 25, 4), trajectory[:3], [dyn.STABLE, dyn.SADDLE, dyn.STABLE])
    assert len(fig.axes[0].lines) == 2  # one path per run, not joined
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"trajectories", "stable", "saddle"}
    fig.savefig(tmp_path / "fixed.png")
    assert (tmp_path / "flow.png").stat().st_size > 1000 and (tmp_path / "fixed.png").stat().st_size > 1000


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"recurrax\[plot\]"):
        plot.gradient_flow({"h": [1.0]})
