"""The fixed-point finder where the answer is known: a 2-unit map with 3 fixed points, a 3-bit flip-flop."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax as rx
from recurrax import dynamics as dyn
from reference import gru as np_gru
from reference import to_numpy


def cubic_pair():
    """``h1' = phi(h1), h2' = phi(h1)`` with ``phi(a) = a + (a - a^3) / 2``.

    Fixed points: ``h1 = phi(h1)`` iff ``h1 in {-1, 0, 1}``, and then ``h2 = h1``: exactly three,
    ``(-1, -1), (0, 0), (1, 1)``. The Jacobian ``[[phi'(h1), 0], [phi'(h1), 0]]`` has eigenvalues
    ``{phi'(h1), 0}``, with ``phi'(a) = 1 + (1 - 3 a^2) / 2``: ``{0, 0}`` at ``+-1`` (stable) and
    ``{1.5, 0}`` at the origin (a saddle).
    """
    cell = rx.elman(2, activation=lambda a: a + 0.5 * (a - a**3), use_bias=False)
    params = {"w_i": jnp.zeros((1, 2)), "w_h": jnp.asarray([[1.0, 1.0], [0.0, 0.0]])}
    return cell, params


def test_finds_the_three_fixed_points_of_the_cubic_pair():
    cell, params = cubic_pair()
    starts = rx.RNNState(jax.random.uniform(jax.random.key(0), (64, 2), minval=-1.5, maxval=1.5))
    found = dyn.find_fixed_points(cell, params, jnp.zeros(1), starts, num_steps=300)
    order = np.argsort(np.asarray(found.states.h[:, 0]))
    np.testing.assert_allclose(found.states.h[order], [[-1, -1], [0, 0], [1, 1]], atol=1e-5)
    assert found.num_candidates == 64 and found.num_converged >= 3
    stability = np.asarray(found.linearization.stability)[order]
    assert [dyn.STABILITY_NAMES[s] for s in stability] == ["stable", "saddle", "stable"]
    moduli = np.abs(np.asarray(found.linearization.eigenvalues))[order]
    np.testing.assert_allclose(moduli, [[0, 0], [1.5, 0], [0, 0]], atol=1e-4)
    # The stable points forget in no time; the saddle's slow mode does not decay at all.
    assert np.isinf(found.linearization.time_constants[order][1, 0])


def flip_flop():
    """A 3-bit flip-flop (Sussillo & Barak, 2013) built by hand: three bistable tanh units, weakly coupled.

    ``h' = tanh(x W_i + h W_h)`` with ``W_h = diag(2, 2.5, 3) + 0.05 R``: each unit alone has the
    stable states ``+-h*`` (``h* = tanh(g h*)``) and an unstable 0, so the autonomous network has
    ``2^3 = 8`` stable memory states (one per sign pattern), 12 + 6 saddles and one unstable
    point; an input pulse of +-1 on channel ``k`` (``W_i = 4 I``) sets bit ``k``.
    """
    coupling = np.random.default_rng(0).normal(size=(3, 3))
    w_h = np.diag([2.0, 2.5, 3.0]) + 0.05 * (coupling - np.diag(np.diag(coupling)))
    cell = rx.elman(3, use_bias=False)
    return cell, {"w_i": 4.0 * jnp.eye(3), "w_h": jnp.asarray(w_h, jnp.float32)}


def test_finds_the_eight_memory_states_of_the_flip_flop():
    cell, params = flip_flop()
    # The network does its job: pulses set the bits, and they are held with zero input.
    pulses = np.zeros((8, 3), np.float32)
    pulses[0], pulses[3], pulses[5] = [1, -1, 0], [0, 0, -1], [-1, 0, 0]
    held = dyn.trajectory(cell, params, jnp.asarray(pulses)).h[-1]
    np.testing.assert_array_equal(np.sign(held), [-1, -1, -1])

    starts = rx.RNNState(jax.random.uniform(jax.random.key(1), (256, 3), minval=-1.0, maxval=1.0))
    found = dyn.find_fixed_points(cell, params, jnp.zeros(3), starts, num_steps=500)
    stable = np.asarray(found.linearization.stability) == dyn.STABLE
    points = np.asarray(found.states.h)[stable]
    assert len(points) == 8
    assert {tuple(p) for p in np.sign(points).astype(int)} == set(itertools.product([-1, 1], repeat=3))
    # Each is a fixed point of the NumPy map, and attracting: 200 steps from a nearby state return to it.
    w_h = np.asarray(params["w_h"], np.float64)
    for p in points:
        np.testing.assert_allclose(np.tanh(p @ w_h), p, atol=1e-5)
        h = p + 0.05
        for _ in range(200):
            h = np.tanh(h @ w_h)
        np.testing.assert_allclose(h, p, atol=1e-4)
    assert np.sum(np.asarray(found.linearization.stability) == dyn.UNSTABLE) <= 1


def flip_flop_batch(key, batch=64, T=40, p=0.1):
    """The 3-bit flip-flop task: +-1 pulses on 3 channels (one at t = 0); the target holds each channel's last pulse."""
    k_pulse, k_sign = jax.random.split(key)
    pulses = jax.random.bernoulli(k_pulse, p, (batch, T, 3)).at[:, 0].set(True)
    xs = pulses * jnp.where(jax.random.bernoulli(k_sign, 0.5, (batch, T, 3)), 1.0, -1.0)
    _, ys = jax.lax.scan(
        lambda held, x: (jnp.where(x != 0, x, held),) * 2, jnp.zeros((batch, 3)), jnp.moveaxis(xs, 1, 0)
    )
    return xs, jnp.moveaxis(ys, 0, 1)


def test_trained_flip_flop_gru_has_eight_stable_memory_states():
    # Sussillo & Barak (2013): a network trained on the task stores each of the 2^3 outputs as a stable fixed point.
    cell, H = rx.gru(16), 16
    k_cell, k_out, k_data, k_probe, k_start = jax.random.split(jax.random.key(0), 5)
    params = {"cell": cell.init(k_cell, 3), "w": 0.1 * jax.random.normal(k_out, (H, 3))}
    tx = optax.adam(1e-2)

    def loss_fn(p, xs, ys):
        return jnp.mean((rx.scan(cell, p["cell"], xs)[1] @ p["w"] - ys) ** 2)

    def step(carry, key):
        p, opt = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, *flip_flop_batch(key))
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), loss

    (params, _), losses = jax.jit(lambda p, keys: jax.lax.scan(step, (p, tx.init(p)), keys))(
        params, jax.random.split(k_data, 500)
    )
    assert float(losses[-20:].mean()) < 0.01  # trained: the baseline (predict 0) is 1

    states = jax.vmap(lambda xs: dyn.trajectory(cell, params["cell"], xs))(flip_flop_batch(k_probe)[0]).h
    starts = rx.RNNState(jax.random.choice(k_start, states.reshape(-1, H), (256,), replace=False))
    found = dyn.find_fixed_points(cell, params["cell"], jnp.zeros(3), starts, num_steps=500, tol_q=1e-8)
    stable = np.asarray(found.states.h)[np.asarray(found.linearization.stability) == dyn.STABLE]
    outputs = stable @ np.asarray(params["w"])
    assert len(stable) == 8
    assert {tuple(o) for o in np.sign(outputs).astype(int)} == set(itertools.product([-1, 1], repeat=3))
    np.testing.assert_allclose(np.abs(outputs), 1.0, atol=0.2)  # each state reads out as its bit pattern
    # Fixed points of the NumPy GRU equations too.
    p = to_numpy(params["cell"])
    for h in stable:
        np.testing.assert_allclose(np_gru(p, (h,), np.zeros(3))[0], h, atol=1e-5)


def test_minimize_speed_and_linearize_jit_and_vmap():
    cell, params = cubic_pair()
    starts = rx.RNNState(jnp.asarray([[0.9, 0.2], [-0.7, 0.4], [0.1, -0.1]]))

    def run(p):
        ends, q = dyn.minimize_speed(cell, p, jnp.zeros(1), starts, num_steps=200)
        return ends, q, jax.vmap(lambda s: dyn.linearize(cell, p, s, jnp.zeros(1)).stability)(ends)

    eager = run(params)
    chex.assert_trees_all_close(jax.jit(run)(params), eager, atol=1e-6)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], jax.vmap(run)(stacked)), eager, atol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(lambda s: dyn.speed(cell, params, s, jnp.zeros(1)))(eager[0]), eager[1], rtol=1e-5, atol=1e-12
    )


def test_bad_input():
    cell, params = cubic_pair()
    starts = rx.RNNState(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`x`.*\(I,\)"):
        dyn.find_fixed_points(cell, params, jnp.zeros((2, 1)), starts)
    with pytest.raises(ValueError, match=r"`x`"):
        dyn.find_fixed_points(cell, params, jnp.zeros(3), starts)
    with pytest.raises(TypeError, match="floating"):
        dyn.find_fixed_points(cell, params, jnp.zeros(1), rx.RNNState(jnp.zeros((4, 2), jnp.int32)))
