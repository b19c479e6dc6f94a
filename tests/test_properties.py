"""Property-based tests (hypothesis) of ``recurrax.scan`` over shapes, lengths and cells.

Invariants: padded runs equal each sequence run alone (the NumPy reference loop), padded outputs
are exactly zero, chunked calls equal one call, reversing twice is the identity. Examples are few
(each compiles a scan); the profile in ``conftest.py`` makes them untimed and repeatable.
"""

import chex
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import recurrax as rx
from reference import CASES, random_inputs, random_params, random_state, run, to_numpy

TOL = dict(atol=3e-5, rtol=3e-5)
NAMES = ["elman", "lstm", "lstm_peephole", "lstm_proj", "gru", "gru_reset_before", "mgu"]


@st.composite
def problems(draw, names=NAMES):
    """A cell, params, inputs ``(*batch, T, I)``, a random initial state and lengths in ``[0, T]``."""
    name = draw(st.sampled_from(names))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    steps, input_size, hidden = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    size = int(np.prod(batch))
    lengths = np.array(draw(st.lists(st.integers(0, steps), min_size=size, max_size=size)), np.int32).reshape(batch)
    seed = draw(st.integers(0, 2**16))
    cell = CASES[name].make(hidden)
    params = random_params(cell, seed, input_size)
    xs = random_inputs((*batch, steps, input_size), seed + 1)
    state = random_state(cell, params, batch, seed + 2, scale=0.5)
    return name, cell, params, xs, state, lengths


@settings(max_examples=6)
@given(problems(), st.booleans())
def test_padded_run_equals_each_sequence_alone(problem, reverse):
    name, cell, params, xs, state, lengths = problem
    final, ys, states = rx.scan(cell, params, xs, state, lengths=lengths, reverse=reverse, return_states=True)
    want = run(CASES[name].step, to_numpy(params), np.asarray(xs), to_numpy(state), lengths=lengths, reverse=reverse)
    chex.assert_trees_all_close((tuple(final), ys, tuple(states)), want, **TOL)
    t = np.arange(xs.shape[-2])
    padded = t >= lengths[..., None]  # (*batch, T)
    np.testing.assert_array_equal(np.asarray(ys)[padded], 0.0)


@settings(max_examples=5)
@given(problems(), st.data())
def test_chunked_calls_equal_one_call(problem, data):
    _, cell, params, xs, state, lengths = problem
    steps = xs.shape[-2]
    cut = data.draw(st.integers(0, steps), label="cut")
    final, ys = rx.scan(cell, params, xs, state, lengths=lengths)
    s, outs = state, []
    for a, b in ((0, cut), (cut, steps)):
        s, out = rx.scan(cell, params, xs[..., a:b, :], s, lengths=np.clip(lengths - a, 0, b - a))
        outs.append(out)
    chex.assert_trees_all_close(s, final, **TOL)
    chex.assert_trees_all_close(jnp.concatenate(outs, axis=-2), ys, **TOL)


@settings(max_examples=5)
@given(problems())
def test_reverse_is_forward_over_the_reversed_valid_parts(problem):
    _, cell, params, xs, state, lengths = problem
    xs_tm = jnp.moveaxis(xs, -2, 0)
    flipped = rx.reverse_sequences(xs_tm, lengths)
    np.testing.assert_array_equal(rx.reverse_sequences(flipped, lengths), xs_tm)  # reversing twice: identity
    final, ys = rx.scan(cell, params, xs_tm, state, lengths=lengths, reverse=True, time_major=True)
    final_f, ys_f = rx.scan(cell, params, flipped, state, lengths=lengths, time_major=True)
    chex.assert_trees_all_close(final, final_f, **TOL)
    chex.assert_trees_all_close(ys, rx.reverse_sequences(ys_f, lengths), **TOL)


@settings(max_examples=15)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=4),
    st.integers(0, 3),
    st.integers(1, 3),
)
def test_reverse_sequences_flips_each_valid_part(lengths, extra, features):
    steps = max(lengths) + extra
    xs = np.arange(steps * len(lengths) * features, dtype=np.float32).reshape(steps, len(lengths), features)
    got = np.asarray(rx.reverse_sequences(xs, np.array(lengths)))
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(got[:n, b], xs[:n, b][::-1])
        np.testing.assert_array_equal(got[n:, b], xs[n:, b])
