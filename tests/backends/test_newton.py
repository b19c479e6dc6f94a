"""The Newton backend (``recurrax.backends.newton``) beyond the conformance suite, which holds it to the reference
on every cell and option at T = 6: long sequences, the predictability result, failures, warm starts, the
trust-region solve against a dense least-squares solve, and its arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax as rx
from recurrax import backends
from recurrax.backends import nonlinear
from reference import random_params

TOL = dict(rtol=1e-5, atol=1e-5)


def _contracting(cell: rx.Cell, input_size: int, seed: int = 0, scale: float = 0.3):
    """Params whose recurrent weights are scaled down, as trained networks' often are: a predictable run."""
    params = random_params(cell, seed, input_size)
    return dict(params, w_h=scale * params["w_h"] / jnp.max(jnp.abs(params["w_h"])))


def _elman(gain: float, n: int = 16, seed: int = 0):
    """``h' = tanh(g W h + x)`` with ``W ~ N(0, 1/N)``: chaotic for ``g > 1`` at large ``N`` (Sompolinsky 1988)."""
    cell = rx.elman(n)
    w = jax.random.normal(jax.random.key(seed), (n, n)) / np.sqrt(n)
    return cell, dict(w_i=jnp.eye(n), w_h=gain * w, b=jnp.zeros(n))


# Two cells at this length; every cell is held to `sequential` at short lengths by the conformance suite.
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_equals_sequential_at_16k_steps_values_and_gradients(name):
    cell = getattr(rx, name)(4)
    params = _contracting(cell, 3)
    xs = jax.random.normal(jax.random.key(1), (16384, 3))

    def loss(params, xs, backend):
        final, ys = rx.scan(cell, params, xs, backend=backend)
        loss = jnp.sum(ys * jnp.cos(jnp.arange(ys.shape[0]))[:, None]) + sum(jnp.sum(s) for s in jax.tree.leaves(final))
        return loss, ys

    run = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=2)
    (_, got_ys), got = run(params, xs, "newton")
    # Both are held to the float64 sequential run: a parameter's gradient sums 16k terms, which float32 rounds
    # differently in every order of summation (the sequential backend's own float32 gradients are ~4e-6 of
    # their scale away from float64's).
    with jax.enable_x64():
        as64 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), tree)  # noqa: E731
        (_, want_ys), want = run(as64(params), as64(xs), "sequential")
    np.testing.assert_allclose(got_ys, want_ys, **TOL)
    for key in want:
        scale = max(1.0, float(np.max(np.abs(want[key]))))
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5 * scale, err_msg=key)


def test_predictable_runs_converge_in_few_iterations_and_chaotic_ones_do_not():
    """Gonzalez et al. 2025: the iterations stay small when lambda_max < 0 and grow towards T when it is > 0."""
    xs = 0.1 * jax.random.normal(jax.random.key(5), (4096, 16))
    solve = jax.jit(
        lambda cell, p, x, cap, tol=None: nonlinear.solve(cell, p, x, max_iters=cap, tol=tol, on_failure="nan"),
        static_argnums=(0, 3, 4),
    )
    cell, stable = _elman(0.5)
    _, chaotic = _elman(2.0)
    _, info = solve(cell, stable, xs, 20)
    assert bool(info.converged) and int(info.iterations) <= 20, info
    _, info = solve(cell, chaotic, xs, 20)
    assert not bool(info.converged)
    # Measured (tol 1e-5, as float32 round-off is amplified along a chaotic run): stable 2 iterations at every T,
    # chaotic 8, 16, 28, 56 at T = 16, 32, 64, 128: about T / 2.
    for num_steps in (16, 64, 128):
        _, info = solve(cell, stable, xs[:num_steps], num_steps, 1e-5)
        assert bool(info.converged) and int(info.iterations) <= 4, info
        _, info = solve(cell, chaotic, xs[:num_steps], num_steps, 1e-5)
        assert bool(info.converged) and int(info.iterations) >= num_steps // 3, info
    measured = [rx.dynamics.parallelizability(cell, p, xs[:512]) for p in (stable, chaotic)]
    assert float(measured[0].lambda_max) < 0 < float(measured[1].lambda_max)
    assert bool(measured[0].predictable) and not bool(measured[1].predictable)
    assert np.isfinite(float(measured[0].memory)) and np.isinf(float(measured[1].memory))


def test_an_unconverged_solve_falls_back_returns_nan_or_raises_as_asked():
    cell, params = _elman(2.0, n=8)
    xs = 0.1 * jax.random.normal(jax.random.key(5), (256, 8))
    want = rx.scan(cell, params, xs, backend="sequential")[1]
    got = rx.scan(cell, params, xs, backend=backends.newton(max_iters=3))[1]
    np.testing.assert_allclose(got, want, **TOL)
    nan = rx.scan(cell, params, xs, backend=backends.newton(max_iters=3, on_failure="nan"))[1]
    assert bool(jnp.all(jnp.isnan(nan)))
    with pytest.raises(ValueError, match="not converged after"):
        rx.scan(cell, params, xs, backend=backends.newton(max_iters=3, on_failure="raise"))
    with pytest.raises(Exception, match="not converged after"):
        jax.block_until_ready(
            jax.jit(lambda p: rx.scan(cell, p, xs, backend=backends.newton(max_iters=3, on_failure="raise")))(params)
        )


@pytest.mark.parametrize(
    "config",
    [dict(), dict(method="diagonal"), dict(damping=0.5), dict(method="diagonal", damping=0.5)],
    ids=["full", "diagonal", "damped", "diagonal_damped"],
)
def test_gradients_pass_check_grads(config):
    cell = rx.gru(3)
    params = _contracting(cell, 2)
    xs = jax.random.normal(jax.random.key(2), (2, 5, 2))
    backend = backends.newton(**config, max_iters=200)

    def loss(params, xs):
        final, ys = rx.scan(cell, params, xs, backend=backend)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(s) for s in jax.tree.leaves(final))

    check_grads(jax.jit(loss), (params, xs), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    np.testing.assert_allclose(loss(params, xs), _seq_loss(cell, params, xs), **TOL)


def _seq_loss(cell, params, xs):
    final, ys = rx.scan(cell, params, xs, backend="sequential")
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(s) for s in jax.tree.leaves(final))


def test_every_method_converges_to_the_sequential_states():
    cell = rx.lstm(4)
    params = _contracting(cell, 3)
    xs = jax.random.normal(jax.random.key(3), (3, 40, 3))
    want = rx.scan(cell, params, xs, backend="sequential", return_states=True)[2]
    # Plain full and diagonal Newton are held to the reference by the conformance suite and the 16k test.
    for config in [
        dict(method="diagonal", diagonal="hutchinson", probes=2, key=jax.random.key(0)),
        dict(damping=0.2),
        dict(method="diagonal", damping=0.2),
    ]:
        states, info = nonlinear.solve(cell, params, xs, max_iters=300, on_failure="nan", **config)
        assert bool(info.converged), (config, info)
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, **TOL), states, want)


def test_a_warm_start_at_the_solution_needs_no_iteration():
    cell = rx.gru(5)
    params = _contracting(cell, 3)
    xs = jax.random.normal(jax.random.key(4), (2, 30, 3))
    states, info = nonlinear.solve(cell, params, xs)
    assert int(info.iterations) > 0
    again, info = nonlinear.solve(cell, params, xs, guess=states)
    assert int(info.iterations) == 0 and bool(info.converged)
    jax.tree.map(np.testing.assert_array_equal, again, states)
    with pytest.raises(ValueError, match="guess"):
        nonlinear.solve(cell, params, xs, guess=jax.tree.map(lambda s: s[:, :5], states))


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "diagonal"])
def test_the_trust_region_step_is_the_least_squares_solution(dense):
    """ELK's step, ``argmin sum |s_t - a_t s_{t-1} - c_t|^2 + d |s_t - g_t|^2``, against numpy's lstsq."""
    rng = np.random.default_rng(0)
    num_steps, n, d = 6, 3, 0.7
    a = 0.6 * rng.normal(size=(num_steps, n, n) if dense else (num_steps, n))
    c, guess, s0 = rng.normal(size=(num_steps, n)), rng.normal(size=(num_steps, n)), rng.normal(size=n)
    mats = a if dense else np.stack([np.diag(row) for row in a])
    rows, rhs = [], []
    for t in range(num_steps):
        fit = np.zeros((n, num_steps * n))
        fit[:, t * n : (t + 1) * n] = np.eye(n)
        target = c[t] + (mats[0] @ s0 if t == 0 else 0)
        if t:
            fit[:, (t - 1) * n : t * n] = -mats[t]
        near = np.zeros((n, num_steps * n))
        near[:, t * n : (t + 1) * n] = np.sqrt(d) * np.eye(n)
        rows += [fit, near]
        rhs += [target, np.sqrt(d) * guess[t]]
    want = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0].reshape(num_steps, n)
    f = c.copy()
    f[0] += mats[0] @ s0  # the step at t = 0 from the known s_{-1}
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got = nonlinear._smoothed(f32(a), f32(f), f32(c), f32(guess), d, dense)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    plain = nonlinear._smoothed(f32(a), f32(f), f32(c), f32(guess), 0.0, dense)
    np.testing.assert_allclose(plain, nonlinear._affine(f32(a), f32(c), f32(s0), dense), rtol=1e-5, atol=1e-5)


def test_complex_states_are_refused_by_name():
    cell = rx.lru(4, 3)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((2, 5, 3))
    assert "complex64" in backends.available(cell, params, xs)["newton"]
    with pytest.raises(ValueError, match="'newton' needs a real state"):
        rx.scan(cell, params, xs, backend="newton")


@pytest.mark.parametrize(
    "config,match",
    [
        (dict(method="dense"), "`method`"),
        (dict(method="diagonal", diagonal="probe"), "`diagonal`"),
        (dict(method="diagonal", diagonal="hutchinson"), "needs `key`"),
        (dict(max_iters=0), "`max_iters`"),
        (dict(probes=1.5), "`probes`"),
        (dict(damping=-1.0), "`damping`"),
        (dict(damping=float("nan")), "`damping`"),
        (dict(tol=0.0), "`tol`"),
        (dict(on_failure="warn"), "`on_failure`"),
    ],
)
def test_bad_arguments_are_refused_by_name(config, match):
    with pytest.raises(ValueError, match=match):
        backends.newton(**config)


def test_auto_never_chooses_newton():
    cell = rx.gru(4)
    params = cell.init(jax.random.key(0), 3)
    assert backends.which(cell, params, jnp.ones((2, 4096, 3))) != "newton"
