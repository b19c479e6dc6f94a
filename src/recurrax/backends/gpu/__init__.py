"""GPU backends: cuDNN's LSTM through ``jax.experimental.rnn`` (:mod:`~recurrax.backends.gpu.cudnn`)."""

from recurrax.backends.gpu.cudnn import CUDNN_LSTM

__all__ = ["CUDNN_LSTM"]
