"""Weight conversion from and to Haiku's ``hk.LSTM``, ``hk.GRU`` and ``hk.VanillaRNN``, as Haiku params dicts.

No Haiku install is needed: the converters read and write the ``{module_name: {param_name: array}}`` dict that
``hk.transform(f).init`` returns and ``.apply`` takes. What Haiku computes (``haiku/_src/recurrent.py``):

* ``hk.LSTM``: ``"<name>/linear": {"w": (I + H, 4H), "b": (4H,)}`` applied to ``concat([x, h])``, gate order
  i, g, f, o, and ``sigmoid(f + 1)``: a forget offset written in the code, not in the params. recurrax has no
  such offset, so it moves into ``b``'s forget block (``b_f + 1`` in, ``b_f - 1`` out). Those additions
  round, so the forget bias converts to float rounding (one ulp of 1) and a round trip may change its last
  bits; every other array converts bit for bit. ``hk.LSTMState(hidden, cell)`` is ``LSTMState(h, c)``, in the
  same order.
* ``hk.GRU``: ``"<name>": {"w_i": (I, 3H), "w_h": (H, 3H), "b": (3H,)}``, gate order z, r, a, reset before
  the matmul (``a = tanh(x W_ia + (r h) W_ha + b_a)``): ``recurrax.gru(reset_after=False)``. Haiku's update
  ``h' = (1 - z) h + z a`` is recurrax's ``h' = (1 - u) n + u h`` with ``u = 1 - z = sigmoid(-pre_z)``, so
  the z blocks are negated (exactly).
* ``hk.VanillaRNN``: ``h' = relu(x W_i + b_i + h W_h + b_h)`` from ``"<name>/linear"`` (input) and
  ``"<name>/linear_1"`` (hidden; no ``b`` with ``double_bias=False``): ``recurrax.elman(activation=jax.nn.relu)``
  with ``b = b_i + b_h`` (rounded once). Out, ``b`` goes to ``b_i`` and ``b_h`` is zeros, so a recurrax cell
  round-trips bit for bit under either ``double_bias``.

Haiku's cores always have a bias, so a ``use_bias=False`` cell converts with zero biases (an LSTM's forget
block gets -1, which Haiku's offset undoes to float rounding). Outputs and final states agree with Haiku's to
float rounding (1e-6 in float32): Haiku sums the gate pre-activations in another order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.cells._common import DEFAULT_ACTIVATIONS
from recurrax.cells.elman import elman
from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.core import Cell, Params
from recurrax.interop._cells import PLAIN_LSTM, constructor_options
from recurrax.interop.equinox import _one_dtype
from recurrax.layers import Layer

# Haiku's class name, its default module name, and the recurrax constructor for each kind.
_KINDS = {"lstm": ("LSTM", "lstm"), "gru": ("GRU", "gru"), "vanilla_rnn": ("VanillaRNN", "elman")}
_BY_CLASS = {haiku_class: kind for kind, (haiku_class, _) in _KINDS.items()}
_BY_CELL = {cell_name: kind for kind, (_, cell_name) in _KINDS.items()}
# Each kind's param dicts: the key after the module's name, and the param names in it.
_ENTRIES = {
    "lstm": [("/linear", ("w", "b"))],
    "gru": [("", ("w_i", "w_h", "b"))],
    "vanilla_rnn": [("/linear", ("w", "b")), ("/linear_1", ("w", "b"))],
}
# What Haiku's modules compute, as recurrax constructor options; any other value changes the recurrence.
# Options that only shape `init` (init, forget_bias, chrono_t_max) and param_dtype are free.
_EXACT: dict[str, dict[str, Any]] = {
    "lstm": PLAIN_LSTM,
    "gru": {"reset_after": False, "dtype": None, **DEFAULT_ACTIVATIONS},
    "elman": {"activation": jax.nn.relu, "residual": False, "dtype": None},
}


def from_haiku(params: Mapping[str, Any], kind: str | type, *, name: str | None = None) -> tuple[Cell, Params]:
    """Converts the params of an ``hk.LSTM``, ``hk.GRU`` or ``hk.VanillaRNN`` to ``(cell, params)``.

    Args:
      params: a Haiku params dict holding the module's entries (others, e.g. a head's, are ignored):
        LSTM ``{"<name>/linear": {"w": (I + H, 4H), "b": (4H,)}}``; GRU ``{"<name>": {"w_i": (I, 3H),
        "w_h": (H, 3H), "b": (3H,)}}``; VanillaRNN ``{"<name>/linear": {"w": (I, H), "b": (H,)},
        "<name>/linear_1": {"w": (H, H)[, "b": (H,)]}}``.
      kind: ``"lstm"``, ``"gru"``, ``"vanilla_rnn"``, or the Haiku class itself (``hk.LSTM``, ...).
      name: the module's full name (``"lstm"``, ``"my_model/~/lstm_1"``, ...); by default the one module of
        this kind under Haiku's default name (``lstm``, ``lstm_1``, ..., at any depth).

    Returns:
      ``(recurrax.lstm(H) | gru(H, reset_after=False) | elman(H, activation=jax.nn.relu), params)`` in the
      params' dtype; ``recurrax.scan`` of it equals ``hk.dynamic_unroll`` of the module.
    """
    kind = _kind(kind)
    modules = _module_params(params, kind, name)
    dtype = modules[0].dtype
    if kind == "lstm":
        w, b = modules
        H = w.shape[1] // 4
        # Haiku's `sigmoid(f + 1)`; forget_bias=1 makes `cell.init` start from what Haiku's init computes.
        b_f = b[2 * H : 3 * H] + jnp.asarray(1, dtype)
        b = jnp.concatenate([b[: 2 * H], b_f, b[3 * H :]])
        rx = {"w_i": _swap_g_f(w[:-H]), "w_h": _swap_g_f(w[-H:]), "b": _swap_g_f(b)}
        return lstm(H, param_dtype=dtype), rx
    if kind == "gru":
        w_i, w_h, b = modules
        H = w_h.shape[0]
        rx = {"w_i": _zra_to_run(w_i), "w_h": _zra_to_run(w_h), "b": _zra_to_run(b)}
        return gru(H, reset_after=False, param_dtype=dtype), rx
    w_i, b_i, w_h, b_h = (*modules, None)[:4]
    rx = {"w_i": w_i, "w_h": w_h, "b": b_i if b_h is None else b_i + b_h}
    return elman(w_h.shape[0], activation=jax.nn.relu, param_dtype=dtype), rx


def to_haiku(
    cell: Cell, params: Params, *, name: str | None = None, double_bias: bool | None = None
) -> dict[str, dict[str, jax.Array]]:
    """Converts ``(cell, params)`` to the params of the Haiku module computing the same recurrence.

    Takes cells of :func:`recurrax.lstm` (to ``hk.LSTM``), :func:`recurrax.gru` with ``reset_after=False``
    (``hk.GRU``) and :func:`recurrax.elman` with ``activation=jax.nn.relu`` (``hk.VanillaRNN``); a peephole,
    ``proj_size``, layer norm, cell clip, compute ``dtype``, ``reset_after=True``, another activation or
    ``residual`` is refused by name, as are other cells and layers.

    Args:
      cell: the recurrax cell.
      params: its params (``w_i: (I, G·H)``, ``w_h: (H, G·H)``[, ``b: (G·H,)``]); the result keeps their dtype.
      name: the Haiku module's full name; default Haiku's (``"lstm"``, ``"gru"``, ``"vanilla_rnn"``).
      double_bias: the ``hk.VanillaRNN`` option (default True: its ``linear_1`` gets a zero ``b``); elman only.

    Returns:
      The params dict, keyed as in :func:`from_haiku`, for ``hk.transform(f).apply``.
    """
    kind, options = _cell_options(cell)
    _checked_params(cell, params)
    if double_bias is not None and kind != "vanilla_rnn":
        raise ValueError(f"to_haiku: `double_bias` is an option of hk.VanillaRNN, not of hk.{_KINDS[kind][0]}.")
    if name is None:
        name = kind
    elif not isinstance(name, str) or not name:
        raise ValueError(f"to_haiku: `name` must be a non-empty module name (a str), got {name!r}.")
    dtype = _one_dtype("to_haiku", "`params`", params)
    w_i, w_h = jnp.asarray(params["w_i"]), jnp.asarray(params["w_h"])
    # Haiku always has the bias a use_bias=False cell lacks; zeros add nothing.
    b = jnp.asarray(params["b"]) if options["use_bias"] else jnp.zeros(w_h.shape[1], dtype)
    if kind == "lstm":
        H = w_h.shape[0]
        b = jnp.concatenate([b[:H], b[H : 2 * H] - jnp.asarray(1, dtype), b[2 * H :]])
        return {f"{name}/linear": {"w": _swap_g_f(jnp.concatenate([w_i, w_h])), "b": _swap_g_f(b)}}
    if kind == "gru":
        return {name: {"w_i": _run_to_zra(w_i), "w_h": _run_to_zra(w_h), "b": _run_to_zra(b)}}
    hidden = {"w": w_h, "b": jnp.zeros_like(b)} if double_bias is not False else {"w": w_h}
    return {f"{name}/linear": {"w": w_i, "b": b}, f"{name}/linear_1": hidden}


def _swap_g_f(w: jax.Array) -> jax.Array:
    """Haiku's LSTM blocks i, g, f, o <-> recurrax's i, f, g, o (its own inverse)."""
    i, a, b, o = jnp.split(w, 4, axis=-1)
    return jnp.concatenate([i, b, a, o], axis=-1)


def _zra_to_run(w: jax.Array) -> jax.Array:
    z, r, a = jnp.split(w, 3, axis=-1)
    return jnp.concatenate([r, -z, a], axis=-1)


def _run_to_zra(w: jax.Array) -> jax.Array:
    r, u, n = jnp.split(w, 3, axis=-1)
    return jnp.concatenate([-u, r, n], axis=-1)


def _kind(kind: Any) -> str:
    # The class by its name: recurrax never imports haiku.
    key = kind.__name__ if isinstance(kind, type) else kind
    if isinstance(key, str) and (key in _KINDS or key in _BY_CLASS):
        return _BY_CLASS.get(key, key)
    raise ValueError(
        f"from_haiku: `kind` must be one of {sorted(_KINDS)} or hk.LSTM, hk.GRU, hk.VanillaRNN, got {kind!r}."
    )


def _module_params(params: Any, kind: str, name: str | None) -> list[jax.Array]:
    """The module's arrays (LSTM ``w, b``; GRU ``w_i, w_h, b``; VanillaRNN ``w_i, b_i, w_h[, b_h]``), checked."""
    haiku_class, _ = _KINDS[kind]
    if not isinstance(params, Mapping):
        raise TypeError(f"from_haiku: `params` must be a Haiku params dict, got {type(params).__name__}.")
    first = _ENTRIES[kind][0][0]
    if name is None:
        # Haiku names an unnamed module by its class (numbered when repeated); nesting prefixes its parents.
        default = re.compile(rf"(.*/)?{kind}(_\d+)?")
        found = [
            k[: len(k) - len(first)]
            for k in params
            if k.endswith(first) and default.fullmatch(k[: len(k) - len(first)])
        ]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)} ({found})"
            raise ValueError(
                f"from_haiku: `params` hold {what} hk.{haiku_class} modules under Haiku's default name "
                f"'{kind}' (a key like '{kind}{first}'); got the keys {sorted(params)}. Pass `name=`, the module's "
                "name."
            )
        name = found[0]
    elif not isinstance(name, str):
        raise TypeError(f"from_haiku: `name` must be a module name (a str), got {name!r}.")
    arrays = {}
    for suffix, names in _ENTRIES[kind]:
        key = name + suffix
        module = params.get(key)
        if not isinstance(module, Mapping):
            raise ValueError(
                f"from_haiku: `params` lack the hk.{haiku_class} entry {key!r} (name={name!r}); got the keys "
                f"{sorted(params)}."
            )
        # double_bias=False: VanillaRNN's hidden Linear has no bias.
        required = names[:1] if suffix == "/linear_1" else names
        missing = [n for n in required if n not in module]
        extra = sorted(set(module) - set(names))
        if missing or extra:
            what = f"lack {missing[0]!r}" if missing else f"have an unexpected {extra[0]!r}"
            raise ValueError(f"from_haiku: `params[{key!r}]` {what}; expected {list(names)}, got {sorted(module)}.")
        for n in names:
            if n in module:
                # Not jnp.asarray yet: it would make a float64 array float32 before `_one_dtype` refuses it.
                array = module[n] if hasattr(module[n], "dtype") else np.asarray(module[n])
                where = f"params[{key!r}][{n!r}]"
                if not jnp.issubdtype(array.dtype, jnp.floating):
                    raise TypeError(f"from_haiku: `{where}` must be floating-point, got dtype {array.dtype}.")
                arrays[where] = array
    _check_shapes(kind, arrays)
    _one_dtype("from_haiku", f"the hk.{haiku_class} params", arrays)
    return [jnp.asarray(a) for a in arrays.values()]


def _check_shapes(kind: str, arrays: dict[str, Any]) -> None:
    """Raises unless the shapes fit one hidden size ``H`` (read off the first weight) and input size ``I >= 1``."""
    shapes = [tuple(a.shape) for a in arrays.values()]
    gates = {"lstm": 4, "gru": 3, "vanilla_rnn": 1}[kind]
    first = shapes[0]
    H = first[1] // gates if len(first) == 2 else 0
    I = first[0] - (H if kind == "lstm" else 0) if len(first) == 2 else 0
    if not (H and I >= 1 and first[1] == gates * H):
        want = "(I + H, 4H) with I >= 1" if kind == "lstm" else f"(I, {gates}H)" if gates > 1 else "(I, H)"
    else:
        want = {
            "lstm": [(I + H, 4 * H), (4 * H,)],
            "gru": [(I, 3 * H), (H, 3 * H), (3 * H,)],
            "vanilla_rnn": [(I, H), (H,), (H, H), (H,)],
        }[kind]
    for index, (where, got) in enumerate(zip(arrays, shapes)):
        expected = want if isinstance(want, str) else want[index]
        if got != expected:
            raise ValueError(f"from_haiku: `{where}` must have shape {expected}, got {got}.")


def _cell_options(cell: Any) -> tuple[str, dict[str, Any]]:
    """The Haiku kind of a recurrax lstm/gru/elman cell and its options, refusing what Haiku cannot compute."""
    if isinstance(cell, Layer):
        raise TypeError(
            f"to_haiku: Haiku's cores are single-step cells, but got the layer {cell.name!r}; convert its cell."
        )
    if not isinstance(cell, Cell):
        raise TypeError(f"to_haiku: `cell` must be a recurrax.Cell, got {type(cell).__name__}.")
    cell_name, options = constructor_options(cell, "to_haiku", "Haiku", _EXACT, "the lstm, gru and elman cells")
    kind = _BY_CELL[cell_name]
    for option, exact in _EXACT[cell_name].items():
        value = options[option]
        if value is not exact and value != exact:
            shown = getattr(value, "__name__", None) or (jnp.dtype(value).name if option == "dtype" else repr(value))
            wanted = "jax.nn.relu" if option == "activation" else repr(exact)
            raise ValueError(
                f"to_haiku: hk.{_KINDS[kind][0]} computes `{option}={wanted}`, but the {cell_name} cell has "
                f"`{option}={shown}`."
            )
    return kind, options


def _checked_params(cell: Cell, params: Params) -> None:
    w_i = params.get("w_i") if isinstance(params, Mapping) else None
    if np.ndim(w_i) != 2:
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            f"to_haiku: `params` must be the params of the {cell.name} cell (from `cell.init`), got {got}."
        )
    try:
        # The cell's own check: the keys, shapes and dtypes its `init` gives (so a `use_bias` mismatch fails here).
        jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct((1, np.shape(w_i)[0]), jnp.float32))
    except (ValueError, TypeError) as err:
        raise ValueError(f"to_haiku: `params` do not fit the {cell.name} cell: {err}") from err
