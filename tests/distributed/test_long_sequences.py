"""Sequences longer than memory: sqrt(T) checkpointed scans, truncated BPTT, and what they save.

References: the LSTM equations in NumPy (values); full backpropagation through ``recurrax.scan``
(checkpointing must not change a gradient); for truncation, the gradient of the sum of per-chunk
losses whose incoming states are constants; for ``tbptt``, a Python loop of optax updates.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import recurrax as rx
from recurrax.long_sequences import checkpointed_scan, tbptt, truncated_scan

H, I = 5, 3


def lstm_numpy(params, xs, lengths):
    """LSTM equations (gate order i, f, g, o) in float64; frozen state and zero outputs past each length."""
    w_i, w_h, b = (np.asarray(params[k], np.float64) for k in ("w_i", "w_h", "b"))
    batch, steps, _ = xs.shape
    h, c, ys = np.zeros((batch, H)), np.zeros((batch, H)), np.zeros((batch, steps, H))
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in range(steps):
        i, f, g, o = np.split(np.asarray(xs[:, t], np.float64) @ w_i + h @ w_h + b, 4, axis=-1)
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
        valid = (t < lengths)[:, None]
        h, c = np.where(valid, h_new, h), np.where(valid, c_new, c)
        ys[:, t] = np.where(valid, h_new, 0.0)
    return (h, c), ys


@pytest.fixture(scope="module")
def lstm():
    cell = rx.lstm(H)
    return cell, cell.init(jax.random.key(0), I), jax.random.normal(jax.random.key(1), (3, 23, I))


@pytest.mark.parametrize("segment_size", [None, 4, 23, 50])  # sqrt default (5), a remainder, one, clipped
def test_checkpointed_scan_equals_numpy_lstm_with_lengths(lstm, segment_size):
    cell, params, xs = lstm
    lengths = np.array([23, 9, 0])
    final, ys = jax.jit(lambda p, x: checkpointed_scan(cell, p, x, lengths=lengths, segment_size=segment_size))(
        params, xs
    )
    (h, c), ys_ref = lstm_numpy(params, xs, lengths)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.h, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.c, c, rtol=1e-5, atol=1e-6)


def test_checkpointed_scan_gradients_equal_full_backprop(lstm):
    cell, params, xs = lstm
    state = rx.LSTMState(h=jnp.full((3, H), 0.3), c=jnp.full((3, H), -0.2))

    def loss(run, params, state):
        final, ys = run(cell, params, xs, state)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.c**2)

    want = jax.jit(jax.grad(lambda p, s: loss(rx.scan, p, s), argnums=(0, 1)))(params, state)
    got = jax.jit(jax.grad(lambda p, s: loss(checkpointed_scan, p, s), argnums=(0, 1)))(params, state)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_checkpointed_scan_passes_check_grads():
    cell = rx.gru(3)
    params = cell.init(jax.random.key(2), 2)
    xs = jax.random.normal(jax.random.key(3), (2, 5, 2))
    f = jax.jit(lambda p: checkpointed_scan(cell, p, xs, segment_size=2)[1])
    check_grads(f, (params,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_checkpointing_stores_about_sqrt_t_states():
    # XLA's compiled temporary memory of a training step, T = 4096: checkpointed needs a small fraction.
    cell = rx.lstm(16)
    params = cell.init(jax.random.key(0), 4)
    xs = jnp.zeros((2, 4096, 4))

    def temp_bytes(run):
        step = jax.jit(jax.grad(lambda p, x: jnp.sum(run(cell, p, x)[0].h)))
        return step.lower(params, xs).compile().memory_analysis().temp_size_in_bytes

    plain, checkpointed = temp_bytes(rx.scan), temp_bytes(checkpointed_scan)
    assert checkpointed < plain / 8, (plain, checkpointed)


@pytest.fixture(scope="module")
def elman():
    # Truncation does not depend on the cell; a cheap one keeps the compile times down.
    cell = rx.elman(H)
    return cell, cell.init(jax.random.key(0), I), jax.random.normal(jax.random.key(1), (3, 14, I))


def test_truncated_scan_values_equal_scan_and_gradients_stop_at_chunk_starts(elman):
    cell, params, xs = elman
    chunk = 5  # chunks of 5, 5 and 4 steps
    state = rx.RNNState(h=jnp.full((3, H), 0.1))
    final, ys, states = rx.scan(cell, params, xs, state, return_states=True)
    chex.assert_trees_all_close(truncated_scan(cell, params, xs, state, chunk_size=chunk), (final, ys), atol=1e-6)

    def loss(ys):
        return jnp.sum(jnp.cos(ys))

    # Reference: each chunk's loss from a constant incoming state, summed; the first chunk from `state`.
    starts = [jax.tree.map(lambda s, t=t: np.asarray(s[:, t - 1]), states) for t in range(chunk, 14, chunk)]

    def truncated_ref(params, state):
        total = 0.0
        for k, s in enumerate([state, *starts]):
            total += loss(rx.scan(cell, params, xs[:, k * chunk : (k + 1) * chunk], s)[1])
        return total

    def truncated(params, state, stop_gradient=True):
        return loss(truncated_scan(cell, params, xs, state, chunk_size=chunk, stop_gradient=stop_gradient)[1])

    want = jax.jit(jax.grad(truncated_ref, argnums=(0, 1)))(params, state)
    got = jax.jit(jax.grad(truncated, argnums=(0, 1)))(params, state)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)

    full = jax.jit(jax.grad(lambda p: loss(rx.scan(cell, p, xs, state)[1])))(params)
    untruncated = jax.jit(jax.grad(lambda p: truncated(p, state, stop_gradient=False)))(params)
    chex.assert_trees_all_close(untruncated, full, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0]["w_h"], full["w_h"], atol=1e-4)  # truncation does change the gradient


def test_tbptt_equals_a_loop_of_optimizer_updates(elman):
    cell, params, xs = elman
    targets = jnp.cumsum(xs[..., :1], axis=1)  # (3, 14, 1)
    head = {"w": jnp.full((H, 1), 0.1)}
    optimizer = optax.adam(1e-2)

    def loss_fn(all_params, state, chunk):
        xs, targets = chunk
        final, ys = rx.scan(cell, all_params["cell"], xs, state)
        return jnp.mean((ys @ all_params["head"]["w"] - targets) ** 2), final

    all_params = {"cell": params, "head": head}
    state0 = cell.initial_state(params, (3,))
    got = jax.jit(lambda p, o, s: tbptt(loss_fn, optimizer, p, o, s, (xs, targets), chunk_size=6))(
        all_params, optimizer.init(all_params), state0
    )

    p, o, s, losses = all_params, optimizer.init(all_params), state0, []
    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    for start in range(0, 14, 6):  # chunks of 6, 6 and 2 steps
        chunk = (xs[:, start : start + 6], targets[:, start : start + 6])
        (value, s), grads = step(p, s, chunk)
        updates, o = optimizer.update(grads, o, p)
        p, losses = optax.apply_updates(p, updates), [*losses, value]
    chex.assert_trees_all_close(got, (p, o, s, jnp.stack(losses)), rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise(lstm):
    cell, params, xs = lstm
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"`chunk_size` must be a positive int, got {bad!r}"):
            truncated_scan(cell, params, xs, chunk_size=bad)
    with pytest.raises(ValueError, match="`segment_size` must be a positive int, got 0"):
        checkpointed_scan(cell, params, xs, segment_size=0)
    with pytest.raises(ValueError, match=r"`xs` must have shape \(\*batch, T, I\)"):
        checkpointed_scan(cell, params, xs[0, 0])
    with pytest.raises(ValueError, match=r"`state.h` must have shape \(3, 5\)"):
        checkpointed_scan(cell, params, xs, rx.LSTMState(h=jnp.zeros((3, 4)), c=jnp.zeros((3, 5))))
    with pytest.raises(TypeError, match=r"`cell` must be a recurrax\.Cell, got function"):
        truncated_scan(lambda: None, params, xs, chunk_size=4)
    with pytest.raises(ValueError, match="must share one length on axis 1"):
        tbptt(lambda *a: None, optax.sgd(0.1), params, None, None, (xs, xs[:, :5]), chunk_size=4)
