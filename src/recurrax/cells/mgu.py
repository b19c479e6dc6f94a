"""Minimal gated unit (Zhou et al., 2016): a GRU with a single forget gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from recurrax import init as _init
from recurrax.cells._common import check_activation, check_options, check_size, gate_params, matmul, zeros_state
from recurrax.core import Cell, RNNState, Structure, constructor, make_cell


@constructor
def mgu(
    hidden_size: int,
    *,
    init: str | _init.Scheme = "pytorch",
    chrono_t_max: float | None = None,
    variant: str = "recurrax",
    use_bias: bool = True,
    gate_activation: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""A minimal gated unit; state ``RNNState(h)``, gate order f, n::

        f = σ(z_f + h W_hf),   n = tanh(z_n + (f ⊙ h) W_hn),   h' = (1 - f) ⊙ h + f ⊙ n
        z = x W_i + b

    Params: ``w_i: (I, 2H)``, ``w_h: (H, 2H)`` and, with ``use_bias``, ``b: (2H,)``.

    ``variant="flax"`` is Flax linen's ``MGUCell`` (``reset_gate=True``), a different function on the same
    weights: ``f`` keeps rather than writes, and it gates the candidate's recurrent term after the matmul, which
    has its own bias ``b_hn: (H,)``::

        f = σ(z_f + h W_hf),   n = tanh(z_n + f ⊙ (h W_hn + b_hn)),   h' = (1 - f) ⊙ n + f ⊙ h

    Args:
      hidden_size: ``H``.
      init: an :mod:`recurrax.init` scheme name or :class:`recurrax.init.Scheme`.
      chrono_t_max: chrono initialisation; ``f`` is a *write* gate here, so ``b_f = -log U(1, T_max - 1)``
        (``+log U`` in the Flax variant, where it keeps).
      variant: ``"recurrax"`` (above) or ``"flax"``.
      use_bias: whether ``b`` (and, in the Flax variant, ``b_hn``) exist.
      gate_activation: the σ of ``f``, any elementwise function (Flax's ``gate_fn``).
      activation: the tanh of ``n`` (Flax's ``activation_fn``).
      param_dtype: dtype of the params and the state.
      dtype: compute dtype of the matmuls, accumulated in float32.
    """
    name = "mgu"
    check_size(name, "hidden_size", hidden_size)
    check_options(name, param_dtype=param_dtype, dtype=dtype, chrono_t_max=chrono_t_max, use_bias=use_bias)
    check_activation(name, "gate_activation", gate_activation)
    check_activation(name, "activation", activation)
    if variant not in ("recurrax", "flax"):
        raise ValueError(f"{name}: `variant` must be 'recurrax' or 'flax', got {variant!r}.")
    flax = variant == "flax"
    H = hidden_size
    scheme = _init.resolve(init, H)

    def init_fn(key, input_size: int):
        check_size(name, "input_size", input_size)
        k_gates, k_chrono = jax.random.split(key)
        params = gate_params(k_gates, input_size, H, H, 2, scheme, param_dtype, use_bias=use_bias)
        if chrono_t_max is not None:
            b_f = _init.chrono_bias(k_chrono, H, chrono_t_max, param_dtype)
            params["b"] = params["b"].at[:H].set(b_f if flax else -b_f)
        if flax and use_bias:
            params["b_hn"] = jnp.zeros((H,), param_dtype)
        return params

    def initial_state(params, batch_shape):
        return RNNState(h=zeros_state(batch_shape, H, params["w_h"].dtype))

    def project(params, x):
        z = matmul(x, params["w_i"], dtype)
        return z + params["b"] if use_bias else z

    def masked(params, state, z, h_in):
        # `h_in` is what the recurrent matmuls see (h, or h with recurrent dropout); the update mixes h itself.
        h = state.h
        z_f, z_n = jnp.split(z, 2, axis=-1)
        f = gate_activation(z_f + matmul(h_in, params["w_h"][:, :H], dtype))
        if flax:
            h_n = matmul(h_in, params["w_h"][:, H:], dtype)
            n = activation(z_n + f * (h_n + params["b_hn"] if use_bias else h_n))
            h_new = (1.0 - f) * n + f * h
        else:
            n = activation(z_n + matmul(f * h_in, params["w_h"][:, H:], dtype))
            h_new = (1.0 - f) * h + f * n
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
        structure=Structure(gates=2, masked=lambda params, state, z, mask: masked(params, state, z, state.h * mask)),
    )
