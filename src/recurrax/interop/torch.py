"""Exact weight conversion from and to ``torch.nn.RNN``, ``torch.nn.LSTM`` and ``torch.nn.GRU`` (and their ``*Cell``).

PyTorch computes ``x @ W_ih.T + b_ih + h @ W_hh.T + b_hh`` with gate blocks stacked along the rows
of ``W``; recurrax keeps ``w_i = W_ih.T`` and ``w_h = W_hh.T`` (gate blocks side by side, in the same
order) and one bias ``b = b_ih + b_hh``. The GRU's ``b_hn`` stays separate because the reset gate
multiplies it. torch is imported lazily: this module never requires it until a function is called
with a torch module.

Layout of the result:
  * one layer, one direction: ``(cell, params)``, run with :func:`recurrax.scan`;
  * more layers or bidirectional: ``(layer, params)`` with ``layer`` built from
    :func:`recurrax.stacked` / :func:`recurrax.bidirectional` (run with ``layer.apply``); the params
    are a tuple with one entry per layer, each ``{"forward": ..., "backward": ...}`` when
    bidirectional.

recurrax is batch-major: a module with ``batch_first=False`` is called on ``(T, B, I)``, so pass
``time_major=True`` (or transpose) to get the same layout. ``torch.nn.RNNCell``, ``LSTMCell`` and
``GRUCell`` convert to ``(cell, params)``, run with ``cell.step``.

:func:`to_torch` is the inverse: it builds the module (``batch_first=True``) from a cell or from the
layers above, with all of recurrax's ``b`` in ``b_ih`` and zeros in ``b_hh`` but for the GRU's
``b_hn``, so ``from_torch(to_torch(layer, params))`` gives back ``params`` exactly. What torch cannot
compute (layer norm, peepholes, a cell clip, a reset-before GRU, a compute ``dtype``, other cells,
residual stacks, other merges) is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.cells._common import DEFAULT_ACTIVATIONS
from recurrax.cells.elman import elman
from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.core import Cell, LSTMState, Params, RNNState, State, built_with
from recurrax.interop._cells import constructor_options, single_cell
from recurrax.layers import BidirectionalState, Layer, bidirectional, stacked

if TYPE_CHECKING:
    import torch

_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_CELL_MODULES = {"RNNCell": None, "LSTMCell": "LSTM", "GRUCell": "GRU"}


def from_torch(module: Any) -> tuple[Cell | Layer, Params]:
    """Converts a ``torch.nn.RNN/LSTM/GRU`` (any ``num_layers``, ``bidirectional``, ``proj_size``) or ``*Cell``.

    Args:
      module: the torch module; its weights are copied (float32 or float64, as stored).

    Returns:
      ``(cell, params)`` for a ``*Cell`` or a single unidirectional layer, else ``(layer, params)``; the
      outputs and final states equal the module's to float rounding.
    """
    mode = _check_module(module)
    cell = _cell_for(module, mode)
    if _is_cell_module(module):
        return cell, _cell_params(module, mode, "")
    num_dirs = 2 if module.bidirectional else 1
    layer_params = []
    for layer in range(module.num_layers):
        dirs = [_cell_params(module, mode, f"_l{layer}" + "_reverse" * d) for d in range(num_dirs)]
        layer_params.append({"forward": dirs[0], "backward": dirs[1]} if num_dirs == 2 else dirs[0])
    if module.num_layers == 1 and num_dirs == 1:
        return cell, layer_params[0]
    unit = bidirectional(cell, cell) if num_dirs == 2 else cell
    if module.num_layers == 1:
        return unit, layer_params[0]
    return stacked([unit] * module.num_layers, dropout=float(module.dropout)), tuple(layer_params)


def to_torch(
    cell_or_layer: Cell | Layer, params: Params, *, module: Literal["layer", "cell"] = "layer"
) -> torch.nn.Module:
    """Builds the ``torch.nn.RNN/LSTM/GRU`` (or ``*Cell``) computing what ``cell_or_layer`` computes.

    The inverse of :func:`from_torch`. It takes a cell of :func:`recurrax.elman` (``jnp.tanh`` or
    ``jax.nn.relu``), :func:`recurrax.lstm` (with or without ``proj_size``) or :func:`recurrax.gru`
    (``reset_after=True``), and the layers :func:`from_torch` builds: :func:`recurrax.bidirectional`
    pairs (``merge="concat"``) and :func:`recurrax.stacked` stacks of such cells or pairs, all alike.

    Args:
      cell_or_layer: the cell or layer.
      params: its params, copied exactly (the module takes their dtype: float32, float64, bfloat16 or
        float16). ``b`` goes to ``b_ih``; ``b_hh`` is zeros but for the GRU's ``b_hn`` in its last block.
      module: ``"layer"``: ``torch.nn.RNN/LSTM/GRU`` with ``batch_first=True`` (recurrax is batch-major),
        called on ``(B, T, I)``. ``"cell"``: ``torch.nn.RNNCell/LSTMCell/GRUCell``, for a single cell
        without ``proj_size``, called on ``(B, I)`` as ``cell.step`` is.

    Returns:
      The module in eval mode, so a stack's dropout is off as in ``apply`` without a ``key`` (call
      ``.train()`` to turn it on); its outputs and :func:`state_to_torch` states are recurrax's.

    Raises:
      ValueError: naming the option torch has no equivalent of (``layer_norm``, ``peephole``,
        ``cell_clip``, ``reset_after=False``, ``activation``, a compute ``dtype``, ``residual``,
        ``merge``, another cell) or the setting that differs between layers or directions.
    """
    torch = _import_torch()
    if module not in ("layer", "cell"):
        raise ValueError(f"to_torch: `module` must be 'layer' or 'cell', got {module!r}.")
    grid, dropout = unit_grid(cell_or_layer, params)
    first = grid[0][0]
    num_layers, num_dirs = len(grid), len(grid[0])
    torch_name = _TORCH_NAMES[first.kind]
    dtype = getattr(torch, first.dtype)
    kwargs: dict[str, Any] = {
        "input_size": first.input_size,
        "hidden_size": first.hidden_size,
        "bias": first.bias,
        "dtype": dtype,
    }
    if first.kind == "elman":
        kwargs["nonlinearity"] = first.nonlinearity
    if module == "cell":
        if num_layers > 1 or num_dirs > 1:
            raise ValueError(
                f"to_torch: `module='cell'` builds a torch.nn.{torch_name}Cell from one cell, got "
                f"{cell_or_layer.name} ({num_layers} layers, {num_dirs} directions); use module='layer'."
            )
        if first.proj_size:
            raise ValueError(
                f"to_torch: torch.nn.LSTMCell has no projection, but the lstm cell has `proj_size={first.proj_size}`; "
                "use module='layer' (torch.nn.LSTM)."
            )
        built = getattr(torch.nn, torch_name + "Cell")(**kwargs)
        units = {"": first}
    else:
        kwargs.update(num_layers=num_layers, bidirectional=num_dirs == 2, batch_first=True)
        # torch warns about dropout on a single layer, where recurrax's has no effect either.
        kwargs["dropout"] = dropout if num_layers > 1 else 0.0
        if first.kind == "lstm":
            kwargs["proj_size"] = first.proj_size
        built = getattr(torch.nn, torch_name)(**kwargs)
        units = {f"_l{i}" + "_reverse" * d: unit for i, row in enumerate(grid) for d, unit in enumerate(row)}
    with torch.no_grad():
        for suffix, unit in units.items():
            for name, (source, value) in _torch_weights(unit).items():
                target = getattr(built, name + suffix)
                if tuple(target.shape) != value.shape:
                    raise ValueError(
                        f"to_torch: `{unit.where}{source}` must have shape {tuple(target.shape[::-1])} for "
                        f"torch's `{name}{suffix}`, got {value.shape[::-1]}."
                    )
                target.copy_(_to_tensor(torch, value, dtype))
    return built.eval()


def state_from_torch(module: Any, h0: Any, c0: Any | None = None) -> State:
    """Converts PyTorch's initial state ``h0 (L*D, B, P)`` (and ``c0 (L*D, B, H)``) to recurrax's.

    For a ``*Cell`` module the state has no layer axis: ``h0 (B, H)`` (and ``c0 (B, H)``).

    Returns:
      The state layout of the object :func:`from_torch` returns for ``module``.
    """
    mode = _check_module(module)
    if (mode == "LSTM") != (c0 is not None):
        raise ValueError(f"state_from_torch: `c0` is needed for an LSTM and only for it (module mode {mode}).")
    h0 = _to_numpy(h0)
    c0 = None if c0 is None else _to_numpy(c0)
    if _is_cell_module(module):
        return RNNState(jnp.asarray(h0)) if c0 is None else LSTMState(jnp.asarray(h0), jnp.asarray(c0))
    num_dirs = 2 if module.bidirectional else 1
    expected = module.num_layers * num_dirs
    for arg, value in (("h0", h0), ("c0", c0)):
        if value is not None and (value.ndim < 2 or value.shape[0] != expected):
            raise ValueError(
                f"state_from_torch: `{arg}` must have shape (num_layers * num_directions = {expected}, *batch, size), "
                f"got {value.shape}."
            )

    def one(index: int) -> State:
        h = jnp.asarray(h0[index])
        return RNNState(h) if c0 is None else LSTMState(h, jnp.asarray(c0[index]))

    layers = [
        BidirectionalState(one(2 * layer), one(2 * layer + 1)) if num_dirs == 2 else one(layer)
        for layer in range(module.num_layers)
    ]
    return layers[0] if module.num_layers == 1 else tuple(layers)


def state_to_torch(module: Any, state: State) -> tuple[np.ndarray, ...]:
    """Converts a recurrax final state back to PyTorch's ``h_n`` (and ``c_n``), stacked ``(L*D, ...)``.

    For a ``*Cell`` module: its ``h`` (and ``c``) as they are, ``(B, H)``.
    """
    mode = _check_module(module)
    if _is_cell_module(module):
        return tuple(np.asarray(part) for part in (state if mode == "LSTM" else (state.h,)))
    layers = [state] if module.num_layers == 1 else list(state)
    flat = []
    for layer_state in layers:
        flat.extend(layer_state if module.bidirectional else [layer_state])
    h_n = np.stack([np.asarray(s.h) for s in flat])
    if mode != "LSTM":
        return (h_n,)
    return h_n, np.stack([np.asarray(s.c) for s in flat])


def _is_cell_module(module: Any) -> bool:
    # By class name along the MRO, so subclasses convert and the check itself never imports torch.
    return any(t.__name__ in _CELL_MODULES and t.__module__.startswith("torch.nn") for t in type(module).__mro__)


def _check_module(module: Any) -> str:
    if _is_cell_module(module):
        name = next(t.__name__ for t in type(module).__mro__ if t.__name__ in _CELL_MODULES)
        mode = _CELL_MODULES[name] or ("RNN_TANH" if module.nonlinearity == "tanh" else "RNN_RELU")
    else:
        mode = getattr(module, "mode", None)
        if mode not in _MODES or not hasattr(module, "num_layers"):
            raise TypeError(
                "from_torch: expected a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, or an RNNCell, LSTMCell or "
                f"GRUCell, got {type(module).__name__}."
            )
    if any(getattr(p, "is_meta", False) for p in module.parameters()):
        raise ValueError(
            f"from_torch: the {type(module).__name__}'s parameters are on the meta device and hold no values; "
            "materialise them first (e.g. `module.to_empty(device='cpu')`, then initialise or load a state dict)."
        )
    return mode


def _cell_for(module: Any, mode: str) -> Cell:
    hidden, bias = module.hidden_size, bool(module.bias)
    dtype = _torch_dtype(module)
    if mode == "LSTM":
        proj = getattr(module, "proj_size", 0) or None
        return lstm(hidden, forget_bias=0.0, proj_size=proj, use_bias=bias, param_dtype=dtype)
    if mode == "GRU":
        return gru(hidden, reset_after=True, use_bias=bias, param_dtype=dtype)
    activation = jnp.tanh if mode == "RNN_TANH" else jax.nn.relu
    return elman(hidden, activation=activation, use_bias=bias, param_dtype=dtype)


def _cell_params(module: Any, mode: str, suffix: str) -> dict[str, jax.Array]:
    def weight(name: str) -> np.ndarray:
        full = f"{name}{suffix}"
        if not hasattr(module, full):
            raise ValueError(f"from_torch: the module has no parameter `{full}`.")
        return _to_numpy(getattr(module, full))

    params = {"w_i": weight("weight_ih").T, "w_h": weight("weight_hh").T}
    if mode == "LSTM" and getattr(module, "proj_size", 0):
        params["w_proj"] = weight("weight_hr").T
    if module.bias:
        b_ih, b_hh = weight("bias_ih"), weight("bias_hh")
        if mode == "GRU":
            hidden = module.hidden_size
            params["b"] = b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros_like(b_hh[2 * hidden :])])
            params["b_hn"] = b_hh[2 * hidden :]
        else:
            params["b"] = b_ih + b_hh
    return {k: jnp.asarray(v) for k, v in params.items()}


def _torch_dtype(module: Any):
    first = next(iter(module.parameters()))
    dtype = jnp.dtype(str(first.dtype).removeprefix("torch."))
    if dtype == jnp.float64 and jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
        # JAX would silently store the weights as float32: a converted model that no longer computes the same.
        raise ValueError(
            f"from_torch: the {type(module).__name__} is float64, but JAX runs float32 while `jax_enable_x64` is "
            "off; enable it (jax.config.update('jax_enable_x64', True)) or convert `module.float()`."
        )
    return dtype


def _to_numpy(tensor: Any) -> np.ndarray:
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            # NumPy has no bfloat16; the float32 detour is exact both ways.
            return tensor.float().numpy().astype(jnp.bfloat16)
        tensor = tensor.numpy()
    return np.asarray(tensor)


# --------------------------------------------------------------------------------------------- to_torch

_TORCH_NAMES = {"elman": "RNN", "lstm": "LSTM", "gru": "GRU"}
# The cells torch has; their options come from what built them (a cell with a replaced function is refused).
_CONVERTIBLE = ("elman", "lstm", "gru")
_LAYERS = ("cell", "stacked", "bidirectional")
_DTYPES = ("float32", "float64", "bfloat16", "float16")


class _Unit(NamedTuple):
    """One cell of the torch module: a layer's direction, with its settings read off the cell and params."""

    kind: str
    nonlinearity: str | None
    input_size: int
    hidden_size: int
    proj_size: int
    bias: bool
    dtype: str
    params: dict[str, np.ndarray]
    where: str


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError("to_torch: PyTorch is not installed (`pip install torch`).") from err
    return torch


def unit_grid(obj: Any, params: Params, fn: str = "to_torch") -> tuple[list[list[_Unit]], float]:
    """The units of ``obj`` as ``[layer][direction]``, checked alike, and the stack's dropout rate (torch's layout
    of cells and layers, also :mod:`recurrax.interop.jax_rnn`'s; errors begin with ``fn``)."""
    if isinstance(obj, Cell):
        grid, dropout = [[_unit(obj, params, "params", fn)]], 0.0
    elif isinstance(obj, Layer):
        kind, args = _layer_kind(obj, fn)
        if kind == "cell":
            grid, dropout = [[_unit(args["cell"], params, "params", fn)]], 0.0
        elif kind == "bidirectional":
            grid, dropout = [_directions(obj, args, params, "params", fn)], 0.0
        else:
            grid, dropout = _stack(args, params, fn), float(args["dropout"])
    else:
        raise TypeError(f"{fn}: `cell_or_layer` must be a recurrax.Cell or Layer, got {type(obj).__name__}.")
    first = grid[0][0]
    for row in grid:
        if len(row) != len(grid[0]):
            raise ValueError(
                f"{fn}: a torch RNN is bidirectional in every layer or in none, but `{first.where}` has "
                f"{len(grid[0])} direction(s) and `{row[0].where}` {len(row)}."
            )
        for unit in row:
            for field in ("kind", "nonlinearity", "hidden_size", "proj_size", "bias", "dtype"):
                if getattr(unit, field) != getattr(first, field):
                    what = "cell" if field == "kind" else f"`{field}`"
                    raise ValueError(
                        f"{fn}: a torch RNN has one {what} for every layer and direction, but "
                        f"`{first.where}` has {getattr(first, field)!r} and `{unit.where}` {getattr(unit, field)!r}."
                    )
    outputs = len(grid[0]) * (first.proj_size or first.hidden_size)
    for i, row in enumerate(grid):
        for unit in row:
            want = first.input_size if i == 0 else outputs
            if unit.input_size != want:
                seen = "the inputs" if i == 0 else f"the {want} outputs of layer {i - 1}"
                raise ValueError(f"{fn}: `{unit.where}['w_i']` must have {want} rows ({seen}), got {unit.input_size}.")
    return grid, dropout


def _layer_kind(layer: Layer, fn: str) -> tuple[str, dict[str, Any]]:
    """Which of recurrax's layer builders made ``layer`` (``"cell"`` for ``as_layer``), and its arguments."""
    built = built_with(layer)
    kind = {"_cell_layer": "cell"}.get(built[0], built[0]) if built is not None else None
    if kind not in _LAYERS:
        raise ValueError(
            f"{fn}: cannot tell what the layer {layer.name!r} computes; it converts cells and the layers of "
            "recurrax.stacked and recurrax.bidirectional (as from_torch builds them)."
        )
    return kind, built[1]


def _stack(args: dict[str, Any], params: Params, fn: str) -> list[list[_Unit]]:
    if args["residual"]:
        raise ValueError(
            f"{fn}: torch's multi-layer RNNs have no residual connections, but the stack was built with "
            "`residual=True`."
        )
    parts = args["layers"]
    if not isinstance(params, (tuple, list)) or len(params) != len(parts):
        is_seq = isinstance(params, (tuple, list))
        got = f"a {type(params).__name__} of length {len(params)}" if is_seq else type(params).__name__
        raise ValueError(f"{fn}: `params` must be a tuple with one entry per layer ({len(parts)}), got {got}.")
    grid = []
    for i, (part, p) in enumerate(zip(parts, params)):
        cell = single_cell(part)
        kind, sub = ("cell", {}) if cell is not None else _layer_kind(part, fn)
        if cell is not None:
            grid.append([_unit(cell, p, f"params[{i}]", fn)])
        elif kind == "bidirectional":
            grid.append(_directions(part, sub, p, f"params[{i}]", fn))
        else:
            raise ValueError(
                f"{fn}: layer {i} of the stack is itself a stack ({part.name}); each layer of a torch RNN is "
                "one cell or a bidirectional pair of cells."
            )
    return grid


def _directions(layer: Layer, args: dict[str, Any], params: Params, where: str, fn: str) -> list[_Unit]:
    merge = args["merge"]
    if not (isinstance(merge, str) and merge == "concat"):
        raise ValueError(
            f"{fn}: a bidirectional torch RNN concatenates its directions (merge='concat'), but {layer.name} "
            f"has `merge={merge!r}`."
        )
    if not (isinstance(params, Mapping) and set(params) == {"forward", "backward"}):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{fn}: `{where}` must be a dict with keys ['backward', 'forward'], got {got}.")
    units = []
    for direction in ("forward", "backward"):
        cell = single_cell(args[direction])
        if cell is None:
            raise ValueError(
                f"{fn}: the {direction} direction of {layer.name} is a layer ({args[direction].name}); each "
                "direction of a torch RNN is one cell."
            )
        units.append(_unit(cell, params[direction], f"{where}['{direction}']", fn))
    return units


def _unit(cell: Cell, params: Params, where: str, fn: str) -> _Unit:
    """The settings of one recurrax cell as torch's, refusing the options torch has no equivalent of."""
    options = _cell_options(cell, fn)
    kind = cell.name
    built = f"the {kind} cell has" if where == "params" else f"the {kind} cell of `{where}` has"
    if options["dtype"] is not None:
        raise ValueError(
            f"{fn}: a torch module computes in its parameter dtype, but {built} the compute "
            f"`dtype={jnp.dtype(options['dtype']).name}`."
        )
    nonlinearity = None
    for option, default in DEFAULT_ACTIVATIONS.items() if kind != "elman" else ():
        if options[option] is not default:
            shown = getattr(options[option], "__name__", repr(options[option]))
            raise ValueError(
                f"{fn}: torch.nn.{kind.upper()} computes with {default.__name__}, but {built} `{option}={shown}`."
            )
    if kind == "elman":
        activation = options["activation"]
        nonlinearity = "tanh" if activation is jnp.tanh else "relu" if activation is jax.nn.relu else None
        if options["residual"]:
            raise ValueError(f"{fn}: torch.nn.RNN has no residual connection, but {built} `residual=True`.")
        if nonlinearity is None:
            shown = getattr(activation, "__name__", repr(activation))
            raise ValueError(
                f"{fn}: torch.nn.RNN's nonlinearity is 'tanh' or 'relu' (jnp.tanh, jax.nn.relu), but {built} "
                f"`activation={shown}`."
            )
    elif kind == "lstm":
        for option, lacks in (("layer_norm", "layer norm"), ("peephole", "peepholes")):
            if options[option]:
                raise ValueError(f"{fn}: torch.nn.LSTM has no {lacks}, but {built} `{option}=True`.")
        if options["cell_clip"] is not None:
            raise ValueError(f"{fn}: torch.nn.LSTM has no cell clip, but {built} `cell_clip={options['cell_clip']}`.")
    elif not options["reset_after"]:
        raise ValueError(
            f"{fn}: torch.nn.GRU applies the reset gate after the recurrent matmul (reset_after=True), but "
            f"{built} `reset_after=False`."
        )
    arrays = _checked_params(cell, params, where, fn)
    dtypes = sorted({a.dtype.name for a in arrays.values()})
    if len(dtypes) > 1 or dtypes[0] not in _DTYPES:
        raise ValueError(
            f"{fn}: a torch module holds one dtype out of {list(_DTYPES)}, but `{where}` has dtype(s) {dtypes}."
        )
    gates = {"elman": 1, "lstm": 4, "gru": 3}[kind]
    return _Unit(
        kind=kind,
        nonlinearity=nonlinearity,
        input_size=arrays["w_i"].shape[0],
        hidden_size=arrays["w_h"].shape[1] // gates,
        proj_size=arrays["w_proj"].shape[1] if "w_proj" in arrays else 0,
        bias="b" in arrays,
        dtype=dtypes[0],
        params=arrays,
        where=where,
    )


def _cell_options(cell: Cell, fn: str) -> dict[str, Any]:
    """The construction options of a recurrax elman/lstm/gru cell, from what built it (:func:`core.built_with`)."""
    listed = "the elman (tanh or relu), lstm and gru cells"
    return constructor_options(cell, fn, "torch", _CONVERTIBLE, listed)[1]


def _checked_params(cell: Cell, params: Params, where: str, fn: str) -> dict[str, np.ndarray]:
    w_i = params.get("w_i") if isinstance(params, Mapping) else None
    if np.ndim(w_i) != 2:
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{fn}: `{where}` must be the params of its {cell.name} cell (from `cell.init`), got {got}.")
    try:
        # The cell's own check: the keys and shapes its `init` gives.
        jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct((1, np.shape(w_i)[0]), jnp.float32))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{fn}: `{where}` does not fit its cell: {err}") from err
    return {k: np.asarray(v) for k, v in params.items()}


def _torch_weights(unit: _Unit) -> dict[str, tuple[str, np.ndarray]]:
    """torch's parameter names (without the layer suffix) -> (the recurrax source, the value in torch's layout)."""
    p = unit.params
    out = {"weight_ih": ("['w_i']", p["w_i"].T), "weight_hh": ("['w_h']", p["w_h"].T)}
    if "w_proj" in p:
        out["weight_hr"] = ("['w_proj']", p["w_proj"].T)
    if unit.bias:
        # from_torch adds the two biases; all of it on the input side inverts that exactly (b + 0 == b)...
        b_hh = np.zeros_like(p["b"])
        if unit.kind == "gru":
            # ...but for b_hn, which the reset gate multiplies, so it stays on the recurrent side.
            b_hh[2 * unit.hidden_size :] = p["b_hn"]
        out["bias_ih"], out["bias_hh"] = ("['b']", p["b"]), ("['b']", b_hh)
    return out


def _to_tensor(torch: Any, value: np.ndarray, dtype: Any) -> Any:
    if value.dtype == jnp.bfloat16:
        # torch cannot read NumPy's bfloat16; the float32 detour is exact both ways.
        value = value.astype(np.float32)
    return torch.from_numpy(np.array(value, order="C")).to(dtype)
