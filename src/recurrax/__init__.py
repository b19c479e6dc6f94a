"""recurrax: functional recurrent cells for JAX.

Cells are bundles of pure functions mapping ``(params, state, x) -> state``; :func:`scan` runs
them over time; :func:`stacked` and :func:`bidirectional` compose them into layers.

Submodules, imported on use: :mod:`recurrax.backends` (how a call is executed, and which backends
can), :mod:`recurrax.dynamics` (state-dynamics analysis), :mod:`recurrax.plot` (matplotlib figures),
:mod:`recurrax.flax` (linen and NNX adapters), :mod:`recurrax.interop` (weights from PyTorch, Flax and
Keras), :mod:`recurrax.distributed` and :mod:`recurrax.sequence_parallel` (several devices),
:mod:`recurrax.long_sequences` (truncated BPTT, checkpointed scans).
"""

from recurrax import init
from recurrax.cells.conv import conv_gru, conv_lstm
from recurrax.cells.elman import elman
from recurrax.cells.gru import gru
from recurrax.cells.linear import LRUState, lru, min_gru, min_lstm
from recurrax.cells.lstm import lstm
from recurrax.cells.mgu import mgu
from recurrax.core import Cell, LinearRecurrence, LSTMState, RNNState, Structure, make_cell, structure_of
from recurrax.dropout import RecurrentDropout
from recurrax.layers import BidirectionalState, Layer, as_cell, as_layer, bidirectional, output_size, stacked
from recurrax.scan import reset, reverse_sequences, scan
from recurrax.states import initial_state

__version__ = "0.1.0"

# Submodules that pull in more (optax, matplotlib, torch, orbax) load on first attribute access.
_LAZY = frozenset(
    {
        "backends",
        "distributed",
        "dynamics",
        "equinox",
        "flax",
        "interop",
        "linear_scan",
        "long_sequences",
        "plot",
        "sequence_parallel",
    }
)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"recurrax.{name}")
    raise AttributeError(f"module 'recurrax' has no attribute {name!r}")


__all__ = [
    "BidirectionalState",
    "Cell",
    "LRUState",
    "LSTMState",
    "Layer",
    "LinearRecurrence",
    "RNNState",
    "RecurrentDropout",
    "Structure",
    "as_cell",
    "as_layer",
    "bidirectional",
    "conv_gru",
    "conv_lstm",
    "elman",
    "gru",
    "init",
    "initial_state",
    "lru",
    "lstm",
    "make_cell",
    "mgu",
    "min_gru",
    "min_lstm",
    "output_size",
    "reset",
    "reverse_sequences",
    "scan",
    "stacked",
    "structure_of",
]
