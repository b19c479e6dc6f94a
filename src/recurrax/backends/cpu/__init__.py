"""The native CPU backends: LSTM and reset-after GRU kernels built from source on first use.

:mod:`~recurrax.backends.cpu.build` compiles ``recurrences_cpu.cc`` with the system C++ compiler and registers its
XLA FFI targets; :mod:`~recurrax.backends.cpu.lstm` and :mod:`~recurrax.backends.cpu.gru` wrap them in JAX
primitives with jvp, transpose and batching rules; :mod:`~recurrax.backends.cpu.native` holds the
``native_lstm`` and ``native_gru`` backends. Where no compiler is found (one warning), they report themselves
unavailable and ``auto`` runs XLA.
"""

from recurrax.backends.cpu._primitives import HIDDEN_MULTIPLE
from recurrax.backends.cpu.native import GRU, LSTM

__all__ = ["GRU", "HIDDEN_MULTIPLE", "LSTM"]
