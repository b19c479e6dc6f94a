"""Exact weight conversion from ``torch.nn.RNN``, ``torch.nn.LSTM`` and ``torch.nn.GRU``.

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
``time_major=True`` (or transpose) to get the same layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.cells.elman import elman
from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.core import Cell, LSTMState, Params, RNNState, State
from recurrax.layers import BidirectionalState, Layer, bidirectional, stacked

_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


def from_torch(module: Any) -> tuple[Cell | Layer, Params]:
    """Converts a ``torch.nn.RNN/LSTM/GRU`` (any ``num_layers``, ``bidirectional``, ``proj_size``).

    Args:
      module: the torch module; its weights are copied (float32 or float64, as stored).

    Returns:
      ``(cell, params)`` for a single unidirectional layer, else ``(layer, params)``; the outputs and
      final states equal the module's to float rounding.
    """
    mode = _check_module(module)
    num_dirs = 2 if module.bidirectional else 1
    cell = _cell_for(module, mode)
    layer_params = []
    for layer in range(module.num_layers):
        dirs = [_cell_params(module, mode, layer, "_reverse" * d) for d in range(num_dirs)]
        layer_params.append({"forward": dirs[0], "backward": dirs[1]} if num_dirs == 2 else dirs[0])
    if module.num_layers == 1 and num_dirs == 1:
        return cell, layer_params[0]
    unit = bidirectional(cell, cell) if num_dirs == 2 else cell
    if module.num_layers == 1:
        return unit, layer_params[0]
    return stacked([unit] * module.num_layers, dropout=float(module.dropout)), tuple(layer_params)


def state_from_torch(module: Any, h0: Any, c0: Any | None = None) -> State:
    """Converts PyTorch's initial state ``h0 (L*D, B, P)`` (and ``c0 (L*D, B, H)``) to recurrax's.

    Returns:
      The state layout of the object :func:`from_torch` returns for ``module``.
    """
    mode = _check_module(module)
    if (mode == "LSTM") != (c0 is not None):
        raise ValueError(f"state_from_torch: `c0` is needed for an LSTM and only for it (module mode {mode}).")
    h0 = _to_numpy(h0)
    c0 = None if c0 is None else _to_numpy(c0)
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
    """Converts a recurrax final state back to PyTorch's ``h_n`` (and ``c_n``), stacked ``(L*D, ...)``."""
    mode = _check_module(module)
    layers = [state] if module.num_layers == 1 else list(state)
    flat = []
    for layer_state in layers:
        flat.extend(layer_state if module.bidirectional else [layer_state])
    h_n = np.stack([np.asarray(s.h) for s in flat])
    if mode != "LSTM":
        return (h_n,)
    return h_n, np.stack([np.asarray(s.c) for s in flat])


def _check_module(module: Any) -> str:
    mode = getattr(module, "mode", None)
    if mode not in _MODES or not hasattr(module, "num_layers"):
        raise TypeError(
            f"from_torch: expected a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, got {type(module).__name__}."
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


def _cell_params(module: Any, mode: str, layer: int, suffix: str) -> dict[str, jax.Array]:
    def weight(name: str) -> np.ndarray:
        full = f"{name}_l{layer}{suffix}"
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
    return jnp.dtype(str(first.dtype).removeprefix("torch."))


def _to_numpy(tensor: Any) -> np.ndarray:
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            # NumPy has no bfloat16; the float32 detour is exact both ways.
            return tensor.float().numpy().astype(jnp.bfloat16)
        tensor = tensor.numpy()
    return np.asarray(tensor)
