"""``dynamics.report`` against closed forms, and the per-layer analyses it is built on.

An LRU whose units all have the same modulus ``r`` is a known case for every number the report gives (with its
read-out ``C = 0``, so a kick stays in ``x``): a kick to ``x`` keeps exactly ``r^k`` of its size after ``k`` steps
(each unit rotates and shrinks by ``r``), ``|| d x_T / d x_t || = r^(T - t)``, the gradient through ``x`` shrinks
by ``r`` per step back, the gate timescale is ``-1 / log r`` and the Lyapunov spectrum holds ``log r`` twice per
unit. Stacks are checked against each layer run on its own with ``rx.scan`` on what the layer below output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import dynamics as dyn

R, N, T = 0.8, 3, 10


def _lru():
    cell = rx.lru(2, N)
    params = cell.init(jax.random.key(0), 2)
    params["nu_log"] = jnp.full((N,), np.log(-np.log(R)), jnp.float32)  # |lambda| = exp(-exp(nu_log)) = R
    # y = Re(C x) + D u: with C = 0 a kick to x moves x alone, so the distance of the whole state is x's.
    params["c_re"], params["c_im"] = jnp.zeros_like(params["c_re"]), jnp.zeros_like(params["c_im"])
    return cell, params


def test_the_report_of_an_lru_of_one_modulus_gives_the_closed_forms():
    cell, params = _lru()
    xs = jax.random.normal(jax.random.key(1), (4, T, 2))
    rep = dyn.report(cell, params, xs, key=jax.random.key(2), t0=2, loss_fn=lambda s: jnp.sum(s.y) + jnp.sum(s.x.real))
    assert rep.fields == ("x", "y") and rep.num_steps == T and rep.notes == ()
    steps = np.arange(T - 2 + 1)
    np.testing.assert_allclose(rep.retention["x"][2:], R**steps, rtol=1e-4)  # a 1e-2 kick, in float32
    np.testing.assert_array_equal(rep.retention["x"][:2], 0.0)
    np.testing.assert_allclose(rep.products["x"], R ** np.arange(T, -1, -1), rtol=1e-5)
    back = np.arange(T, 0, -1)  # t = 0 .. T - 1: the gradient reaches x_t through x_T only
    np.testing.assert_allclose(rep.gradient["x"][:-1] / rep.gradient["x"][-1], R**back, rtol=1e-5)
    np.testing.assert_allclose(rep.timescales["x"], np.full(N, -1 / np.log(R)), rtol=1e-5)
    np.testing.assert_allclose(rep.lyapunov[: 2 * N], np.log(R), rtol=1e-4)
    assert rep.lyapunov_finite and rep.kaplan_yorke == 0.0 and rep.ks_entropy == 0.0
    assert rep.gradient_at(3) == {f: float(c[T - 3]) for f, c in rep.gradient.items()}
    assert rep.retained_after(4)["x"] == pytest.approx(R**4, rel=1e-4)
    assert rep.fixed_points is None and rep.trajectories is None


def test_a_stack_is_reported_per_layer_and_field():
    net = rx.stacked([rx.lstm(4), rx.gru(3)])
    params = net.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (3, 8, 2))
    rep = dyn.report(
        net,
        params,
        xs,
        key=jax.random.key(2),
        fixed_point_input=jnp.zeros(2),
        fixed_point_starts=6,
        fixed_point_steps=50,
    )
    assert rep.fields == ("0.h", "0.c", "1.h")
    assert set(rep.gradient) == set(rep.retention) == set(rep.fields) and set(rep.products) == {*rep.fields, "total"}
    # The second layer's gate timescales, from the GRU run alone on what the LSTM below output.
    lstm, gru = rx.lstm(4), rx.gru(3)
    _, below = rx.scan(lstm, params[0], xs)
    gates = jax.vmap(lambda x: dyn.gate_timescales(gru, params[1], x).gate)(below)
    np.testing.assert_allclose(rep.timescales["1.h"], np.sort(dyn.gate_tau(gates.mean((0, 1))))[::-1], rtol=1e-5)
    gates = jax.vmap(lambda x: dyn.gate_timescales(lstm, params[0], x).gate)(xs)
    np.testing.assert_allclose(rep.timescales["0.c"], np.sort(dyn.gate_tau(gates.mean((0, 1))))[::-1], rtol=1e-5)
    assert rep.trajectories.shape == (3, 9, 11) and rep.fixed_points is not None
    record = rep.to_dict()
    assert record["fields"] == ["0.h", "0.c", "1.h"] and "fixed_points" in record
    with pytest.raises(ValueError, match=r"`steps_back` must be an int in \[0, 8\], got 9"):
        rep.gradient_at(9)
    with pytest.raises(ValueError, match=r"`steps` must be an int in \[0, 7\], got 8"):
        rep.retained_after(8)

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from recurrax import plot

    figures = plot.report(rep, label="stack")
    assert set(figures) == {
        "gradient_flow.png",
        "perturbation.png",
        "lyapunov.png",
        "timescales.png",
        "slow_points.png",
    }
    lines = figures["gradient_flow.png"].axes[0].lines
    assert [line.get_label() for line in lines] == ["stack 0.h", "stack 0.c", "stack 1.h"]
    curve = rep.gradient["0.c"]  # zero at T (the read-out sees the last layer's h only): not drawn on a log axis
    np.testing.assert_allclose(lines[1].get_ydata(), np.where(curve > 0, curve, np.nan))


def test_a_kick_to_the_second_layer_never_reaches_the_first():
    net = rx.as_cell(rx.stacked([rx.lstm(3), rx.lstm(2)]))
    params = net.init(jax.random.key(0), 1)
    state = net.initial_state(params, ())
    assert dyn.field_names(state) == ["0.h", "0.c", "1.h", "1.c"]
    kick = dyn.field_perturbation(state, "1.c", jnp.ones(2))
    np.testing.assert_array_equal(kick[1].c, 1.0)
    assert all(float(jnp.abs(leaf).sum()) == 0 for leaf in (kick[0].h, kick[0].c, kick[1].h))
    xs = jax.random.normal(jax.random.key(1), (6, 1))
    response = dyn.perturbation_response(net, params, xs, kick, t0=1)
    np.testing.assert_array_equal(response.distance[0].h, 0.0)
    np.testing.assert_array_equal(response.distance[0].c, 0.0)
    assert float(response.distance[1].h[-1]) > 0
    with pytest.raises(ValueError, match=r"`field` must be one of \['0.h', '0.c', '1.h', '1.c'\], got 'c'"):
        dyn.field_perturbation(state, "c", jnp.ones(2))


def test_stack_gate_timescales_and_refusals():
    gru = rx.gru(3)
    net = rx.stacked([gru, gru, gru], residual=True)
    params = net.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    got = dyn.gate_timescales(net, params, xs)
    _, out0 = rx.scan(gru, params[0], xs)
    _, out1 = rx.scan(gru, params[1], out0)
    for layer, inputs in enumerate([xs, out0, out1 + out0]):  # with residual, layer 2 reads out1 + out0
        want = dyn.gate_timescales(gru, params[layer], inputs)
        np.testing.assert_allclose(got.gate[layer], want.gate, rtol=1e-6)
        np.testing.assert_allclose(got.unit_tau[layer], want.unit_tau, rtol=1e-6)
    mixed = rx.stacked([rx.lstm(3), rx.elman(3)])
    with pytest.raises(ValueError, match=r"layer 1 of stacked.*'elman'"):
        dyn.gate_timescales(mixed, mixed.init(jax.random.key(0), 3), xs)
    other = rx.lstm(3, gate_activation=jax.nn.hard_sigmoid)
    with pytest.raises(ValueError, match="gate_activation"):
        dyn.gate_timescales(other, other.init(jax.random.key(0), 3), xs)


def test_report_refuses_bad_input_by_name():
    cell, params = _lru()
    xs = jnp.zeros((4, T, 2))
    with pytest.raises(ValueError, match=r"`xs` must be a batch of probe sequences \(B, T, I\), got shape \(10, 2\)"):
        dyn.report(cell, params, xs[0], key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`t0` must be an int in \[0, T=10\), got 10"):
        dyn.report(cell, params, xs, key=jax.random.key(0), t0=T)
    with pytest.raises(ValueError, match="`xs` does not fit"):
        dyn.report(cell, params, jnp.zeros((4, T, 5)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="must depend on the state"):
        dyn.report(cell, params, xs, key=jax.random.key(0), loss_fn=lambda s: jnp.zeros(()))


def test_per_layer_analyses_under_jit_and_vmap_equal_a_loop():
    net = rx.stacked([rx.lstm(3), rx.gru(2)])
    params = net.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (3, 5, 2))
    state = rx.as_cell(net).initial_state(params, ())
    kick = dyn.field_perturbation(state, "0.c", 0.1 * jnp.ones(3))

    def both(x):
        return dyn.gate_timescales(net, params, x).gate, dyn.perturbation_response(net, params, x, kick, t0=1).total

    batched = jax.jit(jax.vmap(both))(xs)
    for i in range(xs.shape[0]):
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(both(xs[i]))):
            np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-7)


def test_a_mixed_or_nested_stack_reports_the_gates_it_has_and_names_the_others():
    net = rx.stacked([rx.stacked([rx.lstm(3), rx.elman(3)]), rx.gru(2)])
    params = net.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 2))
    rep = dyn.report(net, params, xs, key=jax.random.key(2))
    assert rep.fields == ("0.0.h", "0.0.c", "0.1.h", "1.h")
    assert set(rep.timescales) == {"0.0.c", "1.h"}
    assert rep.notes == (
        "no gate timescales for 0.1.elman: gate timescales are defined for "
        "['gru', 'lru', 'lstm', 'mgu'], got a 'elman' cell",
    )
    _, below = rx.scan(rx.stacked([rx.lstm(3), rx.elman(3)]), params[0], xs)  # what the GRU on top reads
    gates = jax.vmap(lambda x: dyn.gate_timescales(rx.gru(2), params[1], x).gate)(below)
    np.testing.assert_allclose(rep.timescales["1.h"], np.sort(dyn.gate_tau(gates.mean((0, 1))))[::-1], rtol=1e-5)
    with pytest.raises(ValueError, match=r"layer 0 of stacked.*layer 1 of stacked.*'elman'"):
        dyn.gate_timescales(net, params, xs[0])
    replaced = rx.lstm(3)._replace(transition=rx.lstm(3).transition)
    with pytest.raises(ValueError, match="had a function replaced: its gates are unknown"):
        dyn.gate_timescales(replaced, replaced.init(jax.random.key(0), 2), xs[0])
