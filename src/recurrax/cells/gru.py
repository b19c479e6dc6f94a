"""Gated recurrent unit (Cho et al., 2014), in both the cuDNN/PyTorch and the original form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from recurrax import init as _init
from recurrax.cells._common import (
    check_activation,
    check_options,
    check_size,
    default_activations,
    gate_params,
    matmul,
    zeros_state,
)
from recurrax.core import Cell, RNNState, Structure, constructor, make_cell


@constructor
def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    init: str | _init.Scheme = "pytorch",
    chrono_t_max: float | None = None,
    use_bias: bool = True,
    gate_activation: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""A GRU cell; state ``RNNState(h)``, gate order r, z, n (as PyTorch).

    With ``reset_after=True`` (cuDNN, PyTorch, Keras's default)::

        r = σ(z_r + h W_hr),  u = σ(z_z + h W_hz),  n = tanh(z_n + r ⊙ (h W_hn + b_hn))
        h' = (1 - u) ⊙ n + u ⊙ h,            z = x W_i + b

    With ``reset_after=False`` (Cho et al., 2014): ``n = tanh(z_n + (r ⊙ h) W_hn)``.

    Params: ``w_i: (I, 3H)``, ``w_h: (H, 3H)``, ``b: (3H,)`` (for r and z PyTorch's
    ``b_ih + b_hh``, for n its ``b_in``) and, with ``reset_after``, ``b_hn: (H,)``.

    Args:
      hidden_size: ``H``.
      reset_after: where the reset gate applies (see above).
      init: an :mod:`recurrax.init` scheme name or :class:`recurrax.init.Scheme`.
      chrono_t_max: chrono initialisation of the update-gate bias, ``b_z = log U(1, T_max - 1)``.
      use_bias: whether ``b`` and ``b_hn`` exist.
      gate_activation: the σ of ``r`` and ``u`` (Flax's ``gate_fn``, Keras's ``recurrent_activation``), any
        elementwise function.
      activation: the tanh of ``n`` (Flax's ``activation_fn``, Keras's ``activation``). The sequence-level
        backends run the defaults only; other functions run on the generic loop.
      param_dtype: dtype of the params and the state.
      dtype: compute dtype of the matmuls, accumulated in float32.
    """
    name = "gru"
    check_size(name, "hidden_size", hidden_size)
    check_options(name, param_dtype=param_dtype, dtype=dtype, chrono_t_max=chrono_t_max, use_bias=use_bias)
    check_activation(name, "gate_activation", gate_activation)
    check_activation(name, "activation", activation)
    H = hidden_size
    scheme = _init.resolve(init, H)

    def init_fn(key, input_size: int):
        check_size(name, "input_size", input_size)
        k_gates, k_hn, k_chrono = jax.random.split(key, 3)
        params = gate_params(k_gates, input_size, H, H, 3, scheme, param_dtype, use_bias=use_bias)
        if chrono_t_max is not None:
            b_z = _init.chrono_bias(k_chrono, H, chrono_t_max, param_dtype)
            params["b"] = params["b"].at[H : 2 * H].set(b_z)
        if reset_after and use_bias:
            params["b_hn"] = scheme.bias(k_hn, (H,), param_dtype)
        return params

    def initial_state(params, batch_shape):
        return RNNState(h=zeros_state(batch_shape, H, params["w_h"].dtype))

    def project(params, x):
        z = matmul(x, params["w_i"], dtype)
        return z + params["b"] if use_bias else z

    def masked(params, state, z, h_in):
        # `h_in` is what the recurrent matmuls see (h, or h with recurrent dropout); the update mixes h itself.
        h = state.h
        z_r, z_z, z_n = jnp.split(z, 3, axis=-1)
        if reset_after:
            h_r, h_z, h_n = jnp.split(matmul(h_in, params["w_h"], dtype), 3, axis=-1)
            r = gate_activation(z_r + h_r)
            u = gate_activation(z_z + h_z)
            if use_bias:
                h_n = h_n + params["b_hn"]
            n = activation(z_n + r * h_n)
        else:
            h_r, h_z = jnp.split(matmul(h_in, params["w_h"][:, : 2 * H], dtype), 2, axis=-1)
            r = gate_activation(z_r + h_r)
            u = gate_activation(z_z + h_z)
            n = activation(z_n + matmul(r * h_in, params["w_h"][:, 2 * H :], dtype))
        h_new = (1.0 - u) * n + u * h
        return RNNState(h=h_new.astype(h.dtype))

    def transition(params, state, z):
        return masked(params, state, z, state.h)

    defaults = default_activations(gate_activation, activation)
    return make_cell(
        name,
        init=init_fn,
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["w_i"].shape[0],
        # The plain reset-after GRU is the one recurrax.backends' sequence-level kernels run.
        structure=Structure(
            "gru" if reset_after and dtype is None and defaults else None,
            gates=3,
            masked=lambda params, state, z, mask: masked(params, state, z, state.h * mask),
        ),
    )
