"""Exact conversion from and to the flat LSTM weight vector of ``jax.experimental.rnn`` (cuDNN's layout).

``jax.experimental.rnn.lstm`` (and its CPU reference ``lstm_ref``) takes one flat vector: for every layer and
direction (``l = layer * num_directions + direction``) ``W_ih (4H, I_l)`` then ``W_hh (4H, H)``, and after all of
them, in the same order, ``b_ih (4H,)`` and ``b_hh (4H,)``; gate order i, f, g, o, as PyTorch's ``nn.LSTM``.
The result has the layout of :func:`recurrax.interop.from_torch`: ``(cell, params)`` for one layer and one
direction, else the :func:`recurrax.bidirectional` / :func:`recurrax.stacked` layer with its params.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from recurrax import layers
from recurrax.cells.lstm import lstm
from recurrax.core import Cell, Params
from recurrax.interop.torch import unit_grid
from recurrax.layers import Layer


class FlatLSTM(NamedTuple):
    """``jax.experimental.rnn.lstm``'s weights and the sizes it is called with."""

    weights: np.ndarray
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool


def _sizes(input_size: int, hidden_size: int, num_layers: int, num_dirs: int) -> list[tuple[int, int]]:
    """``(rows, columns)`` of each ``W_ih`` then ``W_hh``, per layer and direction, as cuDNN orders them."""
    shapes = []
    for layer in range(num_layers):
        for _ in range(num_dirs):
            shapes += [(4 * hidden_size, input_size if layer == 0 else num_dirs * hidden_size)]
            shapes += [(4 * hidden_size, hidden_size)]
    return shapes


def from_jax_rnn(
    weights: np.ndarray, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False
) -> tuple[Cell | Layer, Params]:
    """The recurrax LSTM (or layer) computing ``jax.experimental.rnn.lstm`` with these flat ``weights``.

    Args:
      weights: the flat vector, ``(get_num_params_in_lstm(...),)``, float32.
      input_size, hidden_size, num_layers, bidirectional: as passed to ``jax.experimental.rnn.lstm``.
    """
    weights = np.asarray(weights)
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"from_jax_rnn: `{name}` must be a positive int, got {value!r}.")
    num_dirs = 2 if bidirectional else 1
    shapes = _sizes(input_size, hidden_size, num_layers, num_dirs)
    expected = sum(r * c for r, c in shapes) + 2 * 4 * hidden_size * num_layers * num_dirs
    if weights.ndim != 1 or weights.shape[0] != expected:
        raise ValueError(
            f"from_jax_rnn: `weights` must be a flat vector of {expected} values for input_size={input_size}, "
            f"hidden_size={hidden_size}, num_layers={num_layers}, bidirectional={bidirectional}, got shape "
            f"{weights.shape}."
        )
    offset, matrices = 0, []
    for rows, cols in shapes:
        matrices.append(weights[offset : offset + rows * cols].reshape(rows, cols))
        offset += rows * cols
    biases = weights[offset:].reshape(-1, 4 * hidden_size)
    units = [
        {
            "w_i": jnp.asarray(matrices[2 * u].T),
            "w_h": jnp.asarray(matrices[2 * u + 1].T),
            "b": jnp.asarray(biases[2 * u] + biases[2 * u + 1]),
        }
        for u in range(num_layers * num_dirs)
    ]
    cell = lstm(hidden_size, forget_bias=0.0, param_dtype=weights.dtype)
    per_layer = [
        {"forward": units[2 * i], "backward": units[2 * i + 1]} if num_dirs == 2 else units[i]
        for i in range(num_layers)
    ]
    unit = layers.bidirectional(cell, cell) if num_dirs == 2 else cell
    if num_layers == 1:
        return unit, per_layer[0]
    return layers.stacked([unit] * num_layers), tuple(per_layer)


def to_jax_rnn(cell_or_layer: Cell | Layer, params: Params) -> FlatLSTM:
    """The flat weights (and sizes) of ``jax.experimental.rnn.lstm`` computing ``cell_or_layer``; the inverse of
    :func:`from_jax_rnn` (``b`` goes to ``b_ih``, zeros to ``b_hh``). It takes the plain LSTM
    (:func:`recurrax.lstm` with a bias and no option cuDNN lacks) and the stacked / bidirectional layers of it
    that :func:`from_jax_rnn` builds; anything else is refused by name."""
    grid, dropout = unit_grid(cell_or_layer, params, fn="to_jax_rnn")
    first = grid[0][0]
    if first.kind != "lstm":
        raise ValueError(f"to_jax_rnn: jax.experimental.rnn runs only the LSTM, got the {first.kind} cell.")
    if first.proj_size:
        raise ValueError(
            f"to_jax_rnn: jax.experimental.rnn has no projection, but the lstm has `proj_size={first.proj_size}`."
        )
    if not first.bias:
        raise ValueError(
            "to_jax_rnn: jax.experimental.rnn's LSTM always has biases, but the lstm has `use_bias=False`."
        )
    if first.dtype != "float32":
        raise ValueError(f"to_jax_rnn: jax.experimental.rnn runs float32, but the params are {first.dtype}.")
    if dropout:
        raise ValueError(
            f"to_jax_rnn: the stack's `dropout={dropout}` is not part of the flat weights; pass it to "
            "jax.experimental.rnn.lstm's `dropout` and build the stack without it."
        )
    units = [unit for row in grid for unit in row]
    parts = [p for u in units for p in (u.params["w_i"].T.ravel(), u.params["w_h"].T.ravel())]
    parts += [p for u in units for p in (u.params["b"], np.zeros_like(u.params["b"]))]
    return FlatLSTM(np.concatenate(parts), first.input_size, first.hidden_size, len(grid), len(grid[0]) == 2)


__all__ = ["FlatLSTM", "from_jax_rnn", "to_jax_rnn"]
