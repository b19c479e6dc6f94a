"""Exact weight conversion to and from Keras 3 ``LSTM`` and ``GRU`` layers, as NumPy arrays.

No Keras install is needed: pass ``layer.get_weights()`` (a list ``[kernel, recurrent_kernel,
bias]``) or a mapping with those keys. Keras computes ``x @ kernel + h @ recurrent_kernel + bias``
with gate blocks side by side, like recurrax, so only the GRU's gate order needs a shuffle:

  * LSTM: Keras ``i, f, c, o`` = recurrax ``i, f, g, o``; ``kernel (I, 4H)``, ``recurrent_kernel
    (H, 4H)``, ``bias (4H,)``. ``unit_forget_bias`` only changes the initial bias, which is in
    the weights.
  * GRU: Keras ``z, r, h`` -> recurrax ``r, z, n``; ``h' = z h + (1 - z) hh`` is recurrax's
    ``h' = (1 - u) n + u h`` with ``u = z``. With ``reset_after=True`` (the default) ``bias`` is
    ``(2, 3H)``: row 0 the input bias, row 1 the recurrent bias, whose candidate block is recurrax's
    ``b_hn``. With ``reset_after=False`` ``bias`` is ``(3H,)``.

Only ``activation="tanh"`` and ``recurrent_activation="sigmoid"`` (Keras 3's defaults) have a
recurrax cell; anything else raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.core import Cell, Params

_NAMES = ("kernel", "recurrent_kernel", "bias")
Weights = Sequence[Any] | Mapping[str, Any]


def from_keras_lstm(
    weights: Weights,
    *,
    use_bias: bool = True,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
) -> tuple[Cell, Params]:
    """Converts a Keras 3 ``LSTM``'s weights.

    Args:
      weights: ``[kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)]`` (no bias when
        ``use_bias=False``), or a mapping with these keys.
      use_bias, activation, recurrent_activation: the layer's options of the same names.

    Returns:
      ``(recurrax.lstm(H, forget_bias=0), params)``; the state order is Keras's ``[h, c]``.
    """
    _check_activations("from_keras_lstm", activation, recurrent_activation)
    kernel, recurrent, bias = _unpack("from_keras_lstm", weights, use_bias)
    hidden = _hidden_size("from_keras_lstm", kernel, recurrent, 4)
    params = {"w_i": kernel, "w_h": recurrent}
    if use_bias:
        params["b"] = _check_shape("from_keras_lstm", "bias", bias, (4 * hidden,))
    cell = lstm(hidden, forget_bias=0.0, use_bias=use_bias, param_dtype=kernel.dtype)
    return cell, {k: jnp.asarray(v) for k, v in params.items()}


def to_keras_lstm(params: Params) -> list[np.ndarray]:
    """Converts ``recurrax.lstm`` params (no peepholes, projection or layer norm) to Keras's weight list."""
    _check_keys("to_keras_lstm", params, {"w_i", "w_h", "b"})
    weights = [np.asarray(params["w_i"]), np.asarray(params["w_h"])]
    return [*weights, np.asarray(params["b"])] if "b" in params else weights


def from_keras_gru(
    weights: Weights,
    *,
    reset_after: bool = True,
    use_bias: bool = True,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
) -> tuple[Cell, Params]:
    """Converts a Keras 3 ``GRU``'s weights.

    Args:
      weights: ``[kernel (I, 3H), recurrent_kernel (H, 3H), bias]`` with ``bias (2, 3H)`` when
        ``reset_after`` else ``(3H,)`` (no bias when ``use_bias=False``), or a mapping.
      reset_after, use_bias, activation, recurrent_activation: the layer's options.

    Returns:
      ``(recurrax.gru(H, reset_after=reset_after), params)``.
    """
    fn = "from_keras_gru"
    _check_activations(fn, activation, recurrent_activation)
    kernel, recurrent, bias = _unpack(fn, weights, use_bias)
    hidden = _hidden_size(fn, kernel, recurrent, 3)
    params = {"w_i": _zrh_to_rzn(kernel), "w_h": _zrh_to_rzn(recurrent)}
    if use_bias and reset_after:
        input_bias, recurrent_bias = _check_shape(fn, "bias", bias, (2, 3 * hidden))
        # The reset gate multiplies the recurrent candidate bias, so only the r and z parts add up.
        params["b"] = _zrh_to_rzn(input_bias) + np.concatenate(
            [_zrh_to_rzn(recurrent_bias)[: 2 * hidden], np.zeros(hidden, bias.dtype)]
        )
        params["b_hn"] = recurrent_bias[2 * hidden :]
    elif use_bias:
        params["b"] = _zrh_to_rzn(_check_shape(fn, "bias", bias, (3 * hidden,)))
    cell = gru(hidden, reset_after=reset_after, use_bias=use_bias, param_dtype=kernel.dtype)
    return cell, {k: jnp.asarray(v) for k, v in params.items()}


def to_keras_gru(params: Params, *, reset_after: bool = True) -> list[np.ndarray]:
    """Converts ``recurrax.gru`` params to Keras's weight list (the r/z bias goes to the input row)."""
    fn = "to_keras_gru"
    _check_keys(fn, params, {"w_i", "w_h", "b", "b_hn"})
    if "b" in params and reset_after != ("b_hn" in params):
        raise ValueError(
            f"{fn}: `reset_after={reset_after}` but the params {'have' if 'b_hn' in params else 'lack'} `b_hn`; "
            "rx.gru(reset_after=True) params carry `b_hn`, reset_after=False ones do not."
        )
    weights = [_rzn_to_zrh(params["w_i"]), _rzn_to_zrh(params["w_h"])]
    if "b" not in params:
        return weights
    b = _rzn_to_zrh(params["b"])
    if not reset_after:
        return [*weights, b]
    recurrent_bias = np.concatenate([np.zeros_like(b[: 2 * len(b) // 3]), np.asarray(params["b_hn"])])
    return [*weights, np.stack([b, recurrent_bias])]


def _zrh_to_rzn(w: np.ndarray) -> np.ndarray:
    z, r, h = np.split(np.asarray(w), 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def _rzn_to_zrh(w: Any) -> np.ndarray:
    r, z, n = np.split(np.asarray(w), 3, axis=-1)
    return np.concatenate([z, r, n], axis=-1)


def _check_activations(fn: str, activation: str, recurrent_activation: str) -> None:
    for option, value, supported in (
        ("activation", activation, "tanh"),
        ("recurrent_activation", recurrent_activation, "sigmoid"),
    ):
        if value != supported:
            raise ValueError(f"{fn}: `{option}={value!r}` is not supported; recurrax computes with {supported!r}.")


def _unpack(fn: str, weights: Weights, use_bias: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(kernel, recurrent_kernel, bias or None)`` from a weight list or mapping."""
    names = _NAMES if use_bias else _NAMES[:2]
    if isinstance(weights, Mapping):
        missing = [n for n in names if n not in weights]
        extra = sorted(set(weights) - set(names))
        if missing or extra:
            what = f"missing `{missing[0]}`" if missing else f"unexpected `{extra[0]}`"
            raise ValueError(
                f"{fn}: {what} (use_bias={use_bias}); expected the keys {list(names)}, got {sorted(weights)}."
            )
        arrays = [weights[n] for n in names]
    else:
        arrays = list(weights)
        if len(arrays) != len(names):
            what = f"missing `{names[len(arrays)]}`" if len(arrays) < len(names) else "more arrays than expected"
            raise ValueError(
                f"{fn}: {what}: expected {len(names)} arrays {list(names)} (use_bias={use_bias}), got {len(arrays)}."
            )
    arrays = [np.asarray(a) for a in arrays]
    for name, array in zip(names, arrays):
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{fn}: `{name}` must be a floating-point array, got dtype {array.dtype}.")
    return arrays[0], arrays[1], (arrays[2] if use_bias else None)


def _hidden_size(fn: str, kernel: np.ndarray, recurrent: np.ndarray, gates: int) -> int:
    if recurrent.ndim != 2 or recurrent.shape[1] != gates * recurrent.shape[0]:
        raise ValueError(f"{fn}: `recurrent_kernel` must have shape (H, {gates}*H), got {recurrent.shape}.")
    hidden = recurrent.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != gates * hidden:
        raise ValueError(f"{fn}: `kernel` must have shape (I, {gates * hidden}) (H={hidden}), got {kernel.shape}.")
    return hidden


def _check_shape(fn: str, name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape != shape:
        raise ValueError(f"{fn}: `{name}` must have shape {shape}, got {array.shape}.")
    return array


def _check_keys(fn: str, params: Params, allowed: set[str]) -> None:
    for key in ("w_i", "w_h"):
        if key not in params:
            raise ValueError(f"{fn}: the params lack `{key}`.")
    extra = sorted(set(params) - allowed)
    if extra:
        raise ValueError(f"{fn}: Keras has no equivalent of `{extra[0]}` (params with keys {sorted(params)}).")
