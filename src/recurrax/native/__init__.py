"""Native CPU kernels, built from source on first use (see :mod:`recurrax.native.build`).

:mod:`recurrax.native.lstm` runs the LSTM recurrence, forward and backward, as XLA FFI custom calls
wrapped in JAX primitives with jvp, transpose and batching rules. ``recurrax.lstm`` uses it
automatically on CPU for float32 (through :func:`recurrax.fused.sequence_transition`); pass
``native=False`` there to run the XLA loop instead.
"""
