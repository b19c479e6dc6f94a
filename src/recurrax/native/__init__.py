"""Native CPU kernels for the LSTM and the reset-after GRU, built from source on first use.

:mod:`recurrax.native.build` compiles ``recurrences_cpu.cc`` with the system C++ compiler and registers
its XLA FFI targets; :mod:`recurrax.native.lstm` and :mod:`recurrax.native.gru` wrap them in JAX
primitives with jvp, transpose and batching rules. ``recurrax.lstm`` and ``recurrax.gru`` use them
automatically for float32 on CPU (:func:`applies`) from ``T * N = 128`` (``recurrax.fused.NATIVE_FROM``),
padding the hidden units to a multiple of :data:`HIDDEN_MULTIPLE` inside the call; elsewhere, or where
no compiler is found (one warning), they run in XLA as before. To run XLA's loop instead:
``cell._replace(fused=recurrax.fused.sequence_transition(kind, native=False))``.
"""

from recurrax.native._primitives import HIDDEN_MULTIPLE, applies

__all__ = ["HIDDEN_MULTIPLE", "applies"]
