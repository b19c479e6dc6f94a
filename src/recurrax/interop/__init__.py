"""Exact weight converters from and to other libraries.

torch and equinox are imported only when one of their modules is converted, Keras only by ``to_keras``
(which builds a Keras layer); the other Keras converters take plain NumPy weight lists or layer objects.

The Haiku converters (``from_haiku``, ``to_haiku``: ``hk.LSTM``, ``hk.GRU``, ``hk.VanillaRNN``) read and
write plain Haiku params dicts, so no Haiku install is needed.
"""

from recurrax.interop.equinox import from_equinox, to_equinox
from recurrax.interop.flax import from_linen, from_nnx, to_linen, to_nnx
from recurrax.interop.haiku import from_haiku, to_haiku
from recurrax.interop.jax_rnn import FlatLSTM, from_jax_rnn, to_jax_rnn
from recurrax.interop.keras import (
    from_keras,
    from_keras_bidirectional,
    from_keras_gru,
    from_keras_lstm,
    from_keras_simple_rnn,
    to_keras,
    to_keras_bidirectional,
    to_keras_gru,
    to_keras_lstm,
    to_keras_simple_rnn,
)
from recurrax.interop.torch import from_torch, state_from_torch, state_to_torch, to_torch

__all__ = [
    "FlatLSTM",
    "from_equinox",
    "from_haiku",
    "from_jax_rnn",
    "from_keras",
    "from_keras_bidirectional",
    "from_keras_gru",
    "from_keras_lstm",
    "from_keras_simple_rnn",
    "from_linen",
    "from_nnx",
    "from_torch",
    "state_from_torch",
    "state_to_torch",
    "to_equinox",
    "to_haiku",
    "to_jax_rnn",
    "to_keras",
    "to_keras_bidirectional",
    "to_keras_gru",
    "to_keras_lstm",
    "to_keras_simple_rnn",
    "to_linen",
    "to_nnx",
    "to_torch",
]
