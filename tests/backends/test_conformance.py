"""Every backend of ``recurrax.scan``, on every cell it can run, against one independent reference.

The reference (:func:`reference`) does not call ``scan``: it is a plain eager Python loop of ``cell.step`` over
each batch element alone, written from the documented semantics. ``lengths`` right-pad the sequences (the state
stays frozen after the last valid step, padded outputs are zero); ``reverse`` runs each sequence's valid part from
its last step to its first, outputs in the original order; ``states[t]`` is the state after consuming ``xs[t]``
(at padded positions the frozen final state forward, the initial state in reverse); ``include_initial`` adds the
initial state at index 0 (forward) or ``T`` (reverse). Gradients are ``jax.grad`` through that loop.

For each (cell, backend) pair that ``recurrax.backends.available`` says can run the call (others are skipped
with its reason: ``cudnn_lstm`` off a GPU), the suite checks outputs, final states, states over time and the
gradients of a scalar loss (w.r.t. params, inputs and initial state) under four combined option sets, streaming
in chunks, ``vmap``, jit against eager, ``jax.jvp`` and a Hessian-vector product. Last, the errors of a backend
named for a call it cannot run, and that a cell whose ``transition`` was replaced runs the replacement.
"""

from __future__ import annotations

import functools
import re
from itertools import repeat
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import backends
from reference import random_inputs, random_params

T = 6  # steps of every problem
VALUE_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-4, atol=1e-4)
HVP_TOL = dict(rtol=1e-3, atol=1e-3)

# Each cell is built once, so every test of a pair sees the same functions (a backend is chosen by their identity).
CELLS: dict[str, tuple[rx.Cell, int]] = {  # name: (cell, input size)
    "lstm": (rx.lstm(5), 3),
    "gru": (rx.gru(6), 4),
    "elman": (rx.elman(7), 3),
    "mgu": (rx.mgu(5), 4),
    "lstm_peephole": (rx.lstm(6, peephole=True), 3),
    "min_gru": (rx.min_gru(8), 4),
    "lru": (rx.lru(6, 5), 3),
}
BACKENDS = [b.name for b in backends.TABLE]
pairs = pytest.mark.parametrize("backend", BACKENDS)
cells = pytest.mark.parametrize("cell_name", list(CELLS))


class OptionSet(NamedTuple):
    """One problem and the options of ``scan`` it runs with."""

    batch: tuple[int, ...]
    lengths: list | None = None
    random_state: bool = False  # else the zero state (the default), passed explicitly to differentiate it
    options: dict[str, Any] = {}  # noqa: RUF012  (a NamedTuple default, never mutated)


OPTION_SETS = {
    "defaults": OptionSet(batch=(3,)),
    "padded_reverse_states": OptionSet(
        batch=(3,),
        lengths=[T, 2, 0],
        random_state=True,
        options=dict(reverse=True, return_states=True, include_initial=True, time_major=True),
    ),
    "batch2d_unroll_remat": OptionSet(
        batch=(2, 3), lengths=[[T, 3, 1], [0, T, 2]], random_state=True, options=dict(unroll=2, remat=True)
    ),
    "policy_reverse_states": OptionSet(
        batch=(3,),
        random_state=True,
        options=dict(remat=jax.checkpoint_policies.nothing_saveable, unroll=1, reverse=True, return_states=True),
    ),
}
PROBLEMS = {**OPTION_SETS, "streaming": OptionSet(batch=(3,), random_state=True)}
JVP_LENGTHS = np.asarray([T, 2, 0])


# ------------------------------------------------------------------------------------------ problems


class Problem(NamedTuple):
    cell: rx.Cell
    params: dict
    xs: jax.Array  # batch-major (*batch, T, I)
    state: Any
    lengths: jax.Array | None


def _normal_like(tree, seed: int, scale: float = 1.0):
    """A tree of ``tree``'s shapes and dtypes, ``N(0, scale^2)`` entries (complex leaves get an imaginary part)."""
    rng = np.random.default_rng(seed)

    def draw(leaf):
        value = scale * rng.normal(size=leaf.shape)
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            value = value + 1j * scale * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree.map(draw, tree)


@functools.cache
def problem(cell_name: str, set_name: str) -> Problem:
    cell, input_size = CELLS[cell_name]
    spec = PROBLEMS[set_name]
    seed = 10 * list(CELLS).index(cell_name) + 1000 * list(PROBLEMS).index(set_name)
    params = random_params(cell, seed, input_size)
    xs = random_inputs((*spec.batch, T, input_size), seed + 1)
    state = cell.initial_state(params, spec.batch)
    if spec.random_state:
        state = _normal_like(state, seed + 2, scale=0.5)
    lengths = None if spec.lengths is None else jnp.asarray(spec.lengths, jnp.int32)
    return Problem(cell, params, xs, state, lengths)


def skip_unless_available(prob: Problem, backend: str, **options) -> None:
    """Skips the test, with ``available``'s reason, if ``backend`` cannot run this call."""
    options = {k: v for k, v in options.items() if k != "include_initial"}
    xs = jnp.moveaxis(prob.xs, -2, 0) if options.get("time_major") else prob.xs
    reason = backends.available(prob.cell, prob.params, xs, prob.state, lengths=prob.lengths, **options)[backend]
    if reason is not None:
        pytest.skip(reason)


# ----------------------------------------------------------------------------------- the reference


@functools.cache
def jitted_step(cell: rx.Cell):
    """``cell.step``, jitted: the loop stays eager Python, but each step is one compiled call (its derivatives
    compile once per cell) rather than dozens of dispatched operations."""
    return jax.jit(cell.step)


def reference_sequence(cell, params, xs, s0, length: int, reverse: bool, include_initial: bool):
    """One sequence, ``xs`` a list of ``T`` inputs ``(I,)``: ``(final, [output_t], [state_t])``."""
    steps = len(xs)
    s, states, outputs = s0, [None] * steps, [None] * steps
    for t in reversed(range(length)) if reverse else range(length):
        s = jitted_step(cell)(params, s, xs[t])
        states[t], outputs[t] = s, cell.output(s)
    for t in range(length, steps):  # padding: nothing consumed yet in reverse, frozen forward
        states[t], outputs[t] = (s0 if reverse else s), jnp.zeros_like(cell.output(s0))
    if include_initial:
        states = [*states, s0] if reverse else [s0, *states]
    return s, outputs, states


def reference_rows(cell, params, rows, starts, lengths, *, reverse=False, include_initial=False, return_states=True):
    """:func:`reference_sequence` of each batch element: ``rows`` its inputs, ``starts`` its initial state."""
    results = []
    for i, (xs, s0) in enumerate(zip(rows, starts)):
        length = len(xs) if lengths is None else int(np.ravel(lengths)[i])
        final, outputs, states = reference_sequence(cell, params, xs, s0, length, reverse, include_initial)
        results.append((final, outputs, states if return_states else None))
    return results


# Batch elements are split (and their results gathered) in NumPy, outside the differentiated loop: indexing a
# JAX array by each element and step would compile one slice (and its transpose) per position.


def split_batch(tree, batch):
    """One tree per batch element, in ``np.ndindex`` order."""
    return [jax.tree.map(lambda leaf, idx=idx: jnp.asarray(np.asarray(leaf)[idx]), tree) for idx in np.ndindex(*batch)]


def split_rows(xs):
    """``xs: (*batch, T, I)`` as one list of ``T`` inputs per batch element."""
    xs = np.asarray(xs)
    return [[jnp.asarray(x) for x in xs[idx]] for idx in np.ndindex(*xs.shape[:-2])]


def split_results(result, batch):
    """A batch-major ``(final, outputs, states or None)`` as one ``(final, [output_t], [state_t])`` per element."""
    final, outputs, states = result
    pieces = zip(split_batch(final, batch), split_rows(outputs), split_batch(states, batch) if states else repeat(None))
    return [(f, o, None if s is None else _unstack(s)) for f, o, s in pieces]


def gather_results(results, batch):
    """The inverse of :func:`split_results`."""
    final = _merge([r[0] for r in results], batch)
    outputs = _merge([np.stack(r[1]) for r in results], batch)
    states = None if results[0][2] is None else _merge([_stack(r[2]) for r in results], batch)
    return final, outputs, states


def _stack(trees):
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def _unstack(tree):
    steps = len(jax.tree.leaves(tree)[0])
    return [jax.tree.map(lambda leaf, t=t: leaf[t], tree) for t in range(steps)]


def _merge(trees, batch):
    return jax.tree.map(lambda leaf: leaf.reshape(*batch, *leaf.shape[1:]), _stack(trees))


def reference(cell, params, xs, state0, lengths=None, *, reverse=False, include_initial=False, **_):
    """``(final, outputs, states)`` of an eager loop of ``cell.step`` over each sequence of ``xs`` alone.

    Batch-major like ``xs: (*batch, T, I)``; ``states`` always returned (with ``include_initial``, ``T + 1``
    positions). Options that must not change values (``unroll``, ``remat``, ``time_major``) are ignored.
    """
    batch = xs.shape[:-2]
    rows = reference_rows(
        cell,
        params,
        split_rows(xs),
        split_batch(state0, batch),
        lengths,
        reverse=reverse,
        include_initial=include_initial,
    )
    return gather_results(rows, batch)


def run_scan(cell, params, xs, state, lengths, *, backend, **options):
    """``scan`` on batch-major ``xs``, returning ``(final, outputs, states or None)`` batch-major whatever the
    layout ``options`` ask for."""
    num_batch = xs.ndim - 2
    time_major = options.get("time_major", False)
    if time_major:
        xs = jnp.moveaxis(xs, -2, 0)
    final, outputs, *states = rx.scan(cell, params, xs, state, lengths=lengths, backend=backend, **options)
    states = states[0] if states else None
    if time_major:
        outputs = jnp.moveaxis(outputs, 0, -2)
        states = jax.tree.map(lambda s: jnp.moveaxis(s, 0, num_batch), states)
    return final, outputs, states


def loss_weights(result, seed: int = 7):
    return _normal_like(jax.eval_shape(lambda: result), seed)


def loss(result, weights) -> jax.Array:
    """A weighted sum of every leaf of ``result`` (the real part, for the LRU's complex state)."""
    return sum(jnp.sum(jnp.real(a * w)) for a, w in zip(jax.tree.leaves(result), jax.tree.leaves(weights)))


def with_grads(fn, weights):
    """``(params, xs, state, lengths) -> (result, grads w.r.t. params, xs, state)`` of ``loss(fn(...))``."""

    def objective(params, xs, state, lengths):
        result = fn(params, xs, state, lengths)
        return loss(result, weights), result

    def run(params, xs, state, lengths):
        (_, result), grads = jax.value_and_grad(objective, argnums=(0, 1, 2), has_aux=True)(params, xs, state, lengths)
        return result, grads

    return run


@functools.cache
def reference_with_grads(cell_name: str, set_name: str):
    """The reference's ``(final, outputs, states)`` for the option set, its loss weights, and the gradients of
    that loss w.r.t. params, inputs and initial state."""
    prob, options = problem(cell_name, set_name), OPTION_SETS[set_name].options
    batch = prob.xs.shape[:-2]
    kwargs = dict(
        reverse=options.get("reverse", False),
        include_initial=options.get("include_initial", False),
        return_states=options.get("return_states", False),
    )
    expected = reference(prob.cell, prob.params, prob.xs, prob.state, prob.lengths, **options)
    if not kwargs["return_states"]:
        expected = (*expected[:2], None)
    weights = loss_weights(expected)

    def objective(params, rows, starts):
        results = reference_rows(prob.cell, params, rows, starts, prob.lengths, **kwargs)
        return loss(results, split_results(weights, batch))

    rows, starts = split_rows(prob.xs), split_batch(prob.state, batch)
    d_params, d_rows, d_starts = jax.grad(objective, argnums=(0, 1, 2))(prob.params, rows, starts)
    d_xs = np.stack([np.stack(row) for row in d_rows]).reshape(prob.xs.shape)
    return expected, weights, (d_params, d_xs, _merge(d_starts, batch))


def assert_trees_close(actual, expected, tol, what: str) -> None:
    def check(path, want, got):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tol, err_msg=what + jax.tree_util.keystr(path))

    assert jax.tree.structure(actual) == jax.tree.structure(expected), what
    jax.tree_util.tree_map_with_path(check, expected, actual)


def assert_results_close(actual, expected, tol=VALUE_TOL) -> None:
    """``(final, outputs, states)`` against the reference's (``states`` is ``None`` where not returned)."""
    for name, got, want in zip(("final", "outputs", "states"), actual, expected):
        assert_trees_close(got, want, tol, name)


# ----------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("set_name", list(OPTION_SETS))
@cells
@pairs
def test_values_and_gradients_match_the_reference(set_name, cell_name, backend):
    prob, spec = problem(cell_name, set_name), OPTION_SETS[set_name]
    skip_unless_available(prob, backend, **spec.options)
    expected, weights, expected_grads = reference_with_grads(cell_name, set_name)

    fn = functools.partial(run_scan, prob.cell, backend=backend, **spec.options)
    result, grads = jax.jit(with_grads(fn, weights))(prob.params, prob.xs, prob.state, prob.lengths)

    assert_results_close(result, expected)
    for name, got, want in zip(("d/dparams", "d/dxs", "d/dstate"), grads, expected_grads):
        assert_trees_close(got, want, GRAD_TOL, name)


@cells
@pairs
def test_streaming_in_chunks_equals_one_call(cell_name, backend):
    prob = problem(cell_name, "streaming")
    skip_unless_available(prob, backend)

    @jax.jit
    def one_call_and_chunks(params, xs, state):
        whole = rx.scan(prob.cell, params, xs, state, backend=backend)
        mid, first = rx.scan(prob.cell, params, xs[..., :3, :], state, backend=backend)
        final, second = rx.scan(prob.cell, params, xs[..., 3:, :], mid, backend=backend)
        return whole, (final, jnp.concatenate([first, second], axis=-2))

    whole, streamed = one_call_and_chunks(prob.params, prob.xs, prob.state)
    final, outputs, _ = reference(prob.cell, prob.params, prob.xs, prob.state)
    assert_results_close(whole, (final, outputs))
    assert_results_close(streamed, whole)


@cells
@pairs
def test_vmap_equals_a_loop_of_calls(cell_name, backend):
    prob = problem(cell_name, "defaults")
    xs = jnp.stack([prob.xs, prob.xs[::-1] * 0.5])  # a leading axis of two problems
    lengths = jnp.asarray([[T, 2, 0], [1, T, 3]], jnp.int32)
    skip_unless_available(prob._replace(lengths=lengths[0]), backend)

    def call(xs, lengths):
        return rx.scan(prob.cell, prob.params, xs, lengths=lengths, backend=backend)

    mapped = jax.jit(jax.vmap(call))(xs, lengths)
    single = jax.jit(call)
    looped = [single(xs[i], lengths[i]) for i in range(len(xs))]
    assert_trees_close(mapped, jax.tree.map(lambda *leaves: jnp.stack(leaves), *looped), VALUE_TOL, "vmap")


@cells
@pairs
def test_jit_equals_eager(cell_name, backend):
    prob = problem(cell_name, "defaults")
    lengths = jnp.asarray([T, 2, 0], jnp.int32)
    skip_unless_available(prob._replace(lengths=lengths), backend, reverse=True)

    def call(params, xs, lengths):
        return rx.scan(prob.cell, params, xs, lengths=lengths, reverse=True, backend=backend)

    assert_trees_close(
        jax.jit(call)(prob.params, prob.xs, lengths), call(prob.params, prob.xs, lengths), VALUE_TOL, "jit"
    )


@functools.cache
def _tangents(cell_name: str):
    prob = problem(cell_name, "defaults")
    return _normal_like((prob.params, prob.xs, prob.state), seed=99)


@functools.cache
def _reference_jvp(cell_name: str):
    """The reference's ``((final, outputs), their tangents)`` with :data:`JVP_LENGTHS`."""
    prob = problem(cell_name, "defaults")
    batch = prob.xs.shape[:-2]
    d_params, d_xs, d_state = _tangents(cell_name)

    def fn(params, rows, starts):
        return reference_rows(prob.cell, params, rows, starts, JVP_LENGTHS, return_states=False)

    primals = (prob.params, split_rows(prob.xs), split_batch(prob.state, batch))
    out, d_out = jax.jvp(fn, primals, (d_params, split_rows(d_xs), split_batch(d_state, batch)))
    return gather_results(out, batch)[:2], gather_results(d_out, batch)[:2]


@cells
@pairs
def test_jvp_matches_the_reference(cell_name, backend):
    prob = problem(cell_name, "defaults")._replace(lengths=jnp.asarray(JVP_LENGTHS, jnp.int32))
    skip_unless_available(prob, backend)
    if not backends.get(backend).forward_mode:
        pytest.skip(f"{backend!r} has no forward mode (its Backend.forward_mode is False)")

    def fn(params, xs, state):
        return rx.scan(prob.cell, params, xs, state, lengths=prob.lengths, backend=backend)

    primal_out, tangent_out = jax.jit(lambda *args: jax.jvp(fn, *args))(
        (prob.params, prob.xs, prob.state), _tangents(cell_name)
    )
    expected_primal, expected_tangent = _reference_jvp(cell_name)
    assert_trees_close(primal_out, expected_primal, VALUE_TOL, "primal")
    assert_trees_close(tangent_out, expected_tangent, GRAD_TOL, "tangent")


def test_backends_without_forward_mode_declare_it():
    """``jvp`` is only checked where ``forward_mode`` is True; the backends it skips say so themselves."""
    assert {b.name for b in backends.TABLE if not b.forward_mode} == {"cudnn_lstm"}


def _hvp(cell_name: str, backend: str):
    prob = problem(cell_name, "defaults")
    weights = loss_weights(reference(prob.cell, prob.params, prob.xs, prob.state)[:2])

    def objective(params, xs, state):
        return loss(rx.scan(prob.cell, params, xs, state, backend=backend), weights)

    @jax.jit
    def hvp(primals, tangents):
        return jax.jvp(jax.grad(objective, argnums=(0, 1, 2)), primals, tangents)[1]

    return hvp((prob.params, prob.xs, prob.state), _tangents(cell_name))


@cells
@pairs
def test_hessian_vector_product_matches_sequential(cell_name, backend):
    prob = problem(cell_name, "defaults")
    skip_unless_available(prob, backend)
    if not backends.get(backend).forward_mode:
        pytest.skip(f"{backend!r} has no forward mode (its Backend.forward_mode is False)")
    if backend == "sequential":
        pytest.skip("'sequential' is the baseline of this check")
    assert_trees_close(_hvp(cell_name, backend), _hvp(cell_name, "sequential"), HVP_TOL, "hvp")


# --------------------------------------------------------------------------- choosing a backend: errors


@pytest.mark.parametrize(
    ("cell", "backend"),
    [
        (rx.elman(4), "native_lstm"),
        (rx.lstm(4, peephole=True), "xla_lstm"),
        (rx.lstm(4), "associative"),
        (rx.gru(4, reset_after=False), "native_gru"),
    ],
    ids=["elman-native_lstm", "peephole-xla_lstm", "lstm-associative", "gru_reset_before-native_gru"],
)
def test_a_named_backend_that_cannot_run_the_call_raises_its_reason(cell, backend):
    params = cell.init(jax.random.key(0), 3)
    xs = random_inputs((2, 4, 3), seed=0)
    reason = backends.available(cell, params, xs)[backend]
    assert reason is not None
    with pytest.raises(ValueError, match=re.escape(reason)):
        rx.scan(cell, params, xs, backend=backend)


def test_a_replaced_transition_is_honoured_by_auto_and_refused_by_native():
    cell = rx.lstm(5)
    params = random_params(cell, seed=3, input_size=3)
    xs = random_inputs((8, 16, 3), seed=4)  # T * B = 128: where auto runs native_lstm for the plain LSTM

    def damped(params, state, z):  # a different transition: the LSTM's, on half its projected input
        return cell.transition(params, state, 0.5 * z)

    replaced = cell._replace(transition=damped)
    assert backends.which(cell, params, xs) == "native_lstm"
    assert backends.which(replaced, params, xs) == "sequential"

    state = replaced.initial_state(params, (8,))
    expected = []
    for t in range(xs.shape[1]):
        state = damped(params, state, replaced.project(params, xs[:, t]))
        expected.append(replaced.output(state))
    expected = jnp.stack(expected, axis=1)
    final, outputs = rx.scan(replaced, params, xs)
    np.testing.assert_allclose(outputs, expected, **VALUE_TOL)
    assert_trees_close(final, state, VALUE_TOL, "final")
    assert not np.allclose(outputs, rx.scan(cell, params, xs)[1], atol=1e-3)  # so the check has teeth

    with pytest.raises(ValueError, match="replaced"):
        rx.scan(replaced, params, xs, backend="native_lstm")
