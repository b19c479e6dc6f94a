"""``scan(..., resets=...)``: episode boundaries inside a sequence.

The backends are held to the step-by-step reference by the conformance suite (tests/backends/); here the
meaning of a reset is checked against independent constructions: a sequence with resets equals separate calls
on its segments (each from the reset state), a reversed run equals each segment reversed on its own, the
gradient of a segment's loss with respect to the inputs of the segments before it is exactly zero, and the
layers and Flax adapters pass resets through. Last, the bad-input errors.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import recurrax as rx
from recurrax import backends
from recurrax.flax import linen as rx_linen
from recurrax.flax import nnx as rx_nnx
from reference import random_inputs, random_params

B, T, I = 8, 10, 3  # B >= NATIVE_FOLD_ROWS: the native kernels take the inputs into their steps
TOL = dict(rtol=2e-5, atol=2e-5)
# Row 0 has no reset, row 1 resets at the first step, the others inside; boundaries as (start, end) segments.
RESET_AT = {1: [0, 6], 2: [3], 3: [1, 2, 9], 4: [5], 5: [4, 8], 6: [9], 7: [2, 7]}


def _resets() -> np.ndarray:
    resets = np.zeros((B, T), bool)
    for row, steps in RESET_AT.items():
        resets[row, steps] = True
    return resets


def _segments(resets: np.ndarray) -> list[tuple[int, int, int, bool]]:
    """``(row, start, end, starts_with_reset)`` of every segment of every row of ``resets: (B, T)``."""
    out = []
    for row, marks in enumerate(resets):
        cuts = sorted(set(np.flatnonzero(marks)) | {0, len(marks)})
        out += [(row, a, b, bool(marks[a])) for a, b in itertools.pairwise(cuts)]
    return out


def _by_segments(apply, params, xs, resets, start_of):
    """Runs every segment of ``xs: (B, T, I)`` alone, all in one batched call of ``apply(params, xs, state,
    lengths)`` (each segment left-aligned, its length its own), and puts the outputs back in place.

    ``start_of(segment, k, count)`` gives the state a segment starts from (``k``: its index within its row).
    Returns the outputs and, per row, the segments' final states in the row's time order.
    """
    segments = _segments(resets)
    steps = xs.shape[1]
    padded = np.zeros((len(segments), *xs.shape[1:]), np.float32)
    for j, (row, a, b, _) in enumerate(segments):
        padded[j, : b - a] = xs[row, a:b]
    counts = {row: sum(seg[0] == row for seg in segments) for row in range(xs.shape[0])}
    rank = [sum(seg[0] == s[0] for seg in segments[:j]) for j, s in enumerate(segments)]
    states = [start_of(seg, k, counts[seg[0]]) for seg, k in zip(segments, rank)]
    state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    lengths = jnp.asarray([b - a for _, a, b, _ in segments])
    finals, ys = apply(params, jnp.asarray(padded), state, lengths)
    out = np.zeros((xs.shape[0], steps, ys.shape[-1]), np.float32)
    for j, (row, a, b, _) in enumerate(segments):
        out[row, a:b] = ys[j, : b - a]
    per_row = {
        row: [jax.tree.map(lambda f, j=j: f[j], finals) for j, s in enumerate(segments) if s[0] == row]
        for row in counts
    }
    return out, per_row


CELLS = {
    "lstm": (rx.lstm(6), ["sequential", "xla_lstm", "native_lstm"]),
    "gru": (rx.gru(5), ["sequential", "xla_gru", "native_gru"]),
    "lru": (rx.lru(4, 3), ["sequential", "associative", "chunked"]),
    "min_gru": (rx.min_gru(4), ["sequential", "associative", "chunked"]),
}
PAIRS = [(name, backend) for name, (_, names) in CELLS.items() for backend in names]
every_pair = pytest.mark.parametrize(("cell_name", "backend"), PAIRS, ids=[f"{c}-{b}" for c, b in PAIRS])


def _problem(cell_name: str, seed: int = 0):
    cell = CELLS[cell_name][0]
    params = random_params(cell, seed, I)
    xs = random_inputs((B, T, I), seed + 1)
    draw = np.random.default_rng(seed + 2)

    def state(batch):
        return jax.tree.map(
            lambda s: jnp.asarray(0.5 * draw.normal(size=s.shape), s.dtype), cell.initial_state(params, batch)
        )

    return cell, params, xs, state((B,)), state(())


def _skip_unavailable(cell, params, xs, backend):
    reason = backends.available(cell, params, xs, resets=jnp.asarray(_resets()))[backend]
    if reason is not None:
        pytest.skip(reason)


def _row(tree, row):
    return jax.tree.map(lambda leaf: leaf[row : row + 1], tree)


@every_pair
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_a_sequence_with_resets_equals_separate_calls_on_its_segments(cell_name, backend, reverse):
    cell, params, xs, s0, s_reset = _problem(cell_name)
    _skip_unavailable(cell, params, xs, backend)
    run = jax.jit(
        lambda p, x, s, r, sr: rx.scan(cell, p, x, s, resets=r, reset_state=sr, reverse=reverse, backend=backend)
    )
    final, ys = run(params, xs, s0, jnp.asarray(_resets()), s_reset)

    def start_of(segment, k, count):
        # Forward, a row's first segment starts from the initial state unless it resets; reversed, its last one.
        row, _, _, reset = segment
        own = (k == count - 1) if reverse else (k == 0 and not reset)
        return jax.tree.map(lambda s: s[row], s0) if own else s_reset

    def separately(p, x, s, lengths):
        return rx.scan(cell, p, x, s, lengths=lengths, reverse=reverse, backend="sequential")

    want, finals = _by_segments(separately, params, np.asarray(xs), _resets(), start_of)
    np.testing.assert_allclose(ys, want, **TOL)
    for row, states in finals.items():
        last = states[0] if reverse else states[-1]
        for got, expected in zip(
            jax.tree.leaves(jax.tree.map(lambda f, row=row: f[row], final)), jax.tree.leaves(last)
        ):
            np.testing.assert_allclose(got, expected, **TOL, err_msg=f"final state, row {row}")


@every_pair
def test_no_gradient_crosses_a_reset(cell_name, backend):
    """The loss of the outputs from a reset on has exactly zero gradient w.r.t. the inputs and state before it."""
    cell, params, xs, s0, _ = _problem(cell_name, seed=5)
    _skip_unavailable(cell, params, xs, backend)
    resets = jnp.zeros((B, T), bool).at[:, 4].set(True)

    def loss(xs, s0):
        _, ys = rx.scan(cell, params, xs, s0, resets=resets, backend=backend)
        return jnp.sum(jnp.sin(ys[:, 4:]))

    d_xs, d_s0 = jax.jit(jax.grad(loss, argnums=(0, 1)))(xs, s0)
    assert np.all(np.asarray(d_xs[:, :4]) == 0.0)
    assert all(np.all(np.asarray(leaf) == 0.0) for leaf in jax.tree.leaves(d_s0))
    assert np.all(np.abs(np.asarray(d_xs[:, 4:])).sum(axis=(1, 2)) > 0)  # the check has teeth: the rest flows


def test_resets_past_the_lengths_do_nothing_and_the_state_freezes():
    cell, params, xs, s0, s_reset = _problem("gru", seed=7)
    lengths = jnp.asarray([T, 4, 0, 7, 5, T, 1, 3])
    resets = jnp.asarray(_resets())
    late = jnp.arange(T)[None, :] >= lengths[:, None]
    got = rx.scan(cell, params, xs, s0, lengths=lengths, resets=resets, reset_state=s_reset)
    want = rx.scan(cell, params, xs, s0, lengths=lengths, resets=resets & ~late, reset_state=s_reset)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_the_native_kernels_keep_resets_on_the_fast_path():
    cell, params, xs, _, _ = _problem("lstm")
    xs = random_inputs((16, 12, I), 3)  # T * B = 192: auto's native range on CPU
    want = "native_lstm" if jax.default_backend() == "cpu" else "cudnn_lstm"
    assert backends.which(cell, params, xs) == want
    with_resets = backends.which(cell, params, xs, resets=jnp.zeros((16, 12), bool))
    assert with_resets == ("native_lstm" if jax.default_backend() == "cpu" else "xla_lstm")


def test_gymnasium_dones_convert_to_resets_as_documented():
    """``done[t]``: the episode ends with step t. Converted as ``scan``'s docstring says, the step after each done
    (and the first, after a done in the previous rollout) starts from the zero state."""
    cell, params, xs, s0, _ = _problem("gru", seed=4)
    dones = np.zeros((B, T), bool)
    dones[:, [2, 5]] = True
    last_done = np.ones((B, 1), bool)  # the previous rollout ended with an episode
    resets = np.concatenate([last_done, dones[..., :-1]], axis=-1)
    _, ys = rx.scan(cell, params, xs, s0, resets=jnp.asarray(resets))
    zero = cell.initial_state(params, (B,))
    for t in (0, 3, 6):  # the first steps of the episodes
        np.testing.assert_allclose(ys[:, t], cell.output(cell.step(params, zero, xs[:, t])), **TOL)
    assert not np.allclose(ys[:, 1], cell.output(cell.step(params, zero, xs[:, 1])), atol=1e-3)


# ------------------------------------------------------------------------------------- layers


def _layer_by_segments(layer, params, xs, resets):
    """The outputs of ``layer`` run on each segment of ``xs`` alone, from the zero state."""

    def apply(p, x, state, lengths):
        return layer.apply(p, x, lengths=lengths)

    return _by_segments(apply, params, np.asarray(xs), resets, lambda *_: None)[0]


@pytest.mark.parametrize("kind", ["stacked", "bidirectional"])
def test_layers_run_each_segment_on_its_own(kind):
    layer = rx.stacked([rx.gru(4), rx.lstm(3)]) if kind == "stacked" else rx.bidirectional(rx.lstm(3), rx.gru(4))
    params = layer.init(jax.random.key(0), I)
    xs = random_inputs((B, T, I), 11)
    _, ys = jax.jit(lambda p, x, r: layer.apply(p, x, resets=r))(params, xs, jnp.asarray(_resets()))
    np.testing.assert_allclose(ys, _layer_by_segments(layer, params, xs, _resets()), **TOL)


def test_bidirectional_with_lengths_and_resets_time_major():
    layer = rx.bidirectional(rx.gru(4), rx.gru(4))
    params = layer.init(jax.random.key(1), I)
    xs = random_inputs((B, T, I), 12)
    lengths = np.asarray([T, 4, 0, 7, 5, T, 1, 3])
    resets = jnp.asarray(_resets())
    apply = jax.jit(layer.apply, static_argnames="time_major")
    _, batch_major = apply(params, xs, lengths=lengths, resets=resets)
    _, time_major = apply(params, jnp.swapaxes(xs, 0, 1), lengths=lengths, resets=resets.T, time_major=True)
    np.testing.assert_allclose(batch_major, jnp.swapaxes(time_major, 0, 1), **TOL)
    # Past its length a row is padding (a reset there marks nothing): the valid part is that of a row whose
    # padding is a segment of its own, cut at the length.
    cut = (_resets() & (np.arange(T)[None] < lengths[:, None])) | (np.arange(T)[None] == lengths[:, None])
    want = _layer_by_segments(layer, params, xs, cut)
    valid = np.arange(T)[None, :, None] < lengths[:, None, None]
    np.testing.assert_allclose(np.where(valid, batch_major, 0), np.where(valid, want, 0), **TOL)
    assert np.all(np.asarray(batch_major)[~valid[..., 0]] == 0.0)


# --------------------------------------------------------------------------------- Flax adapters


def test_linen_resets_and_learned_reset_state_equal_scan():
    cell = rx.gru(4)
    model = rx_linen.RNN(cell, learnable_initial_state=True, return_state=True)
    xs, resets = random_inputs((B, T, I), 13), jnp.asarray(_resets())
    variables = model.init(jax.random.key(0), xs)
    learned = jax.tree.map(lambda s: s + 0.3, variables["params"]["initial_state"])  # not the zero state
    variables = {"params": {**variables["params"], "initial_state": learned}}
    got = model.apply(variables, xs, resets=resets)
    start = jax.tree.map(lambda s: jnp.broadcast_to(s, (B, *s.shape)), learned)
    want = rx.scan(cell, variables["params"]["cell"], xs, start, resets=resets, reset_state=learned)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, **TOL)


def test_linen_stateful_calls_equal_one_call_and_reset_by_dropping_the_carry():
    model = rx_linen.RNN(rx.lstm(4), stateful=True)
    xs, resets = random_inputs((B, 2 * T, I), 14), jnp.asarray(np.concatenate([_resets(), _resets()], 1))
    variables = model.init(jax.random.key(0), xs[:, :T])
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(variables[rx_linen.CARRY]))  # init: no step

    first, kept = model.apply(variables, xs[:, :T], resets=resets[:, :T], mutable=[rx_linen.CARRY])
    second, _ = model.apply({**variables, **kept}, xs[:, T:], resets=resets[:, T:], mutable=[rx_linen.CARRY])
    whole, _ = model.apply(variables, xs, resets=resets, mutable=[rx_linen.CARRY])
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, **TOL)

    fresh, _ = model.apply({"params": variables["params"]}, xs[:, T:], mutable=[rx_linen.CARRY])
    np.testing.assert_allclose(fresh, rx.scan(rx.lstm(4), variables["params"]["cell"], xs[:, T:])[1], **TOL)
    with pytest.raises(ValueError, match="mutable"):
        model.apply(variables, xs[:, :T])
    with pytest.raises(ValueError, match="batch shape"):
        model.apply(variables, xs[:2, :T], mutable=[rx_linen.CARRY])


def test_nnx_stateful_resets_and_reset_carry():
    xs, resets = random_inputs((B, T, I), 15), jnp.asarray(_resets())
    model = rx_nnx.RNN(rx.gru(4), I, rngs=nnx.Rngs(0), stateful=True, batch_shape=(B,))
    first = model(xs, resets=resets)
    second = model(xs, resets=resets)
    params = model.cell_params()
    final, want_first = rx.scan(rx.gru(4), params, xs, resets=resets)
    np.testing.assert_allclose(first, want_first, **TOL)
    np.testing.assert_allclose(second, rx.scan(rx.gru(4), params, xs, final, resets=resets)[1], **TOL)
    model.reset_carry()
    np.testing.assert_allclose(model(xs, resets=resets), first, **TOL)
    # The carry is a variable of its own kind, not a param: an optimiser over nnx.Param leaves it alone.
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == len(jax.tree.leaves(params))
    assert len(jax.tree.leaves(nnx.state(model, rx_nnx.Carry))) == 1

    jitted = nnx.jit(lambda m, x: m(x))
    model.reset_carry()
    np.testing.assert_allclose(jitted(model, xs), rx.scan(rx.gru(4), params, xs)[1], **TOL)
    with pytest.raises(ValueError, match="batch_shape"):
        rx_nnx.RNN(rx.gru(4), I, rngs=nnx.Rngs(0), stateful=True)


def test_linen_resets_inside_a_model_train_step():
    """A recurrent core in a Flax model, differentiated through resets (the RL use)."""

    class Core(nn.Module):
        @nn.compact
        def __call__(self, xs, resets):
            return nn.Dense(1)(rx_linen.RNN(rx.gru(4))(xs, resets=resets))

    xs, resets = random_inputs((B, T, I), 16), jnp.asarray(_resets())
    model = Core()
    variables = model.init(jax.random.key(0), xs, resets)

    def loss(v, x):
        return jnp.sum(model.apply(v, x, resets)[:, 6:])  # rows 1 and 7 reset at or after step 6

    grads = jax.grad(loss, argnums=1)(variables, xs)
    assert np.all(np.asarray(grads[1, :6]) == 0.0)  # row 1 resets at step 6
    assert np.all(np.asarray(grads[0, :6]) != 0.0)  # row 0 has no reset before step 6


# ----------------------------------------------------------------------------------------- errors


def _bad_input_problem():
    cell = rx.gru(4)
    return cell, random_params(cell, 0, I), random_inputs((2, 5, I), 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (dict(resets=np.zeros((2, 5), np.int32)), TypeError, r"`resets` must be a boolean array .* int32"),
        (dict(resets=np.zeros((2, 5), np.float32)), TypeError, r"`resets` must be a boolean array .* float32"),
        (
            dict(resets=np.zeros((2, 4), bool)),
            ValueError,
            r"`resets` must have shape \(\*batch, T\) = \(2, 5\), got \(2, 4\)",
        ),
        (
            dict(resets=np.zeros((5, 2), bool)),
            ValueError,
            r"`resets` must have shape \(\*batch, T\) = \(2, 5\), got \(5, 2\)",
        ),
        (dict(resets=np.zeros((2, 5), bool), time_major=True), ValueError, r"\(T, \*batch\)"),
        (dict(reset_state=rx.RNNState(jnp.zeros(4))), ValueError, r"`reset_state` is only used with `resets`"),
        (
            dict(resets=np.zeros((2, 5), bool), reset_state=rx.RNNState(jnp.zeros(3))),
            ValueError,
            r"`reset_state.h` must have shape \(4,\) .* got \(3,\)",
        ),
        (
            dict(resets=np.zeros((2, 5), bool), reset_state=rx.RNNState(jnp.zeros((3, 4)))),
            ValueError,
            r"`reset_state.h` must have shape \(4,\) \(broadcast over the batch\) or \(2, 4\)",
        ),
        (dict(resets=np.zeros((2, 5), bool), reset_state=(jnp.zeros(4), jnp.zeros(4))), TypeError, r"`reset_state`"),
    ],
    ids=["int", "float", "short", "transposed", "time_major", "without_resets", "size", "batch", "structure"],
)
def test_bad_resets_raise_naming_the_argument(kwargs, error, pattern):
    cell, params, xs = _bad_input_problem()
    if kwargs.get("time_major"):
        xs = jnp.swapaxes(xs, 0, 1)[:, :2]  # (T=5, B=2, I): a (2, 5) mask is the wrong layout
    with pytest.raises(error, match=pattern):
        rx.scan(cell, params, xs, **kwargs)


def test_a_backend_without_resets_refuses_them_by_name():
    _, _, xs = _bad_input_problem()
    lstm = rx.lstm(4)
    req = backends.request(lstm, random_params(lstm, 0, I), xs, resets=jnp.zeros((2, 5), bool))
    reason = backends.get("cudnn_lstm").supports(req._replace(platform="gpu"))
    assert reason is not None and "cannot run `resets`" in reason
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="cudnn_lstm"):
            rx.scan(lstm, random_params(lstm, 0, I), xs, resets=jnp.zeros((2, 5), bool), backend="cudnn_lstm")


def test_reset_for_stepping_by_hand_matches_scan():
    """``rx.reset`` then ``cell.step``, one step at a time, is ``scan(..., resets=...)``."""
    cell, params, xs, s0, s_reset = _problem("lstm", seed=9)
    resets = _resets()
    state, outputs = s0, []
    for t in range(T):
        state = cell.step(params, rx.reset(cell, params, state, resets[:, t], s_reset), xs[:, t])
        outputs.append(cell.output(state))
    final, ys = rx.scan(cell, params, xs, s0, resets=jnp.asarray(resets), reset_state=s_reset)
    np.testing.assert_allclose(jnp.stack(outputs, 1), ys, **TOL)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(final)):
        np.testing.assert_allclose(a, b, **TOL)
    with pytest.raises(TypeError, match=r"reset.*`resets` must be a boolean"):
        rx.reset(cell, params, s0, np.zeros(B, np.int32))
    with pytest.raises(ValueError, match=r"`state.h` must have shape \(3, 6\)"):
        rx.reset(cell, params, s0, np.zeros(3, bool))
