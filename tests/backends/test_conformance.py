"""Every backend of ``recurrax.scan``, on every cell it can run, against one independent reference.

The reference (:func:`reference`) does not call ``scan``: it is a plain Python loop over each batch element alone
and over its steps, one (compiled) call of ``cell.step`` per step, written from the documented semantics.
``lengths`` right-pad the sequences (the state stays frozen after the last valid step, padded outputs are zero);
``reverse`` runs each sequence's valid part from its last step to its first, outputs in the original order;
``states[t]`` is the state after consuming ``xs[t]`` (at padded positions the frozen final state forward, the
initial state in reverse); ``include_initial`` adds the initial state at index 0 (forward) or ``T`` (reverse);
``resets[t]`` replaces the state by the reset state before ``xs[t]`` is consumed forward, and before ``xs[t - 1]``
in reverse (a reversed run starts each segment at its end), only within the length. Its
gradients are back-propagated through that loop by hand, one ``jax.vjp`` of ``cell.step`` per step, and its
``jvp`` pushed forward one ``jax.jvp`` per step.

For each (cell, backend) pair that ``recurrax.backends.available`` says can run the call (others are skipped
with its reason: ``cudnn_lstm`` off a GPU), the suite checks outputs, final states, states over time and the
gradients of a scalar loss (w.r.t. params, inputs, initial and reset state) under six combined option sets, streaming
in chunks, ``vmap``, jit against eager, ``jax.jvp`` and a Hessian-vector product. Last, the errors of a backend
named for a call it cannot run, and that a cell whose ``transition`` was replaced runs the replacement.
"""

from __future__ import annotations

import functools
import re
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

# Compile time dominates this suite (each problem is tiny and runs once), so on CPU its jits skip LLVM's
# optimisations and XLA's newer fusion emitters: compiles 3-6x faster. The HLO, and so what is checked, is the same.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE if jax.default_backend() == "cpu" else None)

# Each cell is built once, so every test of a pair sees the same functions (a backend is chosen by their identity).
CELLS: dict[str, tuple[rx.Cell, int]] = {  # name: (cell, input size)
    "lstm": (rx.lstm(5), 3),
    "gru": (rx.gru(6), 4),
    "elman": (rx.elman(7), 3),
    "mgu": (rx.mgu(5), 4),
    "lstm_peephole": (rx.lstm(6, peephole=True), 3),
    "min_gru": (rx.min_gru(8), 4),
    "lru": (rx.lru(6, 5), 3),
    # A stack as one cell (state: a tuple of the layers' states), with a residual connection: the `stack` backend.
    "stack": (rx.as_cell(rx.stacked([rx.lstm(4), rx.gru(4)], residual=True)), 3),
}
# Every pair of a cell and a backend of the table (ids "cell-backend"); a test skips the pairs `available` rules out.
every_cell = pytest.mark.parametrize("cell_name", list(CELLS))
every_backend = pytest.mark.parametrize("backend", [b.name for b in backends.TABLE])


class OptionSet(NamedTuple):
    """One problem and the options of ``scan`` it runs with."""

    batch: tuple[int, ...]
    lengths: list | None = None
    random_state: bool = False  # else the zero state (the default), passed explicitly to differentiate it
    options: dict[str, Any] = {}  # noqa: RUF012  (a NamedTuple default, never mutated)
    resets: list | None = None  # batch-major (*batch, T); with them, a random reset state of batch shape ()


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
    # Resets at the first step, inside segments, at a sequence's last valid step and past its length.
    "resets_padded_states": OptionSet(
        batch=(3,),
        lengths=[T, 4, 0],
        random_state=True,
        resets=[[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 1, 1], [1, 0, 0, 0, 0, 1]],
        options=dict(return_states=True),
    ),
    "resets_reverse_time_major": OptionSet(
        batch=(2, 3),
        lengths=[[T, 3, 1], [0, T, 5]],
        random_state=True,
        resets=[
            [[0, 1, 0, 0, 1, 1], [1, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]],
            [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 1]],
        ],
        options=dict(reverse=True, time_major=True, return_states=True, include_initial=True, unroll=2),
    ),
}
PROBLEMS = {
    **OPTION_SETS,
    "streaming": OptionSet(
        batch=(3,), random_state=True, resets=[[0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0]]
    ),
}
JVP_LENGTHS = np.asarray([T, 2, 0])
RESETS = jnp.asarray([[0, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]], bool)  # vmap, jit and hvp


# ------------------------------------------------------------------------------------------ problems


class Problem(NamedTuple):
    cell: rx.Cell
    params: dict
    xs: jax.Array  # batch-major (*batch, T, I)
    state: Any
    lengths: jax.Array | None
    resets: jax.Array | None = None  # batch-major (*batch, T)
    reset_state: Any = None  # batch shape ()


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
    if spec.resets is None:
        return Problem(cell, params, xs, state, lengths)
    reset_state = _normal_like(cell.initial_state(params, ()), seed + 3, scale=0.5)
    return Problem(cell, params, xs, state, lengths, jnp.asarray(spec.resets, bool), reset_state)


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full float32 matmuls (GPUs default to TF32): the tolerances are float32's. No effect on CPU."""
    with jax.default_matmul_precision("highest"):
        yield


def skip_unless_available(prob: Problem, backend: str, **options) -> None:
    """Skips the test, with ``available``'s reason, if ``backend`` cannot run this call."""
    options = {k: v for k, v in options.items() if k != "include_initial"}
    time_major = options.get("time_major")
    xs = jnp.moveaxis(prob.xs, -2, 0) if time_major else prob.xs
    resets = options.pop("resets", prob.resets)
    resets = resets if resets is None or not time_major else jnp.moveaxis(resets, -1, 0)
    reason = backends.available(prob.cell, prob.params, xs, prob.state, lengths=prob.lengths, resets=resets, **options)[
        backend
    ]
    if reason is not None:
        pytest.skip(reason)


def skip_without_forward_mode(backend: str) -> None:
    if not backends.get(backend).forward_mode:
        pytest.skip(f"{backend!r} has no forward mode (its Backend.forward_mode is False)")


# ----------------------------------------------------------------------------------- the reference


class StepFunctions(NamedTuple):
    """``cell.step`` (and what it outputs) as compiled calls, with its derivatives, for the reference's loop."""

    forward: Any  # (params, state, x) -> (state', output)
    vjp: Any  # (params, state, x, (ct_state', ct_output)) -> (ct_params, ct_state, ct_x)
    jvp: Any  # (params, state, x, d_params, d_state, d_x) -> ((state', output), (d_state', d_output))


@functools.cache
def step_functions(cell: rx.Cell) -> StepFunctions:
    def forward(params, state, x):
        new = cell.step(params, state, x)
        return new, cell.output(new)

    return StepFunctions(
        forward=jit(forward),
        vjp=jit(lambda params, state, x, ct: jax.vjp(forward, params, state, x)[1](ct)),
        jvp=jit(lambda params, state, x, *tangents: jax.jvp(forward, (params, state, x), tangents)),
    )


def _run_sequence(cell, params, xs, s0, length: int, reverse: bool, resets=None, reset_state=None):
    """One sequence ``xs: (T, I)``: ``[(t, state before, state after, output, reset)]`` in the order it consumes
    them, ``reset`` whether the state before was the reset state (``resets: (T,)`` or ``None``)."""
    forward = step_functions(cell).forward
    steps, state = [], s0
    for t in reversed(range(length)) if reverse else range(length):
        marker = t + 1 if reverse else t  # reversed, a segment is entered at its last step
        reset = resets is not None and marker < length and bool(resets[marker])
        if reset:
            state = reset_state
        new, output = forward(params, state, xs[t])
        steps.append((t, state, new, output, reset))
        state = new
    return steps


def _sequence_result(cell, s0, steps, num_steps: int, reverse: bool, include_initial: bool):
    """``(final, outputs (T, O), states)`` of one sequence from its steps, padded as documented."""
    final = steps[-1][2] if steps else s0
    outputs = [np.zeros_like(np.asarray(cell.output(s0)))] * num_steps  # padded outputs are zero
    states = [s0 if reverse else final] * num_steps  # padding: nothing consumed yet in reverse, frozen forward
    for t, _, new, output, _ in steps:
        outputs[t], states[t] = output, new
    if include_initial:
        states = [*states, s0] if reverse else [s0, *states]
    return final, np.stack(outputs), _stack(states)


def _sequence_grads(cell, params, xs, s0, steps, weights, reverse: bool, include_initial: bool):
    """Back-propagation through time of ``loss(result, weights)`` for one sequence, one ``vjp`` of the step at a
    time: ``(d_params, d_xs (T, I), d_s0, d_reset_state)``. For ``loss``, a leaf's cotangent is its weight; at a
    reset the cotangent of the state before goes to the reset state, and none further back."""
    vjp = step_functions(cell).vjp
    w_final, w_outputs, w_states = weights
    num_steps, length = len(xs), len(steps)
    d_s0, ct = _zeros(s0), w_final  # ct: the cotangent of the state after the step being undone
    if w_states is not None:
        if include_initial:
            d_s0 = _add(d_s0, _at(w_states, num_steps if reverse else 0))
            w_states = jax.tree.map(lambda w: w[:num_steps] if reverse else w[1:], w_states)
        for t in range(length, num_steps):  # the padded positions hold the initial (reverse) or final state
            if reverse:
                d_s0 = _add(d_s0, _at(w_states, t))
            else:
                ct = _add(ct, _at(w_states, t))
    d_params, d_xs, d_reset = _zeros(params), np.zeros(np.shape(xs), np.float32), _zeros(s0)
    for t, before, _, _, reset in reversed(steps):
        if w_states is not None:
            ct = _add(ct, _at(w_states, t))
        ct_params, ct, d_xs[t] = vjp(params, before, xs[t], (ct, w_outputs[t]))
        d_params = _add(d_params, ct_params)
        if reset:
            d_reset, ct = _add(d_reset, ct), _zeros(ct)
    return d_params, d_xs, _add(d_s0, ct), d_reset


def _elements(xs, state, lengths, resets=None):
    """``(index, xs (T, I), initial state, length, resets (T,) or None)`` of each sequence of ``xs: (*batch, T, I)``."""
    xs = np.asarray(xs)
    for idx in np.ndindex(*xs.shape[:-2]):
        length = xs.shape[-2] if lengths is None else int(np.asarray(lengths)[idx])
        yield idx, xs[idx], _at(state, idx), length, None if resets is None else np.asarray(resets)[idx]


def reference(
    cell, params, xs, state, lengths=None, resets=None, reset_state=None, *, reverse=False, include_initial=False, **_
):
    """``(final, outputs, states)`` of an eager loop of ``cell.step`` over each sequence of ``xs`` alone.

    Batch-major like ``xs: (*batch, T, I)`` and ``resets: (*batch, T)``; ``states`` always returned (with
    ``include_initial``, ``T + 1`` positions). Options that must not change values (``unroll``, ``remat``,
    ``time_major``) are ignored.
    """
    results = []
    for _, seq, s0, length, marks in _elements(xs, state, lengths, resets):
        steps = _run_sequence(cell, params, seq, s0, length, reverse, marks, reset_state)
        results.append(_sequence_result(cell, s0, steps, len(seq), reverse, include_initial))
    batch = np.shape(xs)[:-2]
    return tuple(_merge(list(component), batch) for component in zip(*results))


def reference_grads(
    cell, params, xs, state, lengths, resets, reset_state, weights, *, reverse=False, include_initial=False, **_
):
    """The gradients of ``loss(reference(...), weights)`` w.r.t. params, ``xs``, the initial state and the reset
    state (``None`` without resets; ``weights[2]`` is ``None`` where the states are not part of the loss)."""
    w_final, w_outputs, w_states = weights
    d_params, d_xs, d_states = _zeros(params), np.zeros(np.shape(xs), np.float32), []
    d_reset = None if reset_state is None else _zeros(reset_state)
    for idx, seq, s0, length, marks in _elements(xs, state, lengths, resets):
        steps = _run_sequence(cell, params, seq, s0, length, reverse, marks, reset_state)
        w = (_at(w_final, idx), np.asarray(w_outputs)[idx], None if w_states is None else _at(w_states, idx))
        dp, d_xs[idx], ds0, dr = _sequence_grads(cell, params, seq, s0, steps, w, reverse, include_initial)
        d_params = _add(d_params, dp)
        d_states.append(ds0)
        if d_reset is not None:
            d_reset = _add(d_reset, dr)  # the reset state is broadcast over the batch
    return d_params, d_xs, _merge(d_states, np.shape(xs)[:-2]), d_reset


def reference_jvp(cell, params, xs, state, lengths, tangents):
    """``((final, outputs), (their tangents))`` of the forward reference, one ``jvp`` of the step at a time."""
    jvp = step_functions(cell).jvp
    d_params, d_xs, d_state = tangents
    results = []
    for idx, seq, s0, length, _ in _elements(xs, state, lengths):
        s, ds = s0, _at(d_state, idx)
        outputs = np.zeros((len(seq), *np.shape(cell.output(s0))), np.float32)
        d_outputs = np.zeros_like(outputs)
        for t in range(length):
            (s, outputs[t]), (ds, d_outputs[t]) = jvp(params, s, seq[t], d_params, ds, np.asarray(d_xs)[idx][t])
        results.append((s, outputs, ds, d_outputs))
    final, outputs, d_final, d_outputs = (_merge(list(c), np.shape(xs)[:-2]) for c in zip(*results))
    return (final, outputs), (d_final, d_outputs)


def _at(tree, idx):
    return jax.tree.map(lambda leaf: np.asarray(leaf)[idx], tree)


def _add(a, b):
    return jax.tree.map(lambda u, v: np.asarray(u) + np.asarray(v), a, b)


def _zeros(tree):
    return jax.tree.map(lambda leaf: np.zeros_like(np.asarray(leaf)), tree)


def _stack(trees):
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def _merge(trees, batch):
    """Per-element trees, in ``np.ndindex`` order, stacked into leaves ``(*batch, ...)``."""
    return jax.tree.map(lambda leaf: leaf.reshape(*batch, *leaf.shape[1:]), _stack(trees))


def run_scan(cell, params, xs, state, lengths, reset_state=None, *, resets=None, backend, **options):
    """``scan`` on batch-major ``xs`` (and ``resets``), returning ``(final, outputs, states or None)`` batch-major
    whatever the layout ``options`` ask for."""
    num_batch = xs.ndim - 2
    time_major = options.get("time_major", False)
    if time_major:
        xs = jnp.moveaxis(xs, -2, 0)
        resets = None if resets is None else jnp.moveaxis(resets, -1, 0)
    final, outputs, *states = rx.scan(
        cell, params, xs, state, lengths=lengths, resets=resets, reset_state=reset_state, backend=backend, **options
    )
    states = states[0] if states else None
    if time_major:
        outputs = jnp.moveaxis(outputs, 0, -2)
        states = jax.tree.map(lambda s: jnp.moveaxis(s, 0, num_batch), states)
    return final, outputs, states


def loss_weights(result, seed: int = 7):
    """Fixed random weights, of the shapes of ``result`` (arrays or ``jax.ShapeDtypeStruct``), for :func:`loss`."""
    return _normal_like(result, seed)


def loss(result, weights) -> jax.Array:
    """A weighted sum of every leaf of ``result`` (the real part, for the LRU's complex state)."""
    return sum(jnp.sum(jnp.real(a * w)) for a, w in zip(jax.tree.leaves(result), jax.tree.leaves(weights)))


def with_grads(fn, weights):
    """``(params, xs, state, lengths, reset_state) -> (result, grads w.r.t. params, xs, state, reset_state)`` of
    ``loss(fn(...))``."""

    def objective(params, xs, state, lengths, reset_state):
        result = fn(params, xs, state, lengths, reset_state)
        return loss(result, weights), result

    def run(params, xs, state, lengths, reset_state):
        grad = jax.value_and_grad(objective, argnums=(0, 1, 2, 4), has_aux=True)
        (_, result), grads = grad(params, xs, state, lengths, reset_state)
        return result, grads

    return run


@functools.cache
def reference_with_grads(cell_name: str, set_name: str):
    """The reference's ``(final, outputs, states or None)`` for the option set, the weights of its loss, and
    the gradients of that loss w.r.t. params, inputs and initial state."""
    prob, options = problem(cell_name, set_name), OPTION_SETS[set_name].options
    args = (prob.cell, prob.params, prob.xs, prob.state, prob.lengths, prob.resets, prob.reset_state)
    expected = reference(*args, **options)
    if not options.get("return_states"):
        expected = (*expected[:2], None)
    weights = loss_weights(expected)
    return expected, weights, reference_grads(*args, weights, **options)


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
@every_backend
@every_cell
def test_values_and_gradients_match_the_reference(set_name, cell_name, backend):
    prob, spec = problem(cell_name, set_name), OPTION_SETS[set_name]
    skip_unless_available(prob, backend, **spec.options)
    expected, weights, expected_grads = reference_with_grads(cell_name, set_name)

    fn = functools.partial(run_scan, prob.cell, resets=prob.resets, backend=backend, **spec.options)
    result, grads = jit(with_grads(fn, weights))(prob.params, prob.xs, prob.state, prob.lengths, prob.reset_state)

    assert_results_close(result, expected)
    for name, got, want in zip(("d/dparams", "d/dxs", "d/dstate", "d/dreset_state"), grads, expected_grads):
        assert_trees_close(got, want, GRAD_TOL, name)


@every_backend
@every_cell
def test_streaming_in_chunks_equals_one_call(cell_name, backend):
    """Without resets, and with them (a reset at the first step of the second chunk included)."""
    prob = problem(cell_name, "streaming")
    skip_unless_available(prob, backend)

    @jit
    def one_call_and_chunks(params, xs, state, resets):
        whole = rx.scan(prob.cell, params, xs, state, resets=resets, backend=backend)
        mid, first = rx.scan(prob.cell, params, xs[..., :3, :], state, resets=resets[..., :3], backend=backend)
        final, second = rx.scan(prob.cell, params, xs[..., 3:, :], mid, resets=resets[..., 3:], backend=backend)
        return whole, (final, jnp.concatenate([first, second], axis=-2))

    whole, streamed = one_call_and_chunks(prob.params, prob.xs, prob.state, jnp.zeros_like(prob.resets))
    final, outputs, _ = reference(prob.cell, prob.params, prob.xs, prob.state)
    assert_results_close(whole, (final, outputs))
    assert_results_close(streamed, whole)

    skip_unless_available(prob, backend, resets=prob.resets)
    whole, streamed = one_call_and_chunks(prob.params, prob.xs, prob.state, prob.resets)
    final, outputs, _ = reference(
        prob.cell, prob.params, prob.xs, prob.state, None, prob.resets, prob.cell.initial_state(prob.params, ())
    )
    assert_results_close(whole, (final, outputs))
    assert_results_close(streamed, whole)


@functools.cache
def jitted_scan_with_lengths(cell_name: str, backend: str):
    """:func:`scan_with_lengths` jitted once per pair, for the vmap and jit tests (one compilation for both)."""
    return jit(functools.partial(scan_with_lengths, cell_name, backend))


def scan_with_lengths(cell_name: str, backend: str, params, xs, lengths, resets):
    return rx.scan(CELLS[cell_name][0], params, xs, lengths=lengths, resets=resets, backend=backend)


@every_backend
@every_cell
def test_vmap_equals_a_loop_of_calls(cell_name, backend):
    prob = problem(cell_name, "defaults")
    xs = jnp.stack([prob.xs, prob.xs[::-1] * 0.5])  # a leading axis of two problems
    lengths = jnp.asarray([[T, 2, 0], [1, T, 3]], jnp.int32)
    resets = jnp.stack([RESETS, RESETS[::-1]])
    skip_unless_available(prob._replace(lengths=lengths[0]), backend, resets=RESETS)

    one_call = functools.partial(scan_with_lengths, cell_name, backend)
    mapped = jit(jax.vmap(one_call, in_axes=(None, 0, 0, 0)))(prob.params, xs, lengths, resets)
    looped = [
        jitted_scan_with_lengths(cell_name, backend)(prob.params, xs[i], lengths[i], resets[i]) for i in range(len(xs))
    ]
    assert_trees_close(mapped, jax.tree.map(lambda *leaves: jnp.stack(leaves), *looped), VALUE_TOL, "vmap")


@every_backend
@every_cell
def test_jit_equals_eager(cell_name, backend):
    prob = problem(cell_name, "defaults")
    lengths = jnp.asarray([T, 2, 0], jnp.int32)
    skip_unless_available(prob._replace(lengths=lengths), backend, resets=RESETS)
    jitted = jitted_scan_with_lengths(cell_name, backend)(prob.params, prob.xs, lengths, RESETS)
    eager = rx.scan(prob.cell, prob.params, prob.xs, lengths=lengths, resets=RESETS, backend=backend)
    assert_trees_close(jitted, eager, VALUE_TOL, "jit")


@functools.cache
def _tangents(cell_name: str):
    prob = problem(cell_name, "defaults")
    return _normal_like((prob.params, prob.xs, prob.state), seed=99)


@functools.cache
def _reference_jvp(cell_name: str):
    prob = problem(cell_name, "defaults")
    return reference_jvp(prob.cell, prob.params, prob.xs, prob.state, JVP_LENGTHS, _tangents(cell_name))


@every_backend
@every_cell
def test_jvp_matches_the_reference(cell_name, backend):
    prob = problem(cell_name, "defaults")._replace(lengths=jnp.asarray(JVP_LENGTHS, jnp.int32))
    skip_unless_available(prob, backend)
    skip_without_forward_mode(backend)

    def fn(params, xs, state):
        return rx.scan(prob.cell, params, xs, state, lengths=prob.lengths, backend=backend)

    primal_out, tangent_out = jit(lambda *args: jax.jvp(fn, *args))(
        (prob.params, prob.xs, prob.state), _tangents(cell_name)
    )
    expected_primal, expected_tangent = _reference_jvp(cell_name)
    assert_trees_close(primal_out, expected_primal, VALUE_TOL, "primal")
    assert_trees_close(tangent_out, expected_tangent, GRAD_TOL, "tangent")


def test_only_cudnn_lacks_forward_mode():
    """The jvp and Hessian tests skip the backends whose ``forward_mode`` is False; this pins which those are."""
    assert {b.name for b in backends.TABLE if not b.forward_mode} == {"cudnn_lstm"}


@functools.cache
def _hvp(cell_name: str, backend: str):
    """The Hessian-vector product of a loss of ``scan``'s ``(final, outputs)`` with :data:`RESETS`, in the
    direction of the tangents."""
    prob = problem(cell_name, "defaults")
    weights = loss_weights(jax.eval_shape(lambda: rx.scan(prob.cell, prob.params, prob.xs, prob.state)))

    def objective(params, xs, state):
        return loss(rx.scan(prob.cell, params, xs, state, resets=RESETS, backend=backend), weights)

    @jit
    def hvp(primals, tangents):
        return jax.jvp(jax.grad(objective, argnums=(0, 1, 2)), primals, tangents)[1]

    return hvp((prob.params, prob.xs, prob.state), _tangents(cell_name))


@every_backend
@every_cell
def test_hessian_vector_product_matches_sequential(cell_name, backend):
    prob = problem(cell_name, "defaults")
    skip_unless_available(prob, backend, resets=RESETS)
    skip_without_forward_mode(backend)
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
        (rx.lstm(4, gate_activation=jax.nn.hard_sigmoid), "native_lstm"),
        (rx.gru(4, activation=jax.nn.relu), "xla_gru"),
    ],
    ids=[
        "elman-native_lstm",
        "peephole-xla_lstm",
        "lstm-associative",
        "gru_reset_before-native_gru",
        "lstm_gate_activation-native_lstm",
        "gru_activation-xla_gru",
    ],
)
def test_a_named_backend_that_cannot_run_the_call_raises_its_reason(cell, backend):
    params = random_params(cell, seed=0, input_size=3)
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
    plain_choice = backends.which(cell, params, xs)
    assert plain_choice == ("native_lstm" if jax.default_backend() == "cpu" else "cudnn_lstm")
    assert backends.which(replaced, params, xs) == "sequential"

    def loop(step):  # the batch through `step`, one step at a time
        state, outputs = replaced.initial_state(params, (8,)), []
        for t in range(xs.shape[1]):
            state = step(params, state, xs[:, t])
            outputs.append(replaced.output(state))
        return state, jnp.stack(outputs, axis=1)

    final, expected = loop(jit(lambda params, state, x: damped(params, state, replaced.project(params, x))))
    got_final, got = rx.scan(replaced, params, xs)
    np.testing.assert_allclose(got, expected, **VALUE_TOL)
    assert_trees_close(got_final, final, VALUE_TOL, "final")
    assert not np.allclose(expected, loop(jit(cell.step))[1], atol=1e-3)  # `damped` differs: the check has teeth

    with pytest.raises(ValueError, match="replaced"):
        rx.scan(replaced, params, xs, backend="native_lstm")
