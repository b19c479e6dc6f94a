"""Exact weight converters for :func:`recurrax.conv_lstm`: Flax linen's ``ConvLSTMCell`` and Keras 3's
``ConvLSTM1D/2D/3D``.

Flax's cell has two convolutions with a bias each (``ih``, ``hh``), gate order i, g, f, o, and adds 1 to the
forget gate in its forward pass; recurrax keeps one bias ``b = b_ih + b_hh`` with that 1 in its forget block
(``conv_lstm``'s default ``forget_bias=1.0`` at init), gate order i, f, g, o. Keras's weights are
``[kernel, recurrent_kernel, bias]`` in recurrax's gate order already. Neither library is imported here.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]


def _blocks(a: Any, order: tuple[int, int, int, int]) -> Any:
    """The four gate blocks of ``a``'s last axis, rearranged to ``order``."""
    parts = jnp.split(jnp.asarray(a), 4, axis=-1)
    return jnp.concatenate([parts[k] for k in order], axis=-1)


# Flax's (i, g, f, o) to recurrax's (i, f, g, o), and back: swapping blocks 1 and 2 is its own inverse.
_SWAP = (0, 2, 1, 3)


def from_flax_conv_lstm(variables: Any) -> Params:
    """recurrax ``conv_lstm`` params from a ``flax.linen.ConvLSTMCell``'s variables.

    Args:
      variables: ``{"params": {"ih": {"kernel", "bias"}, "hh": {...}}}`` (or the inner ``params`` dict); kernels
        ``(*kernel, C, 4F)`` and ``(*kernel, F, 4F)``. Without biases (``use_bias=False``) the forget gate's
        built-in 1 still needs a ``b``.

    Returns:
      ``{"w_i", "w_h", "b"}`` for a ``conv_lstm(F, kernel_size=...)`` with ``use_bias=True``.
    """
    tree = variables.get("params", variables) if isinstance(variables, dict) else None
    if not (isinstance(tree, dict) and {"ih", "hh"} <= set(tree)):
        raise ValueError(
            "from_flax_conv_lstm: `variables` must be a flax.linen.ConvLSTMCell's variables, with params 'ih' and "
            f"'hh', got {sorted(tree) if isinstance(tree, dict) else type(variables).__name__}."
        )
    ih, hh = tree["ih"], tree["hh"]
    w_i, w_h = jnp.asarray(ih["kernel"]), jnp.asarray(hh["kernel"])
    features = w_h.shape[-1] // 4
    if w_h.shape[-2] != features or w_i.shape[-1] != 4 * features:
        raise ValueError(
            f"from_flax_conv_lstm: the kernels must be (*kernel, C, 4F) and (*kernel, F, 4F), got {w_i.shape} and "
            f"{w_h.shape}."
        )
    bias = jnp.zeros((4 * features,), w_i.dtype)
    for conv in (ih, hh):
        if "bias" in conv:
            bias = bias + jnp.asarray(conv["bias"])
    b = _blocks(bias, _SWAP).at[features : 2 * features].add(1.0)
    return {"w_i": _blocks(w_i, _SWAP), "w_h": _blocks(w_h, _SWAP), "b": b}


def to_flax_conv_lstm(params: Params) -> dict[str, Any]:
    """A ``flax.linen.ConvLSTMCell(F, kernel_size, use_bias=True)``'s variables from ``conv_lstm`` params.

    The whole bias goes to ``ih`` (less the forget gate's built-in 1); ``hh``'s bias is zero. Params without
    ``b`` (``use_bias=False``) give ``ih`` a bias of -1 on the forget gate, so Flax's ``+ 1`` cancels.
    """
    w_i, w_h = jnp.asarray(params["w_i"]), jnp.asarray(params["w_h"])
    features = w_h.shape[-1] // 4
    b = jnp.asarray(params["b"]) if "b" in params else jnp.zeros((4 * features,), w_i.dtype)
    b = b.at[features : 2 * features].add(-1.0)
    return {
        "params": {
            "ih": {"kernel": _blocks(w_i, _SWAP), "bias": _blocks(b, _SWAP)},
            "hh": {"kernel": _blocks(w_h, _SWAP), "bias": jnp.zeros_like(b)},
        }
    }


def _keras_config_check(layer: Any) -> None:
    """Raises unless a Keras ConvLSTM layer (or cell) computes what ``conv_lstm``'s defaults do."""
    config = layer.get_config()
    want = {
        "padding": "same",
        "data_format": "channels_last",
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
    }
    for key, value in want.items():
        got = config.get(key, value)
        got = got.lower() if isinstance(got, str) else got
        if got != value:
            raise ValueError(f"from_keras_conv_lstm: the layer must have {key}={value!r}, got {got!r}.")
    for key in ("strides", "dilation_rate"):
        got = config.get(key, 1)
        if any(v != 1 for v in np.atleast_1d(got)):
            raise ValueError(f"from_keras_conv_lstm: the layer must have {key}=1, got {got!r}.")


def from_keras_conv_lstm(weights_or_layer: Any) -> Params:
    """recurrax ``conv_lstm`` params from a Keras ``ConvLSTM1D/2D/3D`` layer or its ``get_weights()``.

    A layer is also checked to be ``padding="same"``, channels-last, stride and dilation 1, with the tanh and
    sigmoid activations (otherwise give ``conv_lstm`` those activations and pass the weights list).

    Args:
      weights_or_layer: ``[kernel (*kernel, C, 4F), recurrent_kernel (*kernel, F, 4F)]`` plus ``bias (4F,)``
        with ``use_bias``, or the layer.

    Returns:
      ``{"w_i", "w_h"}`` and ``"b"`` when there is a bias; Keras's gate order i, f, c, o is recurrax's.
    """
    weights = weights_or_layer
    if hasattr(weights_or_layer, "get_weights"):
        _keras_config_check(weights_or_layer)
        weights = weights_or_layer.get_weights()
    if not isinstance(weights, (list, tuple)) or len(weights) not in (2, 3):
        raise ValueError(
            "from_keras_conv_lstm: `weights_or_layer` must be a Keras ConvLSTM layer or its get_weights() "
            f"([kernel, recurrent_kernel] and bias), got {type(weights).__name__} of length "
            f"{len(weights) if hasattr(weights, '__len__') else '?'}."
        )
    params = {"w_i": jnp.asarray(weights[0]), "w_h": jnp.asarray(weights[1])}
    if len(weights) == 3:
        params["b"] = jnp.asarray(weights[2])
    return params


def to_keras_conv_lstm(params: Params) -> list[np.ndarray]:
    """The ``set_weights`` list of a Keras ``ConvLSTM{n}D(F, kernel_size, padding="same")`` from ``conv_lstm``
    params: ``[kernel, recurrent_kernel]`` plus ``bias`` when the params have ``b``."""
    weights = [np.asarray(params["w_i"]), np.asarray(params["w_h"])]
    if "b" in params:
        weights.append(np.asarray(params["b"]))
    return weights
