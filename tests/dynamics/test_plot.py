"""recurrax.plot draws what it is given and writes PNGs; without matplotlib it says how to get it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # no display; the plot functions make Figures without pyplot anyway

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import recurrax as rx  # noqa: E402
from recurrax import dynamics as dyn  # noqa: E402
from recurrax import plot  # noqa: E402


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


def _lines(fig):
    return {line.get_label(): np.asarray(line.get_ydata()) for line in fig.axes[0].lines}


def test_each_plot_takes_what_its_dynamics_namesake_returns(tmp_path):
    cell = rx.lstm(3)
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (6, 2))

    flow = dyn.gradient_flow(cell, params, xs, lambda s: jnp.sum(s.h))
    lines = _lines(plot.gradient_flow(flow))
    assert set(lines) == {"h", "c"}
    np.testing.assert_allclose(lines["c"], np.where(flow.norms.c > 0, flow.norms.c, np.nan), rtol=1e-6)
    norms = dyn.jacobian_product_norms(cell, params, xs)
    lines = _lines(plot.gradient_flow(norms))
    assert set(lines) == {"h<-h", "h<-c", "c<-h", "c<-c", "total"}  # d out_T / d in_t
    np.testing.assert_allclose(lines["c<-h"], np.where(norms.blocks.c.h > 0, norms.blocks.c.h, np.nan), rtol=1e-6)
    np.testing.assert_allclose(_lines(plot.gradient_flow({"run": flow}))["run"], flow.total, rtol=1e-6)

    spectrum = dyn.lyapunov_spectrum(cell, params, xs)
    np.testing.assert_allclose(_lines(plot.lyapunov_spectrum(spectrum))["exponents"], spectrum.exponents, rtol=1e-6)
    np.testing.assert_allclose(_lines(plot.lyapunov_spectrum({"a": spectrum}))["a"], spectrum.exponents, rtol=1e-6)
    assert np.isnan(_lines(plot.lyapunov_spectrum({"y": [0.1, -np.inf]}))["y"][1])  # -inf (a read-out) left out

    kick = dyn.field_perturbation(cell.initial_state(params, ()), "c", 0.2)
    response = dyn.perturbation_response(cell, params, xs, kick, t0=2)
    for fig in (plot.perturbation_decay(response), plot.perturbation_response(response)):
        lines = _lines(fig)  # t0 found from the response; every field as a share of the whole kick
        assert set(lines) == {"h", "c", "total"}
        np.testing.assert_allclose(lines["total"], response.total[2:] / response.total[2], rtol=1e-6)
        np.testing.assert_allclose(lines["h"], response.distance.h[2:] / response.total[2], rtol=1e-6)
    lines = _lines(plot.perturbation_decay({"lstm": response}))
    np.testing.assert_allclose(lines["lstm"], response.total[2:] / response.total[2], rtol=1e-6)

    scales = dyn.gate_timescales(cell, params, xs)
    want = np.sort(np.asarray(scales.unit_tau))[::-1]
    np.testing.assert_allclose(_lines(plot.timescales(scales))["timescales"], want, rtol=1e-6)
    np.testing.assert_allclose(_lines(plot.timescales({"gru": scales}))["gru"], want, rtol=1e-6)

    elman = rx.elman(3, use_bias=False)  # contracting: one fixed point, the origin, found in a few steps
    small = jax.tree.map(lambda w: 0.3 * w, elman.init(jax.random.key(2), 2))
    states = dyn.trajectory(elman, small, xs, rx.RNNState(jnp.ones(3)))
    found = dyn.find_fixed_points(elman, small, jnp.zeros(2), jax.tree.map(lambda s: s[:3], states), num_steps=200)
    fig = plot.fixed_points(states, found)
    old = plot.fixed_points(dyn.flatten(states), dyn.flatten(found.states), found.linearization.stability)
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[0].collections) == len(old.axes[0].collections) >= 1
    for new, ref in zip(fig.axes[0].collections, old.axes[0].collections):
        np.testing.assert_allclose(new.get_offsets(), ref.get_offsets(), rtol=1e-6)
    fig.savefig(tmp_path / "fixed.png")
    assert (tmp_path / "fixed.png").stat().st_size > 1000


def test_plots_take_lru_results():
    # Complex fields arrive in their real view (dynamics.flatten); the read-out's -inf exponents are left out.
    cell = rx.lru(2, 2)
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (20, 2))
    plot.fixed_points(dyn.trajectory(cell, params, xs), dyn.flatten(cell.initial_state(params, ()))[None])
    lines = _lines(plot.lyapunov_spectrum(dyn.lyapunov_spectrum(cell, params, xs)))
    assert np.all(np.isfinite(lines["exponents"][:4]))
    assert set(_lines(plot.gradient_flow(dyn.jacobian_product_norms(cell, params, xs)))) == {
        "x<-x",
        "x<-y",
        "y<-x",
        "y<-y",
        "total",
    }


def test_stack_results_keep_their_layer_names_even_nested():
    net = rx.stacked([rx.stacked([rx.lstm(3), rx.gru(2)]), rx.lstm(2)])
    params = net.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (5, 2))
    flow = plot.gradient_flow(dyn.gradient_flow(net, params, xs, lambda s: jnp.sum(s[1].h)))
    assert [line.get_label() for line in flow.axes[0].lines] == ["0.0.h", "0.0.c", "0.1.h", "1.h", "1.c"]
    labels = [
        line.get_label() for line in plot.gradient_flow(dyn.jacobian_product_norms(net, params, xs)).axes[0].lines
    ]
    assert labels[:3] == ["0.0.h<-0.0.h", "0.0.h<-0.0.c", "0.0.h<-0.1.h"] and "1.c<-0.1.h" in labels
    assert len(labels) == 26 and labels[-1] == "total"
    flat = rx.stacked([rx.lstm(3), rx.lstm(2)])
    taus = plot.timescales(dyn.gate_timescales(flat, flat.init(jax.random.key(0), 2), xs))
    assert [line.get_label() for line in taus.axes[0].lines] == ["layer 0", "layer 1"]
    with pytest.raises(TypeError, match=r"must be a dynamics\.Report"):
        plot.report({"c": [1.0]})
