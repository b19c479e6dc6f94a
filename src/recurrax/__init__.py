"""recurrax: functional recurrent cells for JAX.

Cells are bundles of pure functions mapping ``(params, state, x) -> state``; :func:`scan` runs
them over time; :func:`stacked` and :func:`bidirectional` compose them into layers.
"""

from recurrax import init
from recurrax.cells.elman import elman
from recurrax.cells.gru import gru
from recurrax.cells.lstm import lstm
from recurrax.cells.mgu import mgu
from recurrax.core import Cell, LSTMState, RNNState, make_cell
from recurrax.layers import BidirectionalState, Layer, as_layer, bidirectional, output_size, stacked
from recurrax.scan import reverse_sequences, scan

__version__ = "0.1.0"

__all__ = [
    "BidirectionalState",
    "Cell",
    "LSTMState",
    "Layer",
    "RNNState",
    "as_layer",
    "bidirectional",
    "elman",
    "gru",
    "init",
    "lstm",
    "make_cell",
    "mgu",
    "output_size",
    "reverse_sequences",
    "scan",
    "stacked",
]
