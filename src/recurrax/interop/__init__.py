"""Exact weight converters from and to other libraries.

torch and equinox are imported only when one of their modules is converted; the Keras converters
take plain NumPy weight lists, so no Keras install is needed.
"""

from recurrax.interop.equinox import from_equinox, to_equinox
from recurrax.interop.flax import from_linen, from_nnx, to_linen
from recurrax.interop.jax_rnn import FlatLSTM, from_jax_rnn, to_jax_rnn
from recurrax.interop.keras import from_keras_gru, from_keras_lstm, to_keras_gru, to_keras_lstm
from recurrax.interop.torch import from_torch, state_from_torch, state_to_torch, to_torch

__all__ = [
    "FlatLSTM",
    "from_equinox",
    "from_jax_rnn",
    "from_keras_gru",
    "from_keras_lstm",
    "from_linen",
    "from_nnx",
    "from_torch",
    "state_from_torch",
    "state_to_torch",
    "to_equinox",
    "to_jax_rnn",
    "to_keras_gru",
    "to_keras_lstm",
    "to_linen",
    "to_torch",
]
