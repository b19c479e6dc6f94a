"""Exact weight conversion to and from Flax's recurrent cells.

Flax keeps one kernel (and bias) per gate; recurrax keeps the gate blocks side by side in one
matrix, in the same order (i, f, g, o for the LSTM; r, z, n for the GRU), so conversion is a
concatenation. Flax's LSTM puts the bias on the recurrent side (``h{g}/bias``), its GRU on the input
side plus ``hn/bias``, which is recurrax's ``b_hn``: the sums are what both compute.

Supported:
  * ``flax.linen.LSTMCell`` and ``flax.linen.OptimizedLSTMCell`` (same param names), to and from;
  * ``flax.linen.GRUCell``, to and from;
  * ``flax.linen.MGUCell`` (``reset_gate=True``) as ``recurrax.mgu(variant="flax")``, to and from;
  * ``flax.linen.SimpleCell`` (any activation, ``residual`` too) as ``recurrax.elman``, to and from;
  * ``flax.nnx.LSTMCell``, ``flax.nnx.OptimizedLSTMCell``, ``flax.nnx.GRUCell`` and ``flax.nnx.SimpleCell``,
    to (:func:`to_nnx` builds the module) and from. The NNX ``GRUCell`` has no recurrent bias on the candidate
    (flax#5594): its conversion has ``b_hn = 0``, which is exactly what it computes, and only a GRU whose
    ``b_hn`` is zero converts to it. NNX has no ``MGUCell``.

Flax's ``gate_fn`` and ``activation_fn`` are the cells' ``gate_activation`` and ``activation``, any function
(only the defaults, ``sigmoid`` and ``tanh``, run on the sequence-level backends). Flax's carry is ``(c, h)``;
recurrax's state is ``LSTMState(h, c)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recurrax.cells.elman import elman
from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.cells.mgu import mgu
from recurrax.core import Cell, Params
from recurrax.interop._cells import constructor_options

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")
_LINEN = {
    nn.LSTMCell: "lstm",
    nn.OptimizedLSTMCell: "lstm",
    nn.GRUCell: "gru",
    nn.MGUCell: "mgu",
    nn.SimpleCell: "elman",
}
# Where each recurrax param of the cells below lives in Flax: (submodule, leaf) per gate block, side by side.
_BLOCKS = {
    "mgu": {
        "w_i": [("if", "kernel"), ("in", "kernel")],
        "w_h": [("hf", "kernel"), ("hn", "kernel")],
        "b": [("if", "bias"), ("in", "bias")],
        "b_hn": [("hn", "bias")],
    },
    "elman": {"w_i": [("i", "kernel")], "w_h": [("h", "kernel")], "b": [("i", "bias")]},
}
_NNX = {nnx.LSTMCell: "lstm", nnx.OptimizedLSTMCell: "lstm", nnx.GRUCell: "gru", nnx.SimpleCell: "elman"}
# The options of recurrax's cells that NNX's cells have no equivalent of, with the value they must keep.
_NNX_EXACT = {
    "lstm": {"peephole": False, "proj_size": None, "layer_norm": False, "cell_clip": None},
    "gru": {"reset_after": True},
    "elman": {},
}


def from_linen(module: nn.Module, variables: Mapping[str, Any]) -> tuple[Cell, Params]:
    """Converts the variables of a ``flax.linen`` ``LSTMCell``, ``OptimizedLSTMCell`` or ``GRUCell``.

    Args:
      module: the Flax cell (its type, ``features``, activations and dtypes are read).
      variables: ``module.init(...)``'s result, or its ``"params"`` entry.

    Returns:
      ``(cell, params)``: ``recurrax.lstm(H, forget_bias=0)`` or ``recurrax.gru(H)`` and params
      that compute what the Flax cell computes.
    """
    kind = _kind(module, _LINEN, "from_linen")
    source = f"flax.linen.{type(module).__name__}"
    params = variables.get("params", variables)
    hidden = module.features
    if kind in _BLOCKS:
        blocks = _BLOCKS[kind]
        _check_keys(source, params, sorted({name for paths in blocks.values() for name, _ in paths}))
        out = {key: _cat(source, params, paths, _block_shape(key, hidden, hidden)) for key, paths in blocks.items()}
    elif kind == "lstm":
        _check_keys(source, params, [f"{side}{g}" for side in "ih" for g in _LSTM_GATES])
        out = {
            "w_i": _cat(source, params, [(f"i{g}", "kernel") for g in _LSTM_GATES], (None, hidden)),
            "w_h": _cat(source, params, [(f"h{g}", "kernel") for g in _LSTM_GATES], (hidden, hidden)),
            "b": _cat(source, params, [(f"h{g}", "bias") for g in _LSTM_GATES], (hidden,)),
        }
    else:
        _check_keys(source, params, [f"{side}{g}" for side in "ih" for g in _GRU_GATES])
        out = {
            "w_i": _cat(source, params, [(f"i{g}", "kernel") for g in _GRU_GATES], (None, hidden)),
            "w_h": _cat(source, params, [(f"h{g}", "kernel") for g in _GRU_GATES], (hidden, hidden)),
            "b": _cat(source, params, [(f"i{g}", "bias") for g in _GRU_GATES], (hidden,)),
            "b_hn": jnp.asarray(_take(source, params, ("hn", "bias"), (hidden,))),
        }
    return _cell(kind, module), out


def to_linen(module: nn.Module, params: Params) -> dict[str, Any]:
    """Converts recurrax LSTM/GRU params to the variables of a ``flax.linen`` cell.

    Args:
      module: the target ``LSTMCell``, ``OptimizedLSTMCell`` or ``GRUCell``.
      params: of ``recurrax.lstm(H)`` (no peepholes, projection or layer norm) or of
        ``recurrax.gru(H, reset_after=True)``; a missing ``b`` (``use_bias=False``) becomes zeros.
        A ``cell_clip`` is not visible in params and is not carried over.

    Returns:
      ``{"params": {...}}`` for ``module.apply``.
    """
    kind = _kind(module, _LINEN, "to_linen")
    source = f"recurrax.{kind} params"
    if kind in _BLOCKS:
        return {"params": _split_blocks(kind, module, params, source)}
    hidden, gates = module.features, (_LSTM_GATES if kind == "lstm" else _GRU_GATES)
    allowed = {"w_i", "w_h", "b"} | ({"b_hn"} if kind == "gru" else set())
    extra = sorted(set(params) - allowed)
    if extra:
        raise ValueError(
            f"to_linen: flax.linen.{type(module).__name__} has no equivalent of `{extra[0]}` "
            f"(params with keys {sorted(params)}); only {sorted(allowed)} convert."
        )
    w_h = _take(source, params, ("w_h",), (hidden, len(gates) * hidden))
    w_i = _take(source, params, ("w_i",), (None, len(gates) * hidden))
    if "b" in params:
        b = _take(source, params, ("b",), (len(gates) * hidden,))
    else:
        b = np.zeros((len(gates) * hidden,), w_h.dtype)
    if kind == "gru" and "b" in params and "b_hn" not in params:
        raise ValueError(
            "to_linen: `b_hn` is missing: these look like params of rx.gru(reset_after=False), "
            "which flax.linen.GRUCell (reset after) cannot compute."
        )
    split = lambda w: np.split(w, len(gates), axis=-1)  # noqa: E731
    out: dict[str, Any] = {}
    for g, k_i, k_h, b_g in zip(gates, split(w_i), split(w_h), split(b)):
        if kind == "lstm":
            out[f"i{g}"] = {"kernel": k_i}
            out[f"h{g}"] = {"kernel": k_h, "bias": b_g}
        else:
            out[f"i{g}"] = {"kernel": k_i, "bias": b_g}
            out[f"h{g}"] = {"kernel": k_h}
    if kind == "gru":
        b_hn = _take(source, params, ("b_hn",), (hidden,)) if "b_hn" in params else np.zeros_like(b[:hidden])
        out["hn"]["bias"] = b_hn
    return {"params": jax.tree.map(jnp.asarray, out)}


def _block_shape(key: str, hidden: int, width: int) -> tuple[int | None, ...]:
    """The shape of ``width`` columns of the recurrax param ``key`` (``None``: the input size, any)."""
    return (width,) if key.startswith("b") else (None if key == "w_i" else hidden, width)


def _split_blocks(kind: str, module: nn.Module, params: Params, source: str) -> dict[str, Any]:
    """recurrax params as the Flax submodules of :data:`_BLOCKS`."""
    blocks, hidden = _BLOCKS[kind], module.features
    if not isinstance(params, Mapping) or set(params) != set(blocks):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        hint = (
            " (rx.mgu(variant='flax') has `b_hn`; the default variant computes another function)"
            if kind == "mgu"
            else ""
        )
        raise ValueError(
            f"to_linen: flax.linen.{type(module).__name__} takes the params of recurrax.{kind} with keys "
            f"{sorted(blocks)}{hint}, got {got}."
        )
    out: dict[str, Any] = {}
    for key, paths in blocks.items():
        whole = _take(source, params, (key,), _block_shape(key, hidden, len(paths) * hidden))
        for (name, leaf), part in zip(paths, np.split(whole, len(paths), axis=-1)):
            out.setdefault(name, {})[leaf] = jnp.asarray(part)
    return out


def from_nnx(module: nnx.Module) -> tuple[Cell, Params]:
    """Converts a ``flax.nnx`` ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or ``SimpleCell``.

    Returns:
      ``(cell, params)`` computing what ``module`` computes; for ``nnx.GRUCell`` ``b_hn`` is zeros
      (it has no recurrent candidate bias, flax#5594).
    """
    kind = _kind(module, _NNX, "from_nnx")
    source = f"flax.nnx.{type(module).__name__}"
    hidden = module.hidden_features
    if isinstance(module, nnx.LSTMCell):
        variables = {name: _nnx_linear(getattr(module, _nnx_attr(name))) for name in _nnx_lstm_gates()}
        return _cell(kind, module), from_linen(nn.LSTMCell(hidden), variables)[1]
    layers = {"dense_i": _nnx_linear(module.dense_i), "dense_h": _nnx_linear(module.dense_h)}
    if kind == "elman":
        variables = {"i": layers["dense_i"], "h": layers["dense_h"]}
        return _cell(kind, module), from_linen(nn.SimpleCell(hidden), variables)[1]
    gates = 4 if kind == "lstm" else 3
    bias_side = "dense_h" if kind == "lstm" else "dense_i"
    params = {
        "w_i": _take(source, layers, ("dense_i", "kernel"), (None, gates * hidden)),
        "w_h": _take(source, layers, ("dense_h", "kernel"), (hidden, gates * hidden)),
        "b": _take(source, layers, (bias_side, "bias"), (gates * hidden,)),
    }
    if kind == "gru":
        params["b_hn"] = np.zeros((hidden,), params["w_h"].dtype)  # what NNX computes: no candidate bias
    return _cell(kind, module), jax.tree.map(jnp.asarray, params)


def to_nnx(cell: Cell, params: Params, *, optimized: bool = False, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """The ``flax.nnx`` cell computing what ``cell`` computes with ``params``, its weights set.

    Args:
      cell: ``recurrax.lstm`` (no peepholes, projection, layer norm or cell clip), ``recurrax.gru``
        (``reset_after=True`` with ``b_hn == 0``: ``nnx.GRUCell`` has no recurrent candidate bias, flax#5594)
        or ``recurrax.elman``; a cell without a bias gets NNX's bias set to zeros.
      params: the cell's params (concrete: the GRU's ``b_hn`` is read).
      optimized: an LSTM becomes ``nnx.OptimizedLSTMCell`` (two fused kernels) instead of ``nnx.LSTMCell``.
      rngs: passed to the NNX constructor (its initial weights are overwritten; ``nnx.Rngs(0)`` if None).

    Returns:
      ``nnx.LSTMCell``, ``nnx.OptimizedLSTMCell``, ``nnx.GRUCell`` or ``nnx.SimpleCell``; its carry is
      ``(c, h)`` for the LSTMs, ``h`` otherwise.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"to_nnx: `cell` must be a recurrax.Cell, got {type(cell).__name__}.")
    kind, options = constructor_options(cell, "to_nnx", "Flax NNX", _NNX_EXACT, "the lstm, gru and elman cells")
    for option, exact in _NNX_EXACT[kind].items():
        if options[option] != exact:
            raise ValueError(
                f"to_nnx: flax.nnx has no {kind} cell with `{option}={options[option]!r}` "
                f"(its cells compute `{option}={exact!r}`)."
            )
    source = f"recurrax.{kind} params"
    gates = {"lstm": 4, "gru": 3, "elman": 1}[kind]
    hidden = options["hidden_size"]
    w_i = _take(source, params, ("w_i",), (None, gates * hidden))
    w_h = _take(source, params, ("w_h",), (hidden, gates * hidden))
    width = gates * hidden
    b = _take(source, params, ("b",), (width,)) if options["use_bias"] else np.zeros((width,), w_h.dtype)
    if kind == "gru" and np.any(_take(source, params, ("b_hn",), (hidden,)) != 0):
        raise ValueError(
            "to_nnx: `b_hn` is not zero, and flax.nnx.GRUCell has no recurrent candidate bias (flax#5594); "
            "to_linen converts it to flax.linen.GRUCell, which has one."
        )
    module_cls = {"lstm": nnx.OptimizedLSTMCell if optimized else nnx.LSTMCell, "gru": nnx.GRUCell}.get(
        kind, nnx.SimpleCell
    )
    kwargs: dict[str, Any] = {
        "dtype": options["dtype"],
        "param_dtype": options["param_dtype"],
        "activation_fn": options["activation"],
    }
    if kind == "elman":
        kwargs["residual"] = options["residual"]
    else:
        kwargs["gate_fn"] = options["gate_activation"]
    module = module_cls(w_i.shape[0], hidden, rngs=rngs if rngs is not None else nnx.Rngs(0), **kwargs)
    if module_cls is nnx.LSTMCell:
        per_gate = to_linen(nn.LSTMCell(hidden), {"w_i": w_i, "w_h": w_h, "b": b})["params"]
        weights = {_nnx_attr(name): leaves for name, leaves in per_gate.items()}
    else:
        bias_side = "dense_h" if kind == "lstm" else "dense_i"
        weights = {"dense_i": {"kernel": w_i}, "dense_h": {"kernel": w_h}}
        weights[bias_side]["bias"] = b
    for name, leaves in weights.items():
        for leaf, value in leaves.items():
            getattr(getattr(module, name), leaf).set_value(jnp.asarray(value))
    return module


def _nnx_lstm_gates() -> list[str]:
    """The per-gate submodules of ``nnx.LSTMCell``, as linen names them."""
    return [side + g for side in "ih" for g in _LSTM_GATES]


def _nnx_attr(name: str) -> str:
    """The NNX attribute of the linen submodule ``name``: ``if`` is a keyword, so NNX calls that gate ``if_``."""
    return name + "_" if name == "if" else name


def _kind(module: Any, kinds: dict[type, str], fn: str) -> str:
    """The recurrax cell name (``"lstm"``, ``"gru"``, ``"mgu"``, ``"elman"``) of a supported Flax cell, or raises."""
    kind = kinds.get(type(module))
    if kind is None:
        names = ", ".join(sorted(t.__module__.split(".")[1] + "." + t.__name__ for t in kinds))
        raise TypeError(f"{fn}: expected one of {names}, got {type(module).__name__}.")
    if kind == "mgu" and not module.reset_gate:
        raise ValueError(
            f"{fn}: MGUCell has `reset_gate=False`; recurrax.mgu(variant='flax') is the reset_gate=True form."
        )
    return kind


def _cell(kind: str, module: Any) -> Cell:
    """The recurrax cell computing what the Flax ``module`` computes (bias already in the params)."""
    hidden = module.features if isinstance(module, nn.Module) else module.hidden_features
    options = {"param_dtype": module.param_dtype, "dtype": module.dtype, "activation": module.activation_fn}
    if kind == "elman":
        return elman(hidden, residual=module.residual, **options)
    options["gate_activation"] = module.gate_fn
    if kind == "mgu":
        return mgu(hidden, variant="flax", **options)
    return lstm(hidden, forget_bias=0.0, **options) if kind == "lstm" else gru(hidden, reset_after=True, **options)


def _check_keys(source: str, params: Mapping[str, Any], expected: list[str]) -> None:
    missing = [k for k in expected if k not in params]
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        what = f"missing `{missing[0]}`" if missing else f"unexpected `{extra[0]}`"
        raise ValueError(f"{source}: {what}; expected the submodules {expected}, got {sorted(params)}.")


def _take(source: str, tree: Mapping[str, Any], path: tuple[str, ...], shape: tuple[int | None, ...]) -> np.ndarray:
    """``tree[path]`` as a NumPy array, checked against ``shape`` (``None`` matches any size)."""
    node: Any = tree
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node or node[key] is None:
            raise ValueError(f"{source}: missing `{'/'.join(path[: depth + 1])}`.")
        node = node[key]
    value = np.asarray(node)
    if value.ndim != len(shape) or any(want is not None and want != got for want, got in zip(shape, value.shape)):
        want = "(" + ", ".join("I" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{source}: `{'/'.join(path)}` must have shape {want}, got {value.shape}.")
    return value


def _cat(
    source: str, tree: Mapping[str, Any], paths: list[tuple[str, ...]], shape: tuple[int | None, ...]
) -> jax.Array:
    """The arrays at ``paths`` side by side along the last axis; all must share one shape."""
    parts = [_take(source, tree, path, shape) for path in paths]
    for path, part in zip(paths[1:], parts[1:]):
        if part.shape != parts[0].shape:
            raise ValueError(
                f"{source}: `{'/'.join(path)}` has shape {part.shape}, but `{'/'.join(paths[0])}` has {parts[0].shape}."
            )
    return jnp.asarray(np.concatenate(parts, axis=-1))


def _nnx_linear(layer: nnx.Linear) -> dict[str, Any]:
    """``{"kernel": ..., "bias": ...}`` of an ``nnx.Linear`` (no ``bias`` entry when it has none)."""
    out = {"kernel": layer.kernel[...]}
    if getattr(layer, "bias", None) is not None:
        out["bias"] = layer.bias[...]
    return out
