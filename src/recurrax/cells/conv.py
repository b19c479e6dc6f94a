"""Convolutional recurrent cells: ConvLSTM (Shi et al., 2015) and ConvGRU (Ballas et al., 2016).

Inputs and states are channels-last feature maps: ``x: (*batch, *spatial, C)``, state leaves
``(*batch, *spatial, F)``, with 1, 2 or 3 spatial axes, stride 1 and ``"SAME"`` padding, so a state keeps its
input's spatial shape. ``project`` is the input convolution, run on a whole sequence at once; ``transition``
holds only the recurrent convolution.

The spatial axes count as batch axes for ``initial_state`` (``batch_shape = (*batch, *spatial)``, the shape of
``x`` without its channels). :func:`recurrax.scan` takes ``xs: (*batch, T, *spatial, C)`` (the peers' video layout)
or ``(T, *batch, *spatial, C)`` with ``time_major=True``; ``lengths``, ``mask`` and ``resets`` are given per
sequence (``(*batch,)``, ``(*batch, T)``) and hold at every position of its maps. :func:`flattened` gives the
same cell on vectors, for :mod:`recurrax.dynamics`, whose analyses take one example's state as vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from recurrax import init as _init
from recurrax.cells._common import check_activation, check_number, check_options, check_size
from recurrax.core import Cell, LSTMState, RNNState, State, Structure, constructor, make_cell, structure_of

Array = jax.Array

_SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _kernel_shape(name: str, kernel_size: Any, spatial_dims: Any) -> tuple[int, ...]:
    """``kernel_size`` as one positive int per spatial axis (their number given by a tuple or ``spatial_dims``)."""
    if spatial_dims is not None and (isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3)):
        raise ValueError(f"{name}: `spatial_dims` must be 1, 2 or 3, got {spatial_dims!r}.")
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        shape = tuple(kernel_size)
        if len(shape) not in (1, 2, 3) or (spatial_dims is not None and len(shape) != spatial_dims):
            want = f"{spatial_dims} ints (spatial_dims={spatial_dims})" if spatial_dims else "1, 2 or 3 ints"
            raise ValueError(f"{name}: `kernel_size` must have {want}, got {kernel_size!r}.")
    elif spatial_dims is None:
        raise ValueError(
            f"{name}: `kernel_size` {kernel_size!r} does not say how many spatial axes there are: give one size per "
            f"axis, e.g. (3, 3), or set `spatial_dims`."
        )
    else:
        shape = (kernel_size,) * spatial_dims
    for k in shape:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"{name}: `kernel_size` must hold positive ints, got {kernel_size!r}.")
    return shape


def _check_padding(name: str, padding: Any) -> None:
    # "VALID" would shrink the input's feature maps below the state's; strides and dilations are not offered.
    if not (isinstance(padding, str) and padding.upper() == "SAME"):
        raise ValueError(
            f"{name}: `padding` must be 'SAME' (the state keeps the input's spatial shape), got {padding!r}."
        )


def _conv(x: Array, w: Array, dtype: Any | None) -> Array:
    """Stride-1 ``"SAME"`` convolution: ``x: (..., *spatial, C)``, ``w: (*kernel, C, G)`` -> ``(..., *spatial, G)``.

    The leading axes are folded into one batch axis, so a whole sequence is one convolution.
    """
    n = w.ndim - 2
    lead, tail = x.shape[: x.ndim - n - 1], x.shape[x.ndim - n - 1 :]
    rows = x.reshape(-1, *tail)
    if dtype is None:
        y = jax.lax.conv_general_dilated(rows, w, (1,) * n, "SAME", dimension_numbers=_SPECS[n])
    else:
        y = jax.lax.conv_general_dilated(
            rows.astype(dtype),
            w.astype(dtype),
            (1,) * n,
            "SAME",
            dimension_numbers=_SPECS[n],
            preferred_element_type=jnp.promote_types(dtype, jnp.float32),
        )
    return y.reshape(*lead, *y.shape[1:])


def _check_maps(name: str, arg: str, x: Array, n: int, channels: str) -> None:
    if x.ndim < n + 1:
        raise ValueError(
            f"{name}: `{arg}` must have shape (..., {', '.join(['S'] * n)}, {channels}) ({n} spatial axes, "
            f"channels last), got {tuple(x.shape)}."
        )


def _kernels(initializer: Callable, key: Array, shape: tuple[int, ...], features: int, gates: int, dtype) -> Array:
    """``gates`` kernels of shape ``(*shape, features)``, initialised independently, side by side on the last axis."""
    keys = jax.random.split(key, gates)
    return jnp.concatenate([initializer(k, (*shape, features), dtype) for k in keys], axis=-1)


def _build(
    name: str,
    gates: int,
    features: int,
    kernel_size: Any,
    spatial_dims: Any,
    padding: Any,
    use_bias: bool,
    gate_activation: Callable,
    activation: Callable,
    init: str | _init.Scheme,
    param_dtype: Any,
    dtype: Any,
):
    """The checks and pieces both cells share: ``(kernel, n, init_fn, initial_state)``."""
    check_size(name, "features", features)
    kernel = _kernel_shape(name, kernel_size, spatial_dims)
    _check_padding(name, padding)
    check_options(name, param_dtype=param_dtype, dtype=dtype, use_bias=use_bias)
    check_activation(name, "gate_activation", gate_activation)
    check_activation(name, "activation", activation)
    # Fan-in of a convolution: every input channel of the kernel's window (the glorot/pytorch scales read it).
    scheme = _init.resolve(init, features * math.prod(kernel))
    F = features

    def init_fn(key, input_size: int):
        check_size(name, "input_size", input_size)
        k_i, k_h, k_b = jax.random.split(key, 3)
        params = {
            "w_i": _kernels(scheme.kernel, k_i, (*kernel, input_size), F, gates, param_dtype),
            "w_h": _kernels(scheme.recurrent, k_h, (*kernel, F), F, gates, param_dtype),
        }
        if use_bias:
            params["b"] = scheme.bias(k_b, (gates * F,), param_dtype)
        return params

    def initial_state_maps(params, batch_shape) -> Array:
        batch_shape = tuple(batch_shape)
        if len(batch_shape) < len(kernel):
            raise ValueError(
                f"{name}: `batch_shape` must end with the {len(kernel)} spatial axes of the feature maps, "
                f"(*batch, *spatial) (the input's shape without its channels), got {batch_shape}."
            )
        return jnp.zeros((*batch_shape, F), params["w_h"].dtype)

    return kernel, len(kernel), init_fn, initial_state_maps


def _check_step(name: str, h: Array, z: Array, n: int) -> None:
    """Trace-time check that the state's feature maps have the projected input's batch and spatial shape."""
    _check_maps(name, "state.h", h, n, "F")
    if h.shape[:-1] != z.shape[:-1]:
        raise ValueError(
            f"{name}: `state.h` must have the batch and spatial shape of the input, {tuple(z.shape[:-1])} "
            f"(+ features {h.shape[-1]}), got {tuple(h.shape)}."
        )


@constructor
def conv_lstm(
    features: int,
    *,
    kernel_size: int | Sequence[int],
    spatial_dims: int | None = None,
    padding: str = "SAME",
    forget_bias: float = 1.0,
    use_bias: bool = True,
    gate_activation: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    init: str | _init.Scheme = "glorot_orthogonal",
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""A convolutional LSTM cell (Shi et al., 2015, without peepholes); state ``LSTMState(h, c)``, gates i, f, g, o.

    .. math::
        i, f, g, o = \sigma(z_i + W_{hi} * h),\ \sigma(z_f + W_{hf} * h),\ \tanh(z_g + W_{hg} * h),\
                     \sigma(z_o + W_{ho} * h), \qquad z = W_i * x + b \\
        c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh(c')

    where ``*`` is a stride-1 ``"SAME"`` convolution over the spatial axes (channels last, as Keras's
    ``ConvLSTM2D`` and Flax's ``ConvLSTMCell``).

    Shapes: ``x: (*batch, *spatial, C)``; ``h, c: (*batch, *spatial, F)``; ``initial_state(params, batch_shape)``
    takes ``batch_shape = (*batch, *spatial)``. Params: ``w_i: (*kernel, C, 4F)``, ``w_h: (*kernel, F, 4F)``
    (HWIO kernels, gate blocks side by side), ``b: (4F,)``. ``init(key, input_size)`` takes ``C``.

    Args:
      features: ``F``, the channels of ``h`` and ``c``.
      kernel_size: the kernel's size per spatial axis (``(3, 3)``), or one int with ``spatial_dims``.
      spatial_dims: the number of spatial axes, 1, 2 or 3 (default: ``len(kernel_size)``).
      padding: ``"SAME"``, the only padding that keeps the state's spatial shape equal to the input's.
      forget_bias: added to the forget-gate bias at init (1.0: Flax's hard-coded ``f + 1`` and Keras's
        ``unit_forget_bias``), so converted weights compute what they did.
      use_bias: whether ``b`` exists.
      gate_activation: the σ of ``i``, ``f`` and ``o``.
      activation: the tanh of ``g`` and of ``c'``.
      init: an :mod:`recurrax.init` scheme, applied per gate kernel (default Keras's: Glorot-uniform input
        kernels, orthogonal recurrent ones, zero bias).
      param_dtype: dtype of the params and the state.
      dtype: compute dtype of the convolutions, accumulated in float32.

    Returns:
      A :class:`recurrax.Cell`; :func:`recurrax.scan` takes ``xs: (*batch, T, *spatial, C)`` (or time-major).
    """
    name = "conv_lstm"
    check_number(name, "forget_bias", forget_bias)
    options = (kernel_size, spatial_dims, padding, use_bias, gate_activation, activation, init, param_dtype, dtype)
    _, n, init_shared, maps = _build(name, 4, features, *options)
    F = features

    def init_fn(key, input_size: int):
        params = init_shared(key, input_size)
        if use_bias:
            params["b"] = params["b"].at[F : 2 * F].add(forget_bias)
        return params

    def initial_state(params, batch_shape):
        h = maps(params, batch_shape)
        return LSTMState(h=h, c=h)

    def project(params, x):
        _check_maps(name, "x", x, n, "C")
        z = _conv(x, params["w_i"], dtype)
        return z + params["b"] if use_bias else z

    def transition(params, state, z):
        h, c = state
        _check_step(name, h, z, n)
        i, f, g, o = jnp.split(z + _conv(h, params["w_h"], dtype), 4, axis=-1)
        c_new = gate_activation(f) * c + gate_activation(i) * activation(g)
        h_new = gate_activation(o) * activation(c_new)
        return LSTMState(h=h_new.astype(h.dtype), c=c_new.astype(c.dtype))

    return make_cell(
        name,
        init=init_fn,
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["w_i"].shape[-2],
        # No kind: no sequence-level kernel runs a convolution, so `sequential` runs it.
        structure=Structure(None, gates=4, feature_axes=n + 1),
    )


@constructor
def conv_gru(
    features: int,
    *,
    kernel_size: int | Sequence[int],
    spatial_dims: int | None = None,
    padding: str = "SAME",
    use_bias: bool = True,
    gate_activation: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    init: str | _init.Scheme = "glorot_orthogonal",
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""A convolutional GRU cell (Ballas et al., 2016); state ``RNNState(h)``, gate order r, z, n.

    .. math::
        r = \sigma(z_r + U_r * h), \quad u = \sigma(z_z + U_z * h), \quad n = \tanh(z_n + U_n * (r \odot h)) \\
        h' = (1 - u) \odot n + u \odot h, \qquad z = W * x + b

    with ``*`` a stride-1 ``"SAME"`` convolution. The reset gate acts before the candidate's convolution, as in
    Ballas et al.; ``u`` weighs the old state, as in :func:`recurrax.gru` and PyTorch (Ballas et al. write
    ``h' = (1 - u) h + u n``: the same cell with ``u -> 1 - u``).

    Shapes: ``x: (*batch, *spatial, C)``; ``h: (*batch, *spatial, F)``; ``initial_state(params, batch_shape)``
    takes ``batch_shape = (*batch, *spatial)``. Params: ``w_i: (*kernel, C, 3F)``, ``w_h: (*kernel, F, 3F)``,
    ``b: (3F,)``.

    Args:
      features: ``F``.
      kernel_size: the kernel's size per spatial axis, or one int with ``spatial_dims``.
      spatial_dims: the number of spatial axes, 1, 2 or 3 (default: ``len(kernel_size)``).
      padding: ``"SAME"`` only (see :func:`conv_lstm`).
      use_bias: whether ``b`` exists.
      gate_activation: the σ of ``r`` and ``u``.
      activation: the tanh of ``n``.
      init: an :mod:`recurrax.init` scheme, applied per gate kernel.
      param_dtype: dtype of the params and the state.
      dtype: compute dtype of the convolutions, accumulated in float32.

    Returns:
      A :class:`recurrax.Cell`; :func:`recurrax.scan` takes ``xs: (*batch, T, *spatial, C)`` (or time-major).
    """
    name = "conv_gru"
    options = (kernel_size, spatial_dims, padding, use_bias, gate_activation, activation, init, param_dtype, dtype)
    _, n, init_fn, maps = _build(name, 3, features, *options)
    F = features

    def initial_state(params, batch_shape):
        return RNNState(h=maps(params, batch_shape))

    def project(params, x):
        _check_maps(name, "x", x, n, "C")
        z = _conv(x, params["w_i"], dtype)
        return z + params["b"] if use_bias else z

    def transition(params, state, z):
        h = state.h
        _check_step(name, h, z, n)
        z_r, z_z, z_n = jnp.split(z, 3, axis=-1)
        h_r, h_z = jnp.split(_conv(h, params["w_h"][..., : 2 * F], dtype), 2, axis=-1)
        r = gate_activation(z_r + h_r)
        u = gate_activation(z_z + h_z)
        n_ = activation(z_n + _conv(r * h, params["w_h"][..., 2 * F :], dtype))
        h_new = (1.0 - u) * n_ + u * h
        return RNNState(h=h_new.astype(h.dtype))

    return make_cell(
        name,
        init=init_fn,
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["w_i"].shape[-2],
        structure=Structure(None, gates=3, feature_axes=n + 1),
    )


def flattened(cell: Cell, spatial_shape: Sequence[int]) -> Cell:
    """``cell`` (a convolutional cell) on vectors: ``x: (*batch, S*C)`` and state leaves ``(*batch, S*F)``.

    ``S = prod(spatial_shape)``; each vector is a feature map ``(*spatial_shape, channels)`` in C order. This is
    the form :mod:`recurrax.dynamics` analyses take (one example's state as vectors), e.g.
    ``dynamics.step_jacobian(flattened(cell, (6, 6)), params, state, x)``; params are the cell's own.

    Args:
      cell: a cell from :func:`conv_lstm` or :func:`conv_gru`.
      spatial_shape: the feature maps' spatial shape, one int per spatial axis.

    Returns:
      A :class:`recurrax.Cell` computing what ``cell`` does on the maps.
    """
    name = f"flattened[{cell.name}]"
    structure = structure_of(cell) or cell.structure
    n = 0 if structure is None else structure.feature_axes - 1
    spatial = tuple(spatial_shape) if isinstance(spatial_shape, Sequence) else spatial_shape
    if (
        n < 1
        or not isinstance(spatial, tuple)
        or len(spatial) != n
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in spatial)
    ):
        raise ValueError(
            f"{name}: `spatial_shape` must be {n} positive ints for a cell with {n} spatial axes "
            f"(a conv_lstm or conv_gru), got {spatial_shape!r}."
        )
    size = math.prod(spatial)

    def maps(v: Array) -> Array:
        return v.reshape(*v.shape[:-1], *spatial, v.shape[-1] // size)

    def vectors(m: Array) -> Array:
        return m.reshape(*m.shape[: m.ndim - n - 1], -1)

    def initial_state(params, batch_shape) -> State:
        return jax.tree.map(vectors, cell.initial_state(params, (*tuple(batch_shape), *spatial)))

    def project(params, x):
        if x.shape[-1] % size:
            raise ValueError(f"{name}: `x` must have shape (..., {size} * C), got {tuple(x.shape)}.")
        return vectors(cell.project(params, maps(x)))

    def transition(params, state, z):
        return jax.tree.map(vectors, cell.transition(params, jax.tree.map(maps, state), maps(z)))

    return make_cell(
        name,
        init=lambda key, input_size: cell.init(key, input_size // size),
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["w_i"].shape[-2] * size,
        output=lambda state: state.h,
    )
