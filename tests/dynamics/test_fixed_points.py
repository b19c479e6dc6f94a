"""The fixed-point finder where the answer is known: a 2-unit map with 3 fixed points, a 3-bit flip-flop."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import dynamics as dyn


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
