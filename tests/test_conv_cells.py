"""recurrax.conv_lstm and recurrax.conv_gru against references not written from the same code.

References: ``flax.linen.ConvLSTMCell`` run by ``flax.linen.RNN`` and Keras 3's ``ConvLSTM1D/2D/3D`` (JAX backend)
with the same, randomised, weights; the ConvGRU equations of Ballas et al. (2016) in NumPy, with a convolution
written as a sum of shifted slices; ``jax.test_util.check_grads`` in float64. Then the transforms (jit, vmap), a
dynamics analysis on the flattened cell, the backend table, and the argument errors.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax as rx
from recurrax import backends, dynamics
from recurrax.cells.conv import flattened
from recurrax.interop import conv as rx_conv

B, T, C, F = 2, 4, 3, 4
TOL = {"atol": 1e-5, "rtol": 1e-5}
SPATIAL = {1: (6,), 2: (5, 6), 3: (3, 4, 3)}
KERNEL = {1: (3,), 2: (3, 3), 3: (3, 1, 3)}


def _xs(dims: int, seed: int = 1, batch: int = B) -> jax.Array:
    """Batch-major inputs ``(B, T, *spatial, C)`` (the peers' layout)."""
    return jax.random.normal(jax.random.key(seed), (batch, T, *SPATIAL[dims], C))


def _randomise(tree, seed=0, scale=0.5):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _run(cell, params, xs, state=None):
    """recurrax's scan on batch-major ``xs``: ``(final state, outputs (B, T, *spatial, F))``."""
    return rx.scan(cell, params, xs, state)


# ------------------------------------------------------------------------------------------------ Flax


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_lstm_matches_flax_linen(dims):
    xs = _xs(dims)
    ref = nn.ConvLSTMCell(F, kernel_size=KERNEL[dims])
    net = nn.RNN(ref, return_carry=True)
    variables = _randomise(net.init(jax.random.key(0), xs))  # biases random too, so their layout matters
    (c_ref, h_ref), ys_ref = net.apply(variables, xs)

    cell = rx.conv_lstm(F, kernel_size=KERNEL[dims])
    params = rx_conv.from_flax_conv_lstm(variables["params"]["cell"])
    final, ys = _run(cell, params, xs)
    chex.assert_trees_all_close((ys, final.h, final.c), (ys_ref, h_ref, c_ref), **TOL)
    # And back: the converted-back variables are Flax's computation again.
    back = {"params": {"cell": rx_conv.to_flax_conv_lstm(params)["params"]}}
    chex.assert_trees_all_close(net.apply(back, xs)[1], ys_ref, **TOL)


def test_flax_forget_offset_is_in_the_bias():
    """Flax's ``f + 1`` lands in recurrax's forget block, so an all-zero Flax cell is recurrax's forget_bias=1."""
    variables = jax.tree.map(jnp.zeros_like, nn.ConvLSTMCell(F, (3, 3)).init(jax.random.key(0), *_flax_args()))
    b = rx_conv.from_flax_conv_lstm(variables)["b"]
    np.testing.assert_array_equal(b, np.r_[np.zeros(F), np.ones(F), np.zeros(2 * F)])
    fresh = rx.conv_lstm(F, kernel_size=(3, 3), init=rx.init.glorot_orthogonal()).init(jax.random.key(0), C)
    np.testing.assert_array_equal(fresh["b"], b)


def _flax_args():
    x = jnp.zeros((1, 4, 4, C))
    return nn.ConvLSTMCell(F, (3, 3)).initialize_carry(jax.random.key(0), x.shape), x


# ----------------------------------------------------------------------------------------------- Keras


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dims", [1, 2])  # ConvLSTM3D is the same cell; the 3-d layout is covered against Flax
def test_conv_lstm_matches_keras(dims):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip(f"Keras runs the {keras.backend.backend()!r} backend here, not 'jax'")
    xs = np.asarray(_xs(dims))
    layer_cls = {1: keras.layers.ConvLSTM1D, 2: keras.layers.ConvLSTM2D, 3: keras.layers.ConvLSTM3D}[dims]
    layer = layer_cls(F, KERNEL[dims], padding="same", return_sequences=True, return_state=True)
    layer(xs)
    rng = np.random.default_rng(0)
    layer.set_weights([(rng.normal(size=w.shape) * 0.5).astype(w.dtype) for w in layer.get_weights()])
    ys_ref, h_ref, c_ref = (np.asarray(o) for o in layer(xs))

    cell = rx.conv_lstm(F, kernel_size=KERNEL[dims])
    params = rx_conv.from_keras_conv_lstm(layer)
    final, ys = _run(cell, params, jnp.asarray(xs))
    chex.assert_trees_all_close((ys, final.h, final.c), (ys_ref, h_ref, c_ref), **TOL)
    for got, want in zip(rx_conv.to_keras_conv_lstm(params), layer.get_weights()):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="padding='same'"):
        rx_conv.from_keras_conv_lstm(layer_cls(F, KERNEL[dims]))  # Keras's default padding is "valid"


# ------------------------------------------------------------------------------------ ConvGRU in NumPy


def _np_conv_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``"SAME"`` stride-1 convolution of ``x: (B, H, W, C)`` with ``w: (kh, kw, C, G)`` as a sum of shifted slices.

    Padding as TensorFlow/XLA define SAME: ``(k - 1) // 2`` before, the rest after (so even kernels pad more after).
    """
    kh, kw = w.shape[:2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    rows, cols = x.shape[1:3]
    return sum(
        np.einsum("bhwc,cg->bhwg", xp[:, i : i + rows, j : j + cols], w[i, j]) for i in range(kh) for j in range(kw)
    )


def _np_sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


@pytest.mark.parametrize("kernel", [(3, 3), (3, 2)])
def test_conv_gru_step_matches_numpy_equations(kernel):
    cell = rx.conv_gru(F, kernel_size=kernel)
    params = _randomise(cell.init(jax.random.key(0), C), seed=3)
    x = np.asarray(jax.random.normal(jax.random.key(1), (B, 5, 6, C)), np.float64)
    h = np.asarray(jax.random.normal(jax.random.key(2), (B, 5, 6, F)), np.float64)
    w_i, w_h, b = (np.asarray(params[k], np.float64) for k in ("w_i", "w_h", "b"))
    # Ballas et al. (2016), in recurrax's convention (u weighs the old state):
    #   r = σ(W_r * x + U_r * h + b_r),  u = σ(W_z * x + U_z * h + b_z)
    #   n = tanh(W_n * x + U_n * (r ⊙ h) + b_n),  h' = (1 - u) ⊙ n + u ⊙ h
    W_r, W_z, W_n = np.split(w_i, 3, axis=-1)
    U_r, U_z, U_n = np.split(w_h, 3, axis=-1)
    b_r, b_z, b_n = np.split(b, 3)
    r = _np_sigmoid(_np_conv_same(x, W_r) + _np_conv_same(h, U_r) + b_r)
    u = _np_sigmoid(_np_conv_same(x, W_z) + _np_conv_same(h, U_z) + b_z)
    n = np.tanh(_np_conv_same(x, W_n) + _np_conv_same(r * h, U_n) + b_n)
    want = (1 - u) * n + u * h
    got = cell.step(params, rx.RNNState(jnp.asarray(h, jnp.float32)), jnp.asarray(x, jnp.float32)).h
    np.testing.assert_allclose(got, want, **TOL)


def test_conv_lstm_step_matches_numpy_equations():
    cell = rx.conv_lstm(F, kernel_size=(3, 3))
    params = _randomise(cell.init(jax.random.key(0), C), seed=4)
    x = np.asarray(jax.random.normal(jax.random.key(1), (B, 4, 5, C)), np.float64)
    h, c = (np.asarray(jax.random.normal(jax.random.key(k), (B, 4, 5, F)), np.float64) for k in (2, 3))
    w_i, w_h, b = (np.asarray(params[k], np.float64) for k in ("w_i", "w_h", "b"))
    i, f, g, o = np.split(_np_conv_same(x, w_i) + _np_conv_same(h, w_h) + b, 4, axis=-1)
    c_new = _np_sigmoid(f) * c + _np_sigmoid(i) * np.tanh(g)
    h_new = _np_sigmoid(o) * np.tanh(c_new)
    got = cell.step(params, rx.LSTMState(*(jnp.asarray(a, jnp.float32) for a in (h, c))), jnp.asarray(x, jnp.float32))
    chex.assert_trees_all_close((got.h, got.c), (h_new, c_new), **TOL)


# ------------------------------------------------------------------------------------------ transforms

CELLS = {"conv_lstm": rx.conv_lstm, "conv_gru": rx.conv_gru}


@pytest.mark.parametrize("name", list(CELLS))
def test_scan_equals_steps_and_jit_equals_eager(name):
    cell = CELLS[name](F, kernel_size=(3, 3))
    params = _randomise(cell.init(jax.random.key(0), C))
    xs = jnp.moveaxis(_xs(2), 1, 0)  # (T, B, *spatial, C)
    final, ys = rx.scan(cell, params, xs, time_major=True)  # state=None: zeros of (B, *spatial, F)
    state = cell.initial_state(params, xs.shape[1:-1])
    outs = []
    for x in xs:
        state = cell.step(params, state, x)
        outs.append(cell.output(state))
    chex.assert_trees_all_close((final, ys), (state, jnp.stack(outs)), **TOL)
    jitted = jax.jit(lambda p, x: rx.scan(cell, p, x, time_major=True))(params, xs)
    chex.assert_trees_all_close(jitted, (final, ys), **TOL)
    # return_states goes through the same layout, time-major and batch-major (time before the spatial axes).
    _, _, states = rx.scan(cell, params, xs, time_major=True, return_states=True)
    chex.assert_trees_all_close(jax.tree.map(lambda s: s[-1], states), final, **TOL)
    bm_final, bm_ys, bm_states = rx.scan(cell, params, jnp.moveaxis(xs, 0, 1), return_states=True)
    chex.assert_trees_all_close((bm_final, bm_ys), (final, jnp.moveaxis(ys, 0, 1)), **TOL)
    chex.assert_trees_all_close(bm_states, jax.tree.map(lambda s: jnp.moveaxis(s, 0, 1), states), **TOL)


@pytest.mark.parametrize("name", list(CELLS))
def test_vmap_over_batch_equals_loop(name):
    cell = CELLS[name](F, kernel_size=(3, 3))
    params = _randomise(cell.init(jax.random.key(0), C))
    xs = _xs(2)  # (B, T, *spatial, C); each example (T, *spatial, C) is an unbatched run
    one = jax.vmap(lambda x: rx.scan(cell, params, x, time_major=True)[1])(xs)
    loop = jnp.stack([rx.scan(cell, params, x, time_major=True)[1] for x in xs])
    chex.assert_trees_all_close(one, loop, **TOL)
    chex.assert_trees_all_close(one, _run(cell, params, xs)[1], **TOL)


@pytest.mark.parametrize("name", list(CELLS))
def test_check_grads_float64(name):
    with jax.enable_x64(True):
        cell = CELLS[name](2, kernel_size=(3, 2), param_dtype=jnp.float64)
        params = _randomise(cell.init(jax.random.key(0), 1))
        xs = jax.random.normal(jax.random.key(1), (2, 1, 3, 3, 1), jnp.float64)

        def loss(p, x):
            final, ys = rx.scan(cell, p, x, time_major=True)
            return jnp.sum(ys**2) + jnp.sum(final.h)

        check_grads(loss, (params, xs), order=1, modes=("fwd", "rev"))


# ------------------------------------------------------------------------------------------- dynamics


def test_step_jacobian_of_flattened_conv_lstm():
    """The flattened cell's Jacobian blocks are d(maps')/d(maps) of the conv cell itself."""
    spatial = (3, 4)
    cell = rx.conv_lstm(2, kernel_size=(3, 3))
    params = _randomise(cell.init(jax.random.key(0), C))
    maps = cell.initial_state(params, spatial)
    maps = rx.LSTMState(*(jax.random.normal(jax.random.key(k), m.shape) for k, m in zip((1, 2), maps)))
    x = jax.random.normal(jax.random.key(3), (*spatial, C))
    flat = flattened(cell, spatial)
    jac = dynamics.step_jacobian(flat, params, jax.tree.map(jnp.ravel, maps), x.ravel())
    S = 3 * 4 * 2
    want = jax.jacfwd(lambda c: cell.step(params, maps._replace(c=c.reshape(maps.c.shape)), x).h.ravel())(
        maps.c.ravel()
    )
    assert jac.blocks.h.c.shape == (S, S) and jac.matrix.shape == (2 * S, 2 * S)
    np.testing.assert_allclose(jac.blocks.h.c, want, **TOL)
    # A trajectory of the flattened cell is the conv cell's run, maps as vectors.
    xs = jax.random.normal(jax.random.key(4), (T, *spatial, C))
    states = dynamics.trajectory(flat, params, xs.reshape(T, -1))
    final, _ = rx.scan(cell, params, xs, time_major=True)
    np.testing.assert_allclose(states.h[-1], final.h.ravel(), **TOL)


# ------------------------------------------------------------------------------------------- backends


@pytest.mark.parametrize("name", list(CELLS))
def test_only_sequential_runs_conv_cells(name):
    cell = CELLS[name](F, kernel_size=(3, 3))
    params = cell.init(jax.random.key(0), C)
    xs = jnp.zeros((T, B, 4, 4, C))
    table = backends.available(cell, params, xs, time_major=True)
    assert [b for b, why in table.items() if why is None] == ["sequential"]
    assert "convolutional" in table["newton"]
    with pytest.raises(ValueError, match="newton"):
        rx.scan(cell, params, xs, time_major=True, backend="newton")


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kernel_size=0, spatial_dims=2), "`kernel_size` must hold positive ints"),
        (dict(kernel_size=(3, -1)), "`kernel_size` must hold positive ints"),
        (dict(kernel_size=3), "set `spatial_dims`"),
        (dict(kernel_size=(3, 3), spatial_dims=3), r"`kernel_size` must have 3 ints"),
        (dict(kernel_size=(3,) * 4), r"`kernel_size` must have 1, 2 or 3 ints"),
        (dict(kernel_size=3, spatial_dims=4), "`spatial_dims` must be 1, 2 or 3"),
        (dict(kernel_size=(3, 3), padding="VALID"), "`padding` must be 'SAME'"),
        (dict(kernel_size=(3, 3), padding=(1, 1)), "`padding` must be 'SAME'"),
        (dict(kernel_size=(3, 3), activation=3), "`activation`"),
        (dict(kernel_size=(3, 3), param_dtype=jnp.int32), "`param_dtype`"),
    ],
)
@pytest.mark.parametrize("name", list(CELLS))
def test_bad_constructor_arguments(name, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        CELLS[name](F, **kwargs)
    if match.startswith("`kernel_size` must hold"):
        with pytest.raises(ValueError, match="`features`"):
            CELLS[name](0, kernel_size=(3, 3))


@pytest.mark.parametrize("name", list(CELLS))
def test_bad_call_arguments(name):
    cell = CELLS[name](F, kernel_size=(3, 3))
    params = cell.init(jax.random.key(0), C)
    x = jnp.zeros((B, 5, 5, C))
    good = cell.initial_state(params, x.shape[:-1])
    small = jax.tree.map(lambda s: s[:, :4, :4], good)
    with pytest.raises(ValueError, match=r"`state.h` must have shape \(2, 5, 5, 4\).*got \(2, 4, 4, 4\)"):
        cell.step(params, small, x)
    with pytest.raises(ValueError, match=r"must have the batch and spatial shape of the input"):
        cell.transition(params, small, cell.project(params, x))
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., 3\)"):
        cell.project(params, jnp.zeros((B, 5, 5, C + 1)))
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., S, S, C\)"):
        cell.project(params, jnp.zeros((5, C)))
    other = CELLS[name](F, kernel_size=(5, 5)).init(jax.random.key(0), C)
    with pytest.raises(ValueError, match=r"`params\['w_h'\]` must have shape \(3, 3, 4,"):
        cell.step(params | {"w_h": other["w_h"]}, good, x)
    with pytest.raises(ValueError, match="`batch_shape` must end with the 2 spatial axes"):
        cell.initial_state(params, (B,))
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(\*batch,\) = \(2,\), one value per sequence"):
        rx.scan(cell, params, jnp.zeros((B, T, 5, 5, C)), lengths=jnp.full((B, 5), T))
    with pytest.raises(ValueError, match="`spatial_shape` must be 2 positive ints"):
        flattened(cell, (5,))


@pytest.mark.parametrize("name", list(CELLS))
def test_lengths_masks_and_resets_are_per_sequence(name):
    """Given per sequence, they hold at every position of its maps: a padded sequence equals its valid part run
    alone, a masked one its kept steps, a reset one its last segment from zeros."""
    cell = CELLS[name](F, kernel_size=(3, 3))
    params = _randomise(cell.init(jax.random.key(0), C))
    xs = _xs(2)  # (B, T, *spatial, C)
    final, ys = rx.scan(cell, params, xs, lengths=jnp.array([T, 2]))
    alone_final, alone = rx.scan(cell, params, xs[1:, :2])
    chex.assert_trees_all_close((jax.tree.map(lambda s: s[1:], final), ys[1:, :2]), (alone_final, alone), **TOL)
    np.testing.assert_array_equal(ys[1, 2:], 0.0)
    keep = np.ones((B, T), bool)
    keep[0, 1] = False
    masked_final, _ = rx.scan(cell, params, xs, mask=jnp.asarray(keep))
    kept_final, _ = rx.scan(cell, params, xs[:1, keep[0]])
    chex.assert_trees_all_close(jax.tree.map(lambda s: s[:1], masked_final), kept_final, **TOL)
    resets = jnp.zeros((B, T), bool).at[:, 2].set(True)
    _, reset_ys = rx.scan(cell, params, xs, resets=resets)
    chex.assert_trees_all_close(reset_ys[:, 2:], rx.scan(cell, params, xs[:, 2:])[1], **TOL)
