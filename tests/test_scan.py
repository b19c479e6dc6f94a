"""``recurrax.scan`` against a plain Python loop of the NumPy cell equations (``reference.run``).

Also: each padded sequence against itself run alone (flipped by hand for ``reverse``), chunked
calls against one call, transforms (jit, vmap, grad with unroll/remat) and
``jax.test_util.check_grads`` in float64.
"""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax as rx
from reference import CASES, FAMILIES, random_inputs, random_params, random_state, run, to_numpy

B, T, I, H = 3, 5, 2, 3
TOL = dict(atol=2e-5, rtol=2e-5)
LENGTHS = np.array([T, 2, 0])  # full, partial and empty sequences

# Cells built once so the jitted scan below compiles once per (cell, shapes, options) in the module.
CELLS = {name: case.make(H) for name, case in CASES.items()}
OPTIONS = ("reverse", "time_major", "unroll", "remat", "return_states", "include_initial", "backend")
jscan = jax.jit(rx.scan, static_argnums=0, static_argnames=OPTIONS)


def _setup(name, batch=(B,), steps=T, seed=0):
    cell = CELLS[name]
    params = random_params(cell, seed, I)
    xs = random_inputs((*batch, steps, I), seed + 1)
    state = random_state(cell, params, batch, seed + 2, scale=0.5)
    return cell, params, xs, state


def _reference(name, params, xs, state, **kwargs):
    return run(CASES[name].step, to_numpy(params), np.asarray(xs), to_numpy(state), **kwargs)


def _item(tree, b):
    return jax.tree.map(lambda leaf: leaf[b], tree)


def _assert_matches(got, want, tol=TOL):
    """``got``: scan's ``(final, ys[, states])``; ``want``: the reference's ``(final, ys, states)``."""
    chex.assert_trees_all_close(tuple(got[0]), want[0], **tol)
    chex.assert_trees_all_close(got[1], want[1], **tol)
    if len(got) == 3:
        chex.assert_trees_all_close(tuple(got[2]), want[2], **tol)


# Every family, plus variants that change the state shapes (proj) or the code path (no bias, linear).
@pytest.mark.parametrize("name", [*FAMILIES, "lstm_proj", "lstm_nobias", "gru_nobias", "elman_linear"])
def test_scan_equals_python_loop_of_the_equations(name):
    cell, params, xs, state = _setup(name)
    got = jscan(cell, params, xs, state, return_states=True)
    _assert_matches(got, _reference(name, params, xs, state))


@pytest.mark.parametrize(
    "name,batch,time_major",
    [
        ("lstm", (), False),
        ("lstm", (2, 3), False),
        ("lstm", (2, 3), True),
        ("gru_reset_before", (), True),
        ("gru_reset_before", (1,), False),
        ("gru_reset_before", (2, 3), True),
    ],
)
def test_any_number_of_batch_dims_and_time_major(name, batch, time_major):
    cell, params, xs, state = _setup(name, batch)
    lengths = np.arange(int(np.prod(batch))).reshape(batch) % (T + 1)
    want = _reference(name, params, xs, state, lengths=lengths)
    to_tm = functools.partial(jnp.moveaxis, source=len(batch), destination=0)
    from_tm = functools.partial(jnp.moveaxis, source=0, destination=len(batch))
    final, ys, states = jscan(
        cell, params, to_tm(xs) if time_major else xs, state, lengths=lengths, time_major=time_major, return_states=True
    )
    if time_major:
        ys, states = from_tm(ys), jax.tree.map(from_tm, states)
    _assert_matches((final, ys, states), want)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["lstm", "gru_reset_before", "mgu"])
def test_lengths_equal_each_sequence_alone_unpadded(name, reverse):
    """Each padded sequence equals itself run alone on its valid part (flipped by hand for ``reverse``)."""
    cell, params, xs, state = _setup(name)
    final, ys = rx.scan(cell, params, xs, state, lengths=LENGTHS, reverse=reverse)
    for b, n in enumerate(LENGTHS):
        alone = np.asarray(xs[b, :n])
        final_b, ys_b = jscan(cell, params, alone[::-1] if reverse else alone, _item(state, b))
        ys_b = np.asarray(ys_b)[::-1] if reverse else ys_b
        chex.assert_trees_all_close(_item(final, b), final_b, **TOL)
        chex.assert_trees_all_close(ys[b, :n], ys_b, **TOL)
        np.testing.assert_array_equal(ys[b, n:], 0.0)  # padded outputs are exactly zero
    _assert_matches((final, ys), _reference(name, params, xs, state, lengths=LENGTHS, reverse=reverse))


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm_all"])
def test_reverse_equals_flipping_by_hand(name):
    cell, params, xs, state = _setup(name)
    final, ys = jscan(cell, params, xs, state, reverse=True)
    final_f, ys_f = jscan(cell, params, xs[:, ::-1], state)
    chex.assert_trees_all_close(final, final_f, **TOL)
    chex.assert_trees_all_close(ys, ys_f[:, ::-1], **TOL)
    _assert_matches((final, ys), _reference(name, params, xs, state, reverse=True))
    # Full lengths mean no padding: the same as no lengths.
    chex.assert_trees_all_close(jscan(cell, params, xs, state, reverse=True, lengths=np.full(B, T)), (final, ys), **TOL)


@pytest.mark.parametrize(
    "name,reverse,lengths",
    [
        ("lstm", False, None),
        ("lstm", True, None),
        ("lstm", False, LENGTHS),
        ("lstm", True, LENGTHS),
        ("gru_reset_before", True, LENGTHS),
    ],
)
def test_return_states_with_initial(name, reverse, lengths):
    cell, params, xs, state = _setup(name)
    want = _reference(name, params, xs, state, lengths=lengths, reverse=reverse, include_initial=True)
    got = jscan(cell, params, xs, state, lengths=lengths, reverse=reverse, return_states=True, include_initial=True)
    _assert_matches(got, want)
    chex.assert_shape(jax.tree.leaves(got[2]), (B, T + 1, H))
    # Without the initial state the same states, one position fewer.
    _, _, states = jscan(cell, params, xs, state, lengths=lengths, reverse=reverse, return_states=True)
    chex.assert_trees_all_close(states, jax.tree.map(lambda s: s[:, :-1] if reverse else s[:, 1:], got[2]), **TOL)


# Chunks of 3, 1 and 3 steps.
SPLITS = [0, 3, 4, 7]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["lstm", "lstm_all"])
def test_chunked_calls_equal_one_call(name, reverse):
    cell, params, xs, state = _setup(name, steps=SPLITS[-1])
    final, ys = jscan(cell, params, xs, state, reverse=reverse)
    chunks = list(itertools.pairwise(SPLITS))
    s, outs = state, {}
    for a, b in chunks[::-1] if reverse else chunks:
        s, outs[a] = jscan(cell, params, xs[:, a:b], s, reverse=reverse)
    chex.assert_trees_all_close(s, final, **TOL)
    chex.assert_trees_all_close(jnp.concatenate([outs[a] for a, _ in chunks], axis=1), ys, **TOL)


def test_chunked_calls_with_lengths_equal_one_call():
    cell, params, xs, state = _setup("lstm_peephole", steps=SPLITS[-1])
    lengths = np.array([7, 4, 2])
    final, ys = jscan(cell, params, xs, state, lengths=lengths)
    s, outs = state, []
    for a, b in itertools.pairwise(SPLITS):
        s, out = jscan(cell, params, xs[:, a:b], s, lengths=np.clip(lengths - a, 0, b - a))
        outs.append(out)
    chex.assert_trees_all_close(s, final, **TOL)
    chex.assert_trees_all_close(jnp.concatenate(outs, axis=1), ys, **TOL)


def _loss(cell, lengths=None, reverse=False, **options):
    weights = jnp.linspace(-1.0, 1.0, B * T * H).reshape(B, T, -1)

    def loss(params, xs, state):
        final, ys = rx.scan(cell, params, xs, state, lengths=lengths, reverse=reverse, **options)
        return jnp.sum(weights[..., : ys.shape[-1]] * ys) + sum(jnp.sum(jnp.sin(leaf)) for leaf in final)

    return loss


def _values_and_gradients(name, **options):
    cell, params, xs, state = _setup(name)
    kw = dict(lengths=LENGTHS, reverse=True)
    values = jscan(cell, params, xs, state, **kw, **options)
    return values, jax.jit(jax.grad(_loss(cell, **kw, **options), argnums=(0, 1, 2)))(params, xs, state)


_default_values_and_gradients = functools.cache(_values_and_gradients)


@pytest.mark.parametrize(
    "name,options",
    [("lstm", dict(unroll=3)), ("lstm", dict(remat=True)), ("gru_reset_before", dict(unroll=2, remat=True))],
)
def test_unroll_and_remat_give_the_same_values_and_gradients(name, options):
    chex.assert_trees_all_close(_values_and_gradients(name, **options), _default_values_and_gradients(name), **TOL)


@pytest.mark.parametrize("name", ["lstm", "lstm_all", "gru_reset_before"])
def test_jit_equals_eager(name):
    cell, params, xs, state = _setup(name)
    for kw in (dict(), dict(lengths=LENGTHS, reverse=True, return_states=True)):
        chex.assert_trees_all_close(rx.scan(cell, params, xs, state, **kw), jscan(cell, params, xs, state, **kw), **TOL)


@pytest.mark.parametrize("name", ["lstm", "mgu"])
def test_vmap_equals_a_python_loop(name):
    cell, params, xs, state = _setup(name)

    def one(x, s, n):  # an unbatched (T, I) sequence
        return rx.scan(cell, params, x, s, lengths=n, reverse=True)

    got = jax.jit(jax.vmap(one))(xs, state, LENGTHS)
    want = [one(xs[b], _item(state, b), LENGTHS[b]) for b in range(B)]
    chex.assert_trees_all_close(got, jax.tree.map(lambda *leaves: jnp.stack(leaves), *want), **TOL)
    # Over params too (e.g. seeds): a stack of params, one batch each.
    stacked = jax.tree.map(lambda *p: jnp.stack(p), params, random_params(cell, 7, I))
    got = jax.vmap(lambda p: jscan(cell, p, xs, state))(stacked)
    for k, p in enumerate((params, random_params(cell, 7, I))):
        chex.assert_trees_all_close(_item(got, k), jscan(cell, p, xs, state), **TOL)


# One cell per family, on the auto backend; the XLA LSTM/GRU derivatives are check_grads-tested in
# tests/backends/test_xla.py.
@pytest.mark.parametrize("name", ["elman", "lstm_all", "gru", "mgu"])
def test_check_grads_through_scan_float64(name):
    with jax.enable_x64(True):
        cell = CASES[name].make(H, param_dtype=jnp.float64)
        params = random_params(cell, 0, I)
        xs = random_inputs((2, 4, I), 1, jnp.float64)
        state = random_state(cell, params, (2,), 2, scale=0.5)
        f = jax.jit(lambda p, x, s: rx.scan(cell, p, x, s, lengths=np.array([4, 2]), reverse=name.startswith("lstm")))
        check_grads(f, (params, xs, state), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", ["lstm_all", "gru", "mgu"])
def test_gate_blocks_are_a_layout_hint_only(name):
    """Storing the projected inputs per gate block (``Structure.gates``) changes no value or gradient."""
    cell, params, xs, state = _setup(name)
    assert cell.structure.gates > 1
    one = cell._replace(structure=cell.structure._replace(gates=1))

    def loss(c):
        return lambda p, x, s: jnp.sum(rx.scan(c, p, x, s, lengths=LENGTHS, reverse=True)[1] ** 2)

    np.testing.assert_array_equal(
        rx.scan(cell, params, xs, state, lengths=LENGTHS)[1], rx.scan(one, params, xs, state, lengths=LENGTHS)[1]
    )
    chex.assert_trees_all_close(
        jax.grad(loss(cell), argnums=(0, 1, 2))(params, xs, state),
        jax.grad(loss(one), argnums=(0, 1, 2))(params, xs, state),
        atol=1e-6,
        rtol=1e-6,
    )
