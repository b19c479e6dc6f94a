"""The XLA sequence-level LSTM/GRU backends (recurrax.backends.xla): values and derivatives.

References: the cell equations re-written in NumPy (values), numerical differences via
``jax.test_util.check_grads`` (derivatives, forward and reverse mode, float64), and JAX autodiff of
the plain per-step scan, ``backend="sequential"`` (gradients to 1e-5). Every scan option on every backend is
held to ``sequential`` by the conformance suite (test_conformance.py).
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax as rx
from recurrax.backends import tuning
from recurrax.backends import xla as fused

B, T, I, H = 3, 6, 4, 5
TOL = dict(atol=1e-5, rtol=1e-5)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm(p, xs):
    h = np.zeros((xs.shape[0], H))
    c = np.zeros((xs.shape[0], H))
    hs = []
    for t in range(xs.shape[1]):
        a = xs[:, t] @ p["w_i"] + p["b"] + h @ p["w_h"]
        i, f, g, o = np.split(a, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1), c


def _numpy_gru(p, xs):
    h = np.zeros((xs.shape[0], H))
    hs = []
    for t in range(xs.shape[1]):
        zr, zz, zn = np.split(xs[:, t] @ p["w_i"] + p["b"], 3, axis=-1)
        hr, hz, hn = np.split(h @ p["w_h"], 3, axis=-1)
        r, u = _sigmoid(zr + hr), _sigmoid(zz + hz)
        n = np.tanh(zn + r * (hn + p["b_hn"]))
        h = (1 - u) * n + u * h
        hs.append(h)
    return np.stack(hs, 1)


class _On(NamedTuple):
    """A cell with the backend its scans run on, for the tests below."""

    cell: rx.Cell
    backend: str


def _scan(on, *args, **kwargs):
    return rx.scan(on.cell, *args, backend=on.backend, **kwargs)


def _setup(kind, **kwargs):
    cell = getattr(rx, kind)(H, **kwargs)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    return _On(cell, f"xla_{kind}"), params, xs


def _generic(on):
    return on._replace(backend="sequential")


def _uses_fast_path(fn, *args):
    return "custom_jvp_call" in str(jax.make_jaxpr(fn)(*args))


def test_plain_lstm_and_gru_declare_their_structure_and_variants_do_not():
    assert rx.lstm(H).structure.kind == "lstm" and rx.gru(H).structure.kind == "gru"
    for variant in (rx.lstm(H, dtype=jnp.bfloat16), rx.lstm(H, layer_norm=True), rx.lstm(H, peephole=True)):
        assert variant.structure.kind is None and variant.structure.gates == 4
    assert rx.lstm(H, proj_size=2).structure.kind is None and rx.gru(H, reset_after=False).structure.kind is None
    assert rx.elman(H).structure.kind is None  # it declares only its masked form (recurrent dropout)
    # A replaced function takes the structure away: no backend runs its own equations for it any more.
    replaced = rx.lstm(H)._replace(transition=rx.lstm(H).transition)
    assert rx.structure_of(rx.lstm(H)) is not None and rx.structure_of(replaced) is None


def test_values_match_numpy_equations():
    cell, p, xs = _setup("lstm")
    final, ys = _scan(cell, p, xs)
    want_ys, want_c = _numpy_lstm(jax.tree.map(np.asarray, p), np.asarray(xs))
    chex.assert_trees_all_close(ys, want_ys, **TOL)
    chex.assert_trees_all_close(final.c, want_c, **TOL)
    cell, p, xs = _setup("gru")
    _, ys = _scan(cell, p, xs)
    chex.assert_trees_all_close(ys, _numpy_gru(jax.tree.map(np.asarray, p), np.asarray(xs)), **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_forward_values_equal_the_generic_scan(kind):
    cell, p, xs = _setup(kind)
    assert _uses_fast_path(lambda p, xs: _scan(cell, p, xs), p, xs)
    assert not _uses_fast_path(lambda p, xs: _scan(_generic(cell), p, xs), p, xs)
    chex.assert_trees_all_close(_scan(cell, p, xs), _scan(_generic(cell), p, xs), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("unroll", [1, 3])
def test_gradients_equal_autodiff_of_the_plain_scan(kind, unroll):
    cell, p, xs = _setup(kind)
    state = jax.tree.map(lambda s: s + 0.3, cell.cell.initial_state(p, (B,)))
    weights = jax.random.normal(jax.random.key(2), (B, T, H))

    def loss(c):
        def f(p, xs, s):
            final, ys = _scan(c, p, xs, s, unroll=unroll)
            return jnp.sum(weights * ys) + sum(jnp.sum(jnp.sin(leaf)) for leaf in final)

        return f

    got = jax.jit(jax.grad(loss(cell), argnums=(0, 1, 2)))(p, xs, state)
    want = jax.grad(loss(_generic(cell)), argnums=(0, 1, 2))(p, xs, state)
    chex.assert_trees_all_close(got, want, **TOL)


def test_check_grads_forward_and_reverse_mode_float64():
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(3), 4)
        w = 0.5 * jax.random.normal(keys[0], (H, 4 * H), jnp.float64)
        zs = jax.random.normal(keys[1], (3, 2, 4 * H), jnp.float64)
        h0, c0 = (0.1 * jax.random.normal(k, (2, H), jnp.float64) for k in keys[2:])
        modes = ("fwd", "rev")
        check_grads(jax.jit(lambda *a: fused.lstm_recurrence(*a, 2)), (w, zs, h0, c0), order=1, modes=modes)
        b_hn = 0.1 * jnp.arange(H, dtype=jnp.float64)
        gru = jax.jit(lambda *a: fused.gru_recurrence(*a, 1))
        check_grads(gru, (w[:, : 3 * H], b_hn, zs[..., : 3 * H], h0), order=1, modes=modes)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_forward_mode_jacobian_equals_reverse_mode(kind):
    cell, p, xs = _setup(kind)
    f = lambda x: _scan(cell, p, x)[1][-1]  # noqa: E731
    chex.assert_trees_all_close(jax.jit(jax.jacfwd(f))(xs[0]), jax.jit(jax.jacrev(f))(xs[0]), **TOL)


def test_gru_without_bias_and_streaming_chunks():
    cell, p, xs = _setup("gru", use_bias=False)
    chex.assert_trees_all_close(_scan(cell, p, xs), _scan(_generic(cell), p, xs), **TOL)
    cell, p, xs = _setup("lstm")
    s, first = _scan(cell, p, xs[:, :2])
    final, second = _scan(cell, p, xs[:, 2:], s)
    want_final, want = _scan(cell, p, xs)
    chex.assert_trees_all_close((final, jnp.concatenate([first, second], 1)), (want_final, want), **TOL)


def test_mixed_dtypes_are_refused_by_name_and_auto_runs_sequential():
    on, p, xs = _setup("lstm")
    # A state narrower than the params is refused by every backend (the recurrence would run in it).
    narrow = jax.tree.map(lambda s: s.astype(jnp.bfloat16), on.cell.initial_state(p, (B,)))
    with pytest.raises(TypeError, match=r"`state\.h` must be real floating-point of at least the precision of"):
        _scan(on, p, xs, narrow)
    # bfloat16 params with a float32 state is a valid call, but not one dtype.
    p = jax.tree.map(lambda w: w.astype(jnp.bfloat16), p)
    state = on.cell.initial_state(jax.tree.map(lambda w: w.astype(jnp.float32), p), (B,))
    with pytest.raises(ValueError, match="one dtype"):
        _scan(on, p, xs.astype(jnp.bfloat16), state)
    assert rx.backends.which(on.cell, p, xs.astype(jnp.bfloat16), state) == "sequential"


@pytest.mark.parametrize("steps", [32, 37])  # whole chunks only; and a remainder after them
def test_forward_projecting_in_chunks_equals_numpy_and_autodiff(steps):
    """Without differentiation ``lstm_sequence`` projects 16 steps at a time inside the loop (batch >= 8)."""
    assert tuning.PROJECTION_CHUNK.get(jax.default_backend()) == 16
    batch = 8
    cell = _On(rx.lstm(H), "xla_lstm")
    p = cell.cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(4), (batch, steps, I))
    final, ys = jax.jit(lambda p, xs: _scan(cell, p, xs))(p, xs)
    want_hs, want_c = _numpy_lstm({k: np.asarray(v, np.float64) for k, v in p.items()}, np.asarray(xs, np.float64))
    np.testing.assert_allclose(ys, want_hs, **TOL)
    np.testing.assert_allclose(final.c, want_c, **TOL)
    loss = lambda c: lambda p, xs: jnp.sum(jnp.sin(_scan(c, p, xs)[1]))  # noqa: E731
    got = jax.grad(loss(cell), argnums=(0, 1))(p, xs)
    want = jax.grad(loss(_generic(cell)), argnums=(0, 1))(p, xs)
    chex.assert_trees_all_close(got, want, **TOL)


def test_check_grads_of_the_chunked_sequence_float64():
    """Numerical differences of the chunked forward pass against the hand-written derivative."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(5), 6)
        w_i = 0.5 * jax.random.normal(keys[0], (3, 4 * H), jnp.float64)
        b = 0.1 * jax.random.normal(keys[1], (4 * H,), jnp.float64)
        w_h = 0.5 * jax.random.normal(keys[2], (H, 4 * H), jnp.float64)
        xs = jax.random.normal(keys[3], (35, 8, 3), jnp.float64)
        h0, c0 = (0.1 * jax.random.normal(k, (8, H), jnp.float64) for k in keys[4:])
        f = jax.jit(lambda *a: fused.lstm_sequence(*a, 4, 16))
        check_grads(f, (w_i, b, w_h, xs, h0, c0), order=1, modes=("fwd", "rev"), eps=1e-4)
