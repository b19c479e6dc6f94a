"""``scan(..., mask=)``: Keras-style masks (holes, left padding) on every backend, against a step-by-step loop.

The reference is a Python loop over the steps that calls ``cell.step`` everywhere and keeps the new state only
where the mask allows (the definition of a mask), written without ``scan``. Keras itself is the reference in
``tests/test_interop_keras_layers.py``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import backends

B, T, I, H = 3, 6, 3, 4
TOL = dict(atol=1e-5, rtol=1e-5)
MASK = np.array(
    [
        [1, 0, 1, 1, 0, 1],  # holes
        [0, 0, 1, 1, 1, 1],  # left padding
        [0, 0, 0, 0, 0, 0],  # nothing to run
    ],
    bool,
)
CELLS = {"lstm": rx.lstm(H), "gru": rx.gru(H), "min_gru": rx.min_gru(H), "lstm_peephole": rx.lstm(H, peephole=True)}


def _problem(cell, seed=0):
    k_p, k_x, k_s = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p, I)
    xs = jax.random.normal(k_x, (B, T, I))
    leaves, tree = jax.tree.flatten(cell.initial_state(params, (B,)))
    state = tree.unflatten([0.5 * jax.random.normal(k, s.shape) for k, s in zip(jax.random.split(k_s, 9), leaves)])
    return params, xs, state


def _loop(cell, params, xs, state, mask, *, reverse=False, masked_outputs="zeros"):
    """(final, outputs, states): the masked run, one step at a time, in the original time order."""
    outputs, states = [None] * T, [None] * T
    for t in range(T)[::-1] if reverse else range(T):
        new, keep = cell.step(params, state, xs[:, t]), mask[:, t, None]
        state = jax.tree.map(lambda n, s, keep=keep: jnp.where(keep, n, s), new, state)
        carried = cell.output(state) if masked_outputs == "state" else jnp.zeros_like(cell.output(state))
        outputs[t] = jnp.where(keep, cell.output(state), carried)
        states[t] = state
    stack = lambda *leaves: jnp.stack(leaves, axis=1)  # noqa: E731
    return state, jnp.stack(outputs, axis=1), jax.tree.map(stack, *states)


def _runnable(cell, params, xs):
    lengths = jnp.full((B,), T)
    return [name for name, why in backends.available(cell, params, xs, lengths=lengths).items() if why is None]


@pytest.mark.parametrize("masked_outputs", ["zeros", "state"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CELLS))
def test_mask_equals_the_step_loop_on_every_backend(name, reverse, masked_outputs):
    cell = CELLS[name]
    params, xs, state = _problem(cell)
    xs = jnp.where(MASK[..., None], xs, jnp.nan)  # what a masked step holds reaches nothing
    want = _loop(cell, params, xs, state, MASK, reverse=reverse, masked_outputs=masked_outputs)
    for backend in _runnable(cell, params, xs):
        run = jax.jit(
            lambda p, x, s, b=backend: rx.scan(
                cell, p, x, s, mask=MASK, reverse=reverse, masked_outputs=masked_outputs, return_states=True, backend=b
            )
        )
        got = run(params, xs, state)
        chex.assert_trees_all_close(got, want, **TOL, custom_message=backend)


def test_mask_gradients_equal_the_loop_and_skip_masked_steps():
    cell = CELLS["gru"]
    params, xs, state = _problem(cell, seed=1)

    def loss(run):
        return lambda p, x, s: jnp.sum(run(p, x, s)[1] ** 2) + jnp.sum(run(p, x, s)[0].h)

    want = jax.grad(loss(lambda p, x, s: _loop(cell, p, x, s, MASK)), argnums=(0, 1, 2))(params, xs, state)
    for backend in ("sequential", "xla_gru"):
        run = lambda p, x, s, b=backend: rx.scan(cell, p, x, s, mask=MASK, backend=b)  # noqa: E731
        got = jax.jit(jax.grad(loss(run), argnums=(0, 1, 2)))(params, xs, state)
        chex.assert_trees_all_close(got, want, **TOL, custom_message=backend)
        np.testing.assert_array_equal(got[1][~MASK], 0.0)


def test_mask_with_lengths_counts_a_step_only_where_both_allow_it():
    cell = CELLS["lstm"]
    params, xs, state = _problem(cell, seed=2)
    lengths = jnp.array([4, T, 3])
    both = MASK & (np.arange(T) < np.asarray(lengths)[:, None])
    got = rx.scan(cell, params, xs, state, mask=MASK, lengths=lengths, return_states=True, include_initial=True)
    final, ys, states = _loop(cell, params, xs, state, both)
    with_initial = jax.tree.map(lambda s0, s: jnp.concatenate([s0[:, None], s], axis=1), state, states)
    chex.assert_trees_all_close(got, (final, ys, with_initial), **TOL)


def test_an_all_true_mask_is_the_plain_call_and_time_major_vmap_agree():
    cell = CELLS["lstm"]
    params, xs, state = _problem(cell, seed=3)
    plain = rx.scan(cell, params, xs, state)
    chex.assert_trees_all_close(rx.scan(cell, params, xs, state, mask=np.ones((B, T), bool)), plain, **TOL)
    batch_major = rx.scan(cell, params, xs, state, mask=MASK)
    time_major = rx.scan(cell, params, jnp.swapaxes(xs, 0, 1), state, mask=MASK.T, time_major=True)
    chex.assert_trees_all_close(time_major[0], batch_major[0], **TOL)
    chex.assert_trees_all_close(jnp.swapaxes(time_major[1], 0, 1), batch_major[1], **TOL)
    per_row = jax.vmap(lambda x, s, m: rx.scan(cell, params, x, s, mask=m))(xs, state, MASK)
    chex.assert_trees_all_close(per_row, batch_major, **TOL)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(mask=MASK.astype(np.int32)), TypeError, r"`mask` must be a boolean array.*got dtype int32"),
        (dict(mask=MASK[:, :-1]), ValueError, r"`mask` must have shape \(\*batch, T\) = \(3, 6\), got \(3, 5\)"),
        (dict(mask=MASK, masked_outputs="carry"), ValueError, r"`masked_outputs` must be one of \['zeros', 'state'\]"),
        (dict(masked_outputs="state"), ValueError, r"`masked_outputs='state'` is only used with `mask`"),
        (dict(mask=MASK, resets=np.zeros((B, T), bool)), ValueError, r"`mask` and `resets` together"),
    ],
    ids=["dtype", "shape", "masked_outputs", "outputs without mask", "resets"],
)
def test_bad_masks_are_refused_by_name(kwargs, error, match):
    cell = CELLS["lstm"]
    params, xs, _ = _problem(cell)
    with pytest.raises(error, match=match):
        rx.scan(cell, params, xs, **kwargs)
