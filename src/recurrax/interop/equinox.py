"""Exact weight conversion from and to ``equinox.nn.LSTMCell`` and ``equinox.nn.GRUCell``.

Equinox computes ``W @ x`` on unbatched vectors with gate blocks stacked along the rows of ``W``;
recurrax keeps ``w_i = weight_ih.T`` and ``w_h = weight_hh.T`` (gate blocks side by side, in the same
order). Both libraries order the gates alike (i, f, g, o; r, z, n) and put the biases in the same
places, so every weight maps onto one param:

* ``LSTMCell``: ``bias (4H,)`` is recurrax's ``b`` (Equinox has one bias, no ``b_ih + b_hh`` split).
* ``GRUCell``: ``bias (3H,)`` is added to ``weight_ih @ x`` for all three gates, as recurrax's ``b``; its
  ``bias_n (H,)`` is added to ``weight_hh[2H:] @ h`` *inside* the reset gate, as recurrax's ``b_hn``
  (``reset_after=True``). It is not PyTorch's ``b_hh``: Equinox has no recurrent bias for r and z.

A recurrax cell runs unbatched as well, so ``cell.step(params, state, x)`` with ``x: (I,)`` is the
module's ``__call__``; with a batch it is ``jax.vmap`` of it. equinox is imported only when a function
is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.cells._common import DEFAULT_ACTIVATIONS
from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.core import Cell, Params
from recurrax.interop._cells import PLAIN_LSTM, constructor_options
from recurrax.layers import Layer

if TYPE_CHECKING:
    import equinox as eqx

# What Equinox's cells compute, as the options of recurrax's constructors: any other value changes the
# recurrence, so it is refused. Options that only shape the initial params (init, forget_bias,
# chrono_t_max) are free.
_EXACT = {
    "lstm": PLAIN_LSTM,
    "gru": {"reset_after": True, "dtype": None, **DEFAULT_ACTIVATIONS},
}
_GATES = {"lstm": 4, "gru": 3}


def from_equinox(module: Any) -> tuple[Cell, Params]:
    """Converts an ``equinox.nn.LSTMCell`` or ``equinox.nn.GRUCell`` to ``(cell, params)``.

    Args:
      module: the Equinox cell, ``weight_ih: (G·H, I)``, ``weight_hh: (G·H, H)``, ``bias: (G·H,)`` and, for
        the GRU, ``bias_n: (H,)`` (``G`` = 4 or 3). Its weights are copied exactly, in their dtype.

    Returns:
      ``(cell, params)`` with ``params = {"w_i": (I, G·H), "w_h": (H, G·H), "b": (G·H,)[, "b_hn": (H,)]}``;
      ``cell.step(params, state, x)`` equals ``module(x, hidden)`` (``LSTMState(h, c)`` for ``(h, c)``).
    """
    eqx = _import_equinox("from_equinox")
    kind = _module_kind(eqx, module)
    H, use_bias = int(module.hidden_size), bool(module.use_bias)
    names = ["weight_ih", "weight_hh"] + (["bias"] + (["bias_n"] if kind == "gru" else []) if use_bias else [])
    arrays = {name: getattr(module, name) for name in names}
    for name in {"bias", "bias_n"} - set(names):
        if getattr(module, name, None) is not None:
            raise ValueError(f"from_equinox: the module has `use_bias=False` but a `{name}`.")
    G = _GATES[kind]
    shapes = {"weight_ih": (G * H, int(module.input_size)), "weight_hh": (G * H, H), "bias": (G * H,), "bias_n": (H,)}
    for name, value in arrays.items():
        if value is None or tuple(np.shape(value)) != shapes[name]:
            got = None if value is None else tuple(np.shape(value))
            raise ValueError(f"from_equinox: `{name}` must have shape {shapes[name]}, got {got}.")
    dtype = _one_dtype("from_equinox", "the module", arrays)
    params = {"w_i": jnp.asarray(arrays["weight_ih"]).T, "w_h": jnp.asarray(arrays["weight_hh"]).T}
    if use_bias:
        params["b"] = jnp.asarray(arrays["bias"])
        if kind == "gru":
            params["b_hn"] = jnp.asarray(arrays["bias_n"])
    if kind == "lstm":
        # forget_bias only shapes `init`; 0 keeps cell.init's biases Equinox's too.
        return lstm(H, forget_bias=0.0, use_bias=use_bias, param_dtype=dtype), params
    return gru(H, reset_after=True, use_bias=use_bias, param_dtype=dtype), params


def to_equinox(cell: Cell, params: Params) -> eqx.Module:
    """Builds the ``equinox.nn.LSTMCell`` or ``equinox.nn.GRUCell`` computing what ``cell`` computes.

    The inverse of :func:`from_equinox`: ``from_equinox(to_equinox(cell, params))[1]`` is ``params`` bit
    for bit. Takes cells of :func:`recurrax.lstm` and :func:`recurrax.gru` with the options Equinox has
    (``use_bias`` either way); a peephole, ``proj_size``, layer norm, cell clip, compute ``dtype`` or
    ``reset_after=False`` is refused by name, as are other cells and layers.

    Args:
      cell: the recurrax cell.
      params: its params, ``w_i: (I, G·H)``, ``w_h: (H, G·H)``, ``b: (G·H,)`` [, ``b_hn: (H,)``]; the module
        takes their dtype.

    Returns:
      The Equinox module, called on ``x: (I,)`` and ``h: (H,)`` (``(h, c)`` for the LSTM).
    """
    eqx = _import_equinox("to_equinox")
    kind, options = _cell_options(cell)
    w_i = params.get("w_i") if isinstance(params, dict) else None
    if np.ndim(w_i) != 2:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"to_equinox: `params` must be the params of the {kind} cell (from `cell.init`), got {got}.")
    try:
        # The cell's own check: the keys, shapes and dtypes its `init` gives (so a `use_bias` mismatch fails here).
        jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct((1, np.shape(w_i)[0]), jnp.float32))
    except (ValueError, TypeError) as err:
        raise ValueError(f"to_equinox: `params` do not fit the {kind} cell: {err}") from err
    dtype = _one_dtype("to_equinox", "`params`", params)
    input_size, hidden = int(np.shape(w_i)[0]), int(np.shape(params["w_h"])[0])
    use_bias = bool(options["use_bias"])
    module_cls = eqx.nn.LSTMCell if kind == "lstm" else eqx.nn.GRUCell
    # Shapes only: every array is replaced below, so no random weights are drawn.
    abstract = eqx.filter_eval_shape(
        module_cls, input_size, hidden, use_bias=use_bias, dtype=dtype, key=jax.random.key(0)
    )
    names = ["weight_ih", "weight_hh"]
    values = [jnp.asarray(params["w_i"]).T, jnp.asarray(params["w_h"]).T]
    if use_bias:
        names.append("bias")
        values.append(jnp.asarray(params["b"]))
        if kind == "gru":
            names.append("bias_n")
            values.append(jnp.asarray(params["b_hn"]))
    return eqx.tree_at(lambda m: [getattr(m, name) for name in names], abstract, values)


def _import_equinox(caller: str) -> Any:
    try:
        import equinox
    except ImportError as err:
        raise ImportError(f"{caller}: Equinox is not installed (`pip install equinox`).") from err
    return equinox


def _module_kind(eqx: Any, module: Any) -> str:
    for kind, cls in (("lstm", eqx.nn.LSTMCell), ("gru", eqx.nn.GRUCell)):
        if isinstance(module, cls):
            # A subclass may compute something else; its weights alone do not say what.
            if type(module).__call__ is not cls.__call__:
                raise ValueError(
                    f"from_equinox: {type(module).__name__} overrides `__call__` of equinox.nn.{cls.__name__}, so "
                    "its weights need not mean what they mean there."
                )
            return kind
    raise TypeError(
        f"from_equinox: expected an equinox.nn.LSTMCell or equinox.nn.GRUCell, got {type(module).__name__}."
    )


def _cell_options(cell: Any) -> tuple[str, dict[str, Any]]:
    """The constructor options of a recurrax lstm/gru cell, refusing what Equinox cannot compute."""
    if isinstance(cell, Layer):
        raise TypeError(
            f"to_equinox: Equinox has single-step cells only, but got the layer {cell.name!r}; convert its cells."
        )
    if not isinstance(cell, Cell):
        raise TypeError(f"to_equinox: `cell` must be a recurrax.Cell, got {type(cell).__name__}.")
    kind, options = constructor_options(cell, "to_equinox", "Equinox", _EXACT, "the lstm and gru cells")
    for option, exact in _EXACT[kind].items():
        value = options[option]
        if value is not exact and value != exact:
            shown = getattr(value, "__name__", None) or (jnp.dtype(value).name if option == "dtype" else repr(value))
            module = "LSTMCell" if kind == "lstm" else "GRUCell"
            raise ValueError(
                f"to_equinox: equinox.nn.{module} computes `{option}={exact!r}`, but the {kind} cell has "
                f"`{option}={shown}`."
            )
    return kind, options


def _one_dtype(caller: str, where: str, arrays: dict[str, Any]) -> Any:
    """The one floating dtype of ``arrays``, refusing a float64 JAX would turn to float32."""
    dtypes = sorted({jnp.dtype(a.dtype if hasattr(a, "dtype") else np.result_type(a)).name for a in arrays.values()})
    if len(dtypes) != 1 or not jnp.issubdtype(jnp.dtype(dtypes[0]), jnp.floating):
        raise ValueError(f"{caller}: {where} must hold one floating-point dtype, got {dtypes}.")
    dtype = jnp.dtype(dtypes[0])
    if dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{caller}: {where} holds float64 weights, which JAX would silently make float32 while `jax_enable_x64` "
            "is off; enable it (`jax.config.update('jax_enable_x64', True)`) or cast the weights first."
        )
    return dtype
