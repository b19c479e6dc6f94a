"""Exact conversion to and from Keras 3 ``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` layers.

Two levels: :func:`from_keras` / :func:`to_keras` take and build whole Keras layers (options read from the
layer's config; ``to_keras`` imports Keras, with the backend the user configured), and the weight-list
functions need no Keras install: pass ``layer.get_weights()`` (a list ``[kernel, recurrent_kernel, bias]``)
or a mapping with those keys (the ``from_keras_*`` ones also accept the layer object itself). Keras computes
``x @ kernel + h @ recurrent_kernel + bias`` with gate blocks side by side, like recurrax, so only the GRU's
gate order needs a shuffle:

  * LSTM: Keras ``i, f, c, o`` = recurrax ``i, f, g, o``; ``kernel (I, 4H)``, ``recurrent_kernel
    (H, 4H)``, ``bias (4H,)``. ``unit_forget_bias`` only changes the initial bias, which is in
    the weights.
  * GRU: Keras ``z, r, h`` -> recurrax ``r, z, n``; ``h' = z h + (1 - z) hh`` is recurrax's
    ``h' = (1 - u) n + u h`` with ``u = z``. With ``reset_after=True`` (the default) ``bias`` is
    ``(2, 3H)``: row 0 the input bias, row 1 the recurrent bias, whose candidate block is recurrax's
    ``b_hn``. With ``reset_after=False`` ``bias`` is ``(3H,)``.
  * SimpleRNN: ``h' = activation(x @ kernel + h @ recurrent_kernel + bias)`` is ``recurrax.elman`` with the
    same activation (the names in :data:`ACTIVATIONS`).
  * Bidirectional: ``get_weights()`` is the forward layer's list then the backward one's; the backward layer
    runs reversed (``go_backwards``) and its outputs are flipped back before the merge, which is
    ``recurrax.bidirectional`` with the same ``merge`` (``merge_mode=None``: ``merge=None``, the two directions'
    outputs as a pair).

The LSTM and GRU convert with any ``activation`` and ``recurrent_activation`` of :data:`ACTIVATIONS` (as the
cells' ``activation`` and ``gate_activation``); only Keras's defaults, ``"tanh"`` and ``"sigmoid"``, run on the
sequence-level backends. A layer with ``dropout`` or ``recurrent_dropout`` converts to
``recurrax.as_layer(cell, dropout=RecurrentDropout(input=..., recurrent=...))`` (variational masks, one per
sequence, drawn from the ``key`` of ``apply``; none without it, as Keras in inference), and back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.cells.elman import elman
from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.core import Cell, Params, built_with
from recurrax.dropout import RecurrentDropout
from recurrax.interop._cells import single_cell
from recurrax.layers import MERGES, Layer, as_layer, bidirectional

_NAMES = ("kernel", "recurrent_kernel", "bias")
Weights = Sequence[Any] | Mapping[str, Any]


def linear(a: jax.Array) -> jax.Array:
    """Keras's ``"linear"`` activation (the identity), one function so the cells it builds compare equal."""
    return a


# Keras activation names and the JAX functions computing the same (checked against Keras in the tests).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "linear": linear,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "silu": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # Keras's default is the exact gelu
    "hard_sigmoid": jax.nn.hard_sigmoid,
}
_ACTIVATION_NAMES = {id(fn): name for name, fn in ACTIVATIONS.items()}
_KERAS_LAYERS = ("LSTM", "GRU", "SimpleRNN", "Bidirectional")
# The Keras layer options that to_keras reads off the recurrax cell.
_DECIDED_BY_CELL = {
    "units",
    "use_bias",
    "activation",
    "recurrent_activation",
    "reset_after",
    "go_backwards",
    "merge_mode",
}


def from_keras_lstm(
    weights: Weights | Any,
    *,
    use_bias: bool | None = None,
    activation: str | None = None,
    recurrent_activation: str | None = None,
) -> tuple[Cell, Params]:
    """Converts a Keras 3 ``LSTM``'s weights (or the layer itself).

    Args:
      weights: ``[kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)]`` (no bias when
        ``use_bias=False``), a mapping with these keys, or a built ``keras.layers.LSTM``.
      use_bias, activation, recurrent_activation: the layer's options of the same names (Keras's defaults
        when not given; read from the layer when one is passed).

    Returns:
      ``(recurrax.lstm(H, forget_bias=0), params)``; the state order is Keras's ``[h, c]``.
    """
    fn = "from_keras_lstm"
    weights, options = _weights_and_options(
        fn, "LSTM", weights, use_bias=use_bias, activation=activation, recurrent_activation=recurrent_activation
    )
    activations = _activations(fn, options["activation"], options["recurrent_activation"])
    use_bias = options["use_bias"]
    kernel, recurrent, bias = _unpack(fn, weights, use_bias)
    hidden = _hidden_size(fn, kernel, recurrent, 4)
    params = {"w_i": kernel, "w_h": recurrent}
    if use_bias:
        params["b"] = _check_shape(fn, "bias", bias, (4 * hidden,))
    cell = lstm(hidden, forget_bias=0.0, use_bias=use_bias, param_dtype=kernel.dtype, **activations)
    return cell, {k: jnp.asarray(v) for k, v in params.items()}


def to_keras_lstm(params: Params) -> list[np.ndarray]:
    """Converts ``recurrax.lstm`` params (no peepholes, projection or layer norm) to Keras's weight list."""
    _check_keys("to_keras_lstm", params, {"w_i", "w_h", "b"})
    weights = [np.asarray(params["w_i"]), np.asarray(params["w_h"])]
    return [*weights, np.asarray(params["b"])] if "b" in params else weights


def from_keras_gru(
    weights: Weights | Any,
    *,
    reset_after: bool | None = None,
    use_bias: bool | None = None,
    activation: str | None = None,
    recurrent_activation: str | None = None,
) -> tuple[Cell, Params]:
    """Converts a Keras 3 ``GRU``'s weights (or the layer itself).

    Args:
      weights: ``[kernel (I, 3H), recurrent_kernel (H, 3H), bias]`` with ``bias (2, 3H)`` when
        ``reset_after`` else ``(3H,)`` (no bias when ``use_bias=False``), a mapping, or a built
        ``keras.layers.GRU``.
      reset_after, use_bias, activation, recurrent_activation: the layer's options (Keras's defaults when not
        given; read from the layer when one is passed).

    Returns:
      ``(recurrax.gru(H, reset_after=reset_after), params)``.
    """
    fn = "from_keras_gru"
    weights, options = _weights_and_options(
        fn,
        "GRU",
        weights,
        reset_after=reset_after,
        use_bias=use_bias,
        activation=activation,
        recurrent_activation=recurrent_activation,
    )
    activations = _activations(fn, options["activation"], options["recurrent_activation"])
    use_bias, reset_after = options["use_bias"], options["reset_after"]
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
    cell = gru(hidden, reset_after=reset_after, use_bias=use_bias, param_dtype=kernel.dtype, **activations)
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


def from_keras_simple_rnn(
    weights: Weights | Any, *, use_bias: bool | None = None, activation: str | None = None
) -> tuple[Cell, Params]:
    """Converts a Keras 3 ``SimpleRNN``'s weights (or the layer itself).

    Args:
      weights: ``[kernel (I, H), recurrent_kernel (H, H), bias (H,)]`` (no bias when ``use_bias=False``), a
        mapping, or a built ``keras.layers.SimpleRNN``.
      use_bias, activation: the layer's options (``activation`` one of :data:`ACTIVATIONS`; ``"tanh"`` when not
        given).

    Returns:
      ``(recurrax.elman(H, activation=...), params)``.
    """
    fn = "from_keras_simple_rnn"
    weights, options = _weights_and_options(fn, "SimpleRNN", weights, use_bias=use_bias, activation=activation)
    use_bias, name = options["use_bias"], options["activation"]
    if name not in ACTIVATIONS:
        raise ValueError(
            f"{fn}: `activation={name!r}` has no recurrax equivalent here; supported: {sorted(ACTIVATIONS)}."
        )
    kernel, recurrent, bias = _unpack(fn, weights, use_bias)
    hidden = _hidden_size(fn, kernel, recurrent, 1)
    params = {"w_i": kernel, "w_h": recurrent}
    if use_bias:
        params["b"] = _check_shape(fn, "bias", bias, (hidden,))
    cell = elman(hidden, activation=ACTIVATIONS[name], use_bias=use_bias, param_dtype=kernel.dtype)
    return cell, {k: jnp.asarray(v) for k, v in params.items()}


def to_keras_simple_rnn(params: Params) -> list[np.ndarray]:
    """Converts ``recurrax.elman`` params (no residual) to Keras's ``SimpleRNN`` weight list."""
    _check_keys("to_keras_simple_rnn", params, {"w_i", "w_h", "b"})
    return [np.asarray(params[k]) for k in ("w_i", "w_h", "b") if k in params]


_FROM_WEIGHTS = {"LSTM": from_keras_lstm, "GRU": from_keras_gru, "SimpleRNN": from_keras_simple_rnn}


def from_keras_bidirectional(
    weights: Sequence[Any], layer: str, *, merge_mode: str | None = "concat", **options: Any
) -> tuple[Layer, Params]:
    """Converts a Keras 3 ``Bidirectional``'s weight list (the forward layer's arrays, then the backward one's).

    Args:
      weights: ``bidirectional.get_weights()``.
      layer: the wrapped layer's class name, ``"LSTM"``, ``"GRU"`` or ``"SimpleRNN"``.
      merge_mode: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` (Keras's names, recurrax's too) or ``None`` (the
        directions' outputs as a pair).
      **options: the wrapped layer's options, as for :func:`from_keras_lstm` and the others.

    Returns:
      ``(recurrax.bidirectional(cell, cell, merge=merge_mode), {"forward": ..., "backward": ...})``.
    """
    fn = "from_keras_bidirectional"
    if layer not in _FROM_WEIGHTS:
        raise ValueError(f"{fn}: `layer` must be one of {sorted(_FROM_WEIGHTS)}, got {layer!r}.")
    _check_merge(fn, merge_mode)
    arrays = list(weights)
    if not arrays or len(arrays) % 2:
        raise ValueError(
            f"{fn}: `weights` must hold the forward layer's arrays then as many for the backward layer, got "
            f"{len(arrays)} array(s)."
        )
    half = len(arrays) // 2
    forward, p_f = _FROM_WEIGHTS[layer](arrays[:half], **options)
    backward, p_b = _FROM_WEIGHTS[layer](arrays[half:], **options)
    return bidirectional(forward, backward, merge=merge_mode), {"forward": p_f, "backward": p_b}


def to_keras_bidirectional(params: Params, *, reset_after: bool = True) -> list[np.ndarray]:
    """Converts the params of ``recurrax.bidirectional`` over two LSTMs, GRUs or Elman cells to a Keras
    ``Bidirectional``'s weight list (forward then backward); the cell kind is read off ``w_h``'s shape."""
    fn = "to_keras_bidirectional"
    if not (isinstance(params, Mapping) and set(params) == {"forward", "backward"}):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{fn}: `params` must be a dict with keys ['backward', 'forward'], got {got}.")
    out = []
    for direction in ("forward", "backward"):
        p = params[direction]
        w_h = np.asarray(p.get("w_h")) if isinstance(p, Mapping) else None
        gates = w_h.shape[1] // w_h.shape[0] if w_h is not None and w_h.ndim == 2 and w_h.shape[0] else None
        if gates == 4:
            out += to_keras_lstm(p)
        elif gates == 3:
            out += to_keras_gru(p, reset_after=reset_after)
        elif gates == 1:
            out += to_keras_simple_rnn(p)
        else:
            raise ValueError(
                f"{fn}: `params['{direction}']` must be the params of an lstm, gru or elman cell (`w_h` of shape "
                f"(H, 4H), (H, 3H) or (H, H)), got {None if w_h is None else w_h.shape}."
            )
    return out


def from_keras(layer: Any) -> tuple[Cell | Layer, Params]:
    """Converts a built Keras 3 ``LSTM``, ``GRU``, ``SimpleRNN`` or ``Bidirectional`` of one of them.

    The options are read from the layer (``layer.get_config()``), the weights from ``layer.get_weights()``.

    Returns:
      ``(cell, params)`` for a single layer (``rx.scan(cell, params, xs)`` computes ``layer(xs)`` with
      ``return_sequences=True``), ``(recurrax.as_layer(cell, dropout=...), params)`` for one with ``dropout`` or
      ``recurrent_dropout``, ``(recurrax.bidirectional(...), params)`` for a ``Bidirectional``.
    """
    fn = "from_keras"
    kind = _keras_class(fn, layer)
    if kind is None:
        raise TypeError(
            f"from_keras: expected a Keras layer, one of {list(_KERAS_LAYERS)}; got {type(layer).__name__}."
        )
    if kind != "Bidirectional":
        return _from_layer(fn, layer, backwards=False)
    merge = layer.merge_mode
    _check_merge(fn, merge)
    forward, p_f = _from_layer(fn, layer.forward_layer, backwards=False)
    backward, p_b = _from_layer(fn, layer.backward_layer, backwards=True)
    return bidirectional(forward, backward, merge=merge), {"forward": p_f, "backward": p_b}


def to_keras(cell_or_layer: Cell | Layer, params: Params, *, input_size: int | None = None, **options: Any) -> Any:
    """Builds the Keras 3 layer computing what ``cell_or_layer`` computes, with its weights set.

    Args:
      cell_or_layer: a ``recurrax.lstm`` (no peepholes, projection, layer norm, cell clip or compute dtype),
        ``recurrax.gru``, ``recurrax.elman`` (an activation of :data:`ACTIVATIONS`, no residual), ``as_layer``
        of one, or ``recurrax.bidirectional`` of two alike.
      params: its params.
      input_size: ``I``, read from ``params`` when not given.
      **options: passed to the Keras layer (``return_state``, ``name``, ...); ``return_sequences`` defaults to
        ``True`` as ``rx.scan`` returns every step. The options the cell decides (``units``, ``use_bias``,
        ``activation``, ``recurrent_activation``, ``reset_after``, ``go_backwards``, ``merge_mode``) are refused.

    Returns:
      A built ``keras.layers.LSTM``, ``GRU``, ``SimpleRNN`` or ``Bidirectional``; it imports Keras, which runs
      on the backend the user configured (``KERAS_BACKEND``).
    """
    fn = "to_keras"
    decided = sorted(set(options) & _DECIDED_BY_CELL)
    if decided:
        raise ValueError(f"to_keras: `{decided[0]}` is decided by the recurrax cell and cannot be passed.")
    import keras

    options = {"return_sequences": True, **options}
    if isinstance(cell_or_layer, Layer):
        built = built_with(cell_or_layer)
        kind = None if built is None else built[0]
        if kind == "_cell_layer":
            options = {**options, **_keras_dropout(fn, cell_or_layer)}
            return to_keras(built[1]["cell"], params, input_size=input_size, **options)
        if kind != "bidirectional":
            raise ValueError(
                f"to_keras: Keras has no layer for {cell_or_layer.name!r}; it converts cells and "
                "recurrax.bidirectional layers (convert a stack layer by layer, into a keras.Sequential)."
            )
        merge = built[1]["merge"]
        if not (merge is None or isinstance(merge, str)):
            raise ValueError(f"to_keras: Keras merges with one of {sorted(MERGES)} or None, got `merge={merge!r}`.")
        if not (isinstance(params, Mapping) and set(params) == {"forward", "backward"}):
            got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise ValueError(f"to_keras: `params` must be a dict with keys ['backward', 'forward'], got {got}.")
        directions = {}
        for direction in ("forward", "backward"):
            cell = single_cell(built[1][direction])
            if cell is None:
                raise ValueError(
                    f"{fn}: the {direction} direction is a layer ({built[1][direction].name}); Keras wraps one cell "
                    "each way."
                )
            own = {**options, **_keras_dropout(fn, built[1][direction])}
            directions[direction] = _keras_rnn(
                keras, cell, params[direction], own, go_backwards=direction == "backward", where=direction
            )
        (f_layer, f_weights, size), (b_layer, b_weights, _) = directions["forward"], directions["backward"]
        if type(f_layer) is not type(b_layer):
            raise ValueError(
                f"to_keras: a Keras Bidirectional wraps two layers of one kind, got {type(f_layer).__name__} "
                f"(forward) and {type(b_layer).__name__} (backward)."
            )
        out = keras.layers.Bidirectional(f_layer, backward_layer=b_layer, merge_mode=merge)
        weights = f_weights + b_weights
    elif isinstance(cell_or_layer, Cell):
        out, weights, size = _keras_rnn(keras, cell_or_layer, params, options, go_backwards=False, where=None)
    else:
        raise TypeError(
            f"to_keras: `cell_or_layer` must be a recurrax.Cell or Layer, got {type(cell_or_layer).__name__}."
        )
    out.build((None, None, size if input_size is None else input_size))
    out.set_weights(weights)
    return out


def _keras_class(fn: str, obj: Any) -> str | None:
    """The class name of a Keras recurrent layer, ``None`` for anything not from Keras; raises for other layers."""
    cls = type(obj)
    if not cls.__module__.startswith("keras.") or not hasattr(obj, "get_weights"):
        return None
    if cls.__name__ not in _KERAS_LAYERS:
        raise TypeError(f"{fn}: Keras's {cls.__name__} has no recurrax equivalent; converted: {list(_KERAS_LAYERS)}.")
    return cls.__name__


def _weights_and_options(fn: str, kind: str, weights: Any, **given: Any) -> tuple[Any, dict[str, Any]]:
    """The weights and options of a weight list (Keras's defaults for options not given) or of a Keras layer
    (its config; an option given must agree with it)."""
    defaults = {"use_bias": True, "activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": True}
    received = _keras_class(fn, weights)
    if received is None:
        return weights, {k: defaults[k] if v is None else v for k, v in given.items()}
    if received != kind:
        raise TypeError(f"{fn}: expected a keras.layers.{kind}, got a {received}; `from_keras` converts any.")
    arrays, options = _read_layer(fn, weights, kind, go_backwards=False)
    for k, v in given.items():
        if v is not None and v != options[k]:
            raise ValueError(f"{fn}: `{k}={v!r}` was given, but the layer has `{k}={options[k]!r}`.")
    return arrays, options


def _read_layer(fn: str, layer: Any, kind: str, *, go_backwards: bool) -> tuple[list[np.ndarray], dict[str, Any]]:
    """A built Keras layer's weights and the options recurrax reads, checking what a converted cell cannot do."""
    config = layer.get_config()
    if bool(config.get("go_backwards")) != go_backwards:
        if go_backwards:
            raise ValueError(f"{fn}: the Bidirectional's backward layer must have `go_backwards=True`.")
        raise ValueError(
            f"{fn}: the layer has `go_backwards=True` (its outputs come in reversed time order); convert it with "
            "go_backwards=False and run rx.scan(..., reverse=True), or convert the Bidirectional wrapping it."
        )
    arrays = layer.get_weights()
    if not arrays:
        raise ValueError(f"{fn}: the {kind} layer has no weights yet; build it (call it on an input) first.")
    compute, variable = getattr(layer, "compute_dtype", None), getattr(layer, "variable_dtype", None)
    if compute != variable:
        raise ValueError(
            f"{fn}: the layer computes in {compute} with {variable} weights (a mixed dtype policy); recurrax's "
            "converted cell computes in the weights' dtype."
        )
    if np.asarray(arrays[0]).dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{fn}: the layer's weights are float64, but JAX runs float32 while `jax_enable_x64` is off; enable it "
            "(jax.config.update('jax_enable_x64', True)) or cast the layer to float32."
        )
    return arrays, {k: config[k] for k in _options_of(kind)}


def _from_layer(fn: str, layer: Any, *, backwards: bool) -> tuple[Cell | Layer, Params]:
    kind = _keras_class(fn, layer)
    if kind is None or kind == "Bidirectional":
        raise TypeError(f"{fn}: expected an LSTM, GRU or SimpleRNN layer, got {kind or type(layer).__name__}.")
    # A backward layer runs reversed by construction; recurrax.bidirectional reverses it, so its cell is plain.
    arrays, options = _read_layer(fn, layer, kind, go_backwards=backwards)
    cell, params = _FROM_WEIGHTS[kind](arrays, **options)
    rates = {
        "input": float(getattr(layer, "dropout", 0.0)),
        "recurrent": float(getattr(layer, "recurrent_dropout", 0.0)),
    }
    if any(rates.values()):
        return as_layer(cell, dropout=RecurrentDropout(**rates)), params
    return cell, params


def _keras_dropout(fn: str, obj: Any) -> dict[str, float]:
    """The Keras ``dropout`` / ``recurrent_dropout`` of ``as_layer(cell, dropout=...)`` (none for a plain cell)."""
    built = built_with(obj) if isinstance(obj, Layer) else None
    dropout = None if built is None or built[0] != "_cell_layer" else built[1]["dropout"]
    if dropout is None:
        return {}
    if dropout.zoneout_h or dropout.zoneout_c:
        raise ValueError(
            f"{fn}: Keras's recurrent layers have no zoneout, but the layer has `zoneout_h={dropout.zoneout_h}`, "
            f"`zoneout_c={dropout.zoneout_c}`."
        )
    return {"dropout": dropout.input, "recurrent_dropout": dropout.recurrent}


def _options_of(kind: str) -> tuple[str, ...]:
    return {
        "LSTM": ("use_bias", "activation", "recurrent_activation"),
        "GRU": ("reset_after", "use_bias", "activation", "recurrent_activation"),
        "SimpleRNN": ("use_bias", "activation"),
    }[kind]


def _keras_rnn(
    keras: Any, cell: Cell, params: Params, options: dict[str, Any], *, go_backwards: bool, where: str | None
) -> tuple[Any, list[np.ndarray], int]:
    """An unbuilt Keras layer computing ``cell``, its weight list and the input size."""
    fn = "to_keras"
    built = built_with(cell)
    of = f"the {cell.name} cell" if where is None else f"the {where} {cell.name} cell"
    if built is None or built[0] not in ("lstm", "gru", "elman"):
        raise ValueError(
            f"{fn}: Keras has no equivalent of {of}; recurrax.lstm, gru and elman as built by their constructors "
            "convert (no function replaced)."
        )
    kind, args = built
    if args["dtype"] is not None:
        raise ValueError(f"{fn}: {of} has the compute `dtype={jnp.dtype(args['dtype']).name}`; Keras's layer has none.")
    flags = {"peephole": "peepholes", "layer_norm": "layer norm", "residual": "residual connection"}
    for option, lacks in flags.items():
        if args.get(option):
            raise ValueError(f"{fn}: Keras's layer has no {lacks}, but {of} has `{option}=True`.")
    for option in ("proj_size", "cell_clip"):
        if args.get(option) is not None:
            raise ValueError(f"{fn}: Keras's LSTM has no `{option}`, but {of} has `{option}={args[option]}`.")
    if not isinstance(params, Mapping) or "w_i" not in params:
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{fn}: the params of {of} must be a dict from its `init`, got {got}.")
    size = int(np.shape(params["w_i"])[0])
    try:
        # The cell's own check: the keys and shapes its `init` gives.
        jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct((1, size), jnp.float32))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{fn}: the params do not fit {of}: {err}") from err
    common = {
        "units": args["hidden_size"],
        "use_bias": args["use_bias"],
        "go_backwards": go_backwards,
        "dtype": jnp.dtype(params["w_i"].dtype).name,
        **options,
    }
    common["activation"] = _activation_name(fn, of, "activation", args["activation"], "activation")
    if kind == "elman":
        return keras.layers.SimpleRNN(**common), to_keras_simple_rnn(params), size
    common["recurrent_activation"] = _activation_name(
        fn, of, "gate_activation", args["gate_activation"], "recurrent_activation"
    )
    if kind == "lstm":
        return keras.layers.LSTM(**common), to_keras_lstm(params), size
    reset_after = args["reset_after"]
    return keras.layers.GRU(reset_after=reset_after, **common), to_keras_gru(params, reset_after=reset_after), size


def _check_merge(fn: str, merge: Any) -> None:
    if merge is not None and merge not in MERGES:
        raise ValueError(f"{fn}: `merge_mode` must be one of {sorted(MERGES)} or None, got {merge!r}.")


def _zrh_to_rzn(w: np.ndarray) -> np.ndarray:
    z, r, h = np.split(np.asarray(w), 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def _rzn_to_zrh(w: Any) -> np.ndarray:
    r, z, n = np.split(np.asarray(w), 3, axis=-1)
    return np.concatenate([z, r, n], axis=-1)


def _activations(fn: str, activation: Any, recurrent_activation: Any) -> dict[str, Callable[[jax.Array], jax.Array]]:
    """The recurrax cell's ``activation`` and ``gate_activation`` for Keras's activation names."""
    out = {}
    for option, name, arg in (
        ("activation", activation, "activation"),
        ("recurrent_activation", recurrent_activation, "gate_activation"),
    ):
        if name not in ACTIVATIONS:
            raise ValueError(
                f"{fn}: `{option}={name!r}` has no recurrax equivalent here; supported: {sorted(ACTIVATIONS)}."
            )
        out[arg] = ACTIVATIONS[name]
    return out


def _activation_name(fn: str, of: str, option: str, value: Any, keras_option: str) -> str:
    """Keras's name of the activation ``value`` that the recurrax cell has as ``option``; raises when it has none."""
    name = _ACTIVATION_NAMES.get(id(value))
    if name is None:
        shown = getattr(value, "__name__", repr(value))
        raise ValueError(
            f"{fn}: Keras's `{keras_option}` is a named activation, but {of} has `{option}={shown}`; the functions "
            "of recurrax.interop.keras.ACTIVATIONS convert."
        )
    return name


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
