"""The Elman (vanilla) RNN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from recurrax import init as _init
from recurrax.cells._common import check_activation, check_options, check_size, gate_params, matmul, zeros_state
from recurrax.core import Cell, RNNState, Structure, constructor, make_cell


@constructor
def elman(
    hidden_size: int,
    *,
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    residual: bool = False,
    use_bias: bool = True,
    init: str | _init.Scheme = "pytorch",
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""The Elman RNN; state ``RNNState(h)``::

        h' = activation(x W_i + b + h W_h [+ h])

    Params: ``w_i: (I, H)``, ``w_h: (H, H)`` and, with ``use_bias``, ``b: (H,)`` (PyTorch's
    ``b_ih + b_hh``).

    Args:
      hidden_size: ``H``.
      activation: any elementwise function: ``jnp.tanh`` (default), ``jax.nn.relu``, or
        ``lambda a: a`` for a linear RNN.
      residual: add ``h`` inside the activation (Flax's ``SimpleCell(residual=True)``).
      use_bias: whether ``b`` exists.
      init: an :mod:`recurrax.init` scheme name or :class:`recurrax.init.Scheme`.
      param_dtype: dtype of the params and the state.
      dtype: compute dtype of the matmuls, accumulated in float32.
    """
    name = "elman"
    check_size(name, "hidden_size", hidden_size)
    check_options(name, param_dtype=param_dtype, dtype=dtype)
    check_activation(name, "activation", activation)
    H = hidden_size
    scheme = _init.resolve(init, H)

    def init_fn(key, input_size: int):
        check_size(name, "input_size", input_size)
        return gate_params(key, input_size, H, H, 1, scheme, param_dtype, use_bias=use_bias)

    def initial_state(params, batch_shape):
        return RNNState(h=zeros_state(batch_shape, H, params["w_h"].dtype))

    def project(params, x):
        z = matmul(x, params["w_i"], dtype)
        return z + params["b"] if use_bias else z

    def masked(params, state, z, h_in):
        # `h_in` is what the recurrent matmul sees (h, or h with recurrent dropout); the residual adds h itself.
        h = state.h
        pre = z + matmul(h_in, params["w_h"], dtype)
        h_new = activation(pre + h if residual else pre)
        return RNNState(h=h_new.astype(h.dtype))

    def transition(params, state, z):
        return masked(params, state, z, state.h)

    return make_cell(
        name,
        init=init_fn,
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["w_i"].shape[0],
        structure=Structure(masked=lambda params, state, z, mask: masked(params, state, z, state.h * mask)),
    )
