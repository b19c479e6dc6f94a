"""Long short-term memory (Hochreiter & Schmidhuber, 1997), with the usual variants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from recurrax import init as _init
from recurrax.cells import _common
from recurrax.cells._common import (
    check_activation,
    check_number,
    check_options,
    check_size,
    default_activations,
    gate_params,
    matmul,
    zeros_state,
)
from recurrax.core import Cell, LSTMState, Structure, constructor, make_cell


@constructor
def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    peephole: bool = False,
    proj_size: int | None = None,
    layer_norm: bool = False,
    cell_clip: float | None = None,
    init: str | _init.Scheme = "pytorch",
    chrono_t_max: float | None = None,
    use_bias: bool = True,
    gate_activation: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid,
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""An LSTM cell; state ``LSTMState(h, c)``, gate order i, f, g, o (as PyTorch).

    .. math::
        i, f, g, o = \sigma(z_i + h W_{hi}),\ \sigma(z_f + h W_{hf}),\ \tanh(z_g + h W_{hg}),\
                     \sigma(z_o + h W_{ho}), \qquad z = x W_i + b \\
        c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh(c') \quad [\,h' \leftarrow h' W_{proj}\,]

    Params: ``w_i: (I, 4H)``, ``w_h: (P, 4H)``, ``b: (4H,)`` (PyTorch's ``b_ih + b_hh``), where
    ``P = proj_size or H``; optionally ``w_peep: (3, H)`` (rows i, f, o), ``w_proj: (H, P)``, and
    ``ln_i, ln_h: (4H,)``, ``ln_c_scale, ln_c_bias: (H,)``.

    Args:
      hidden_size: ``H``, the size of the cell state ``c``.
      forget_bias: added to the forget-gate bias *at init* (Jozefowicz et al., 2015), so params
        describe the whole computation and converted weights compute what they did.
      peephole: Gers & Schmidhuber peepholes: ``i`` and ``f`` see ``c``, ``o`` sees ``c'``
        (diagonal weights).
      proj_size: LSTMP (Sak et al., 2014; PyTorch's ``proj_size``): ``h`` has ``proj_size`` units,
        ``c`` keeps ``hidden_size``.
      layer_norm: Ba et al. (2016): ``gates = LN(x W_i) ln_i + LN(h W_h) ln_h + b`` (gain only; the
        gate bias plays the LN bias) and ``h' = o * tanh(LN(c') ln_c_scale + ln_c_bias)``. The
        input-side norm is time-parallel, so it stays in ``project``.
      cell_clip: clip ``c'`` to ``[-cell_clip, cell_clip]`` (as TF's ``LSTMCell``).
      init: an :mod:`recurrax.init` scheme name or :class:`recurrax.init.Scheme`.
      chrono_t_max: chrono initialisation: ``b_f = log U(1, T_max - 1)``, ``b_i = -b_f``
        (replaces ``forget_bias``).
      use_bias: whether ``b`` exists.
      gate_activation: the σ of ``i``, ``f`` and ``o`` (Flax's ``gate_fn``, Keras's ``recurrent_activation``),
        any elementwise function.
      activation: the tanh of ``g`` and of ``c'`` (Flax's ``activation_fn``, Keras's ``activation``). The
        sequence-level backends run the defaults only; other functions run on the generic loop.
      param_dtype: dtype of the params (and of the state).
      dtype: compute dtype of the matmuls (e.g. ``jnp.bfloat16``), accumulated in float32; the
        gate math and the state stay in ``param_dtype``.

    Returns:
      A :class:`recurrax.Cell`.
    """
    name = "lstm"
    check_size(name, "hidden_size", hidden_size)
    check_size(name, "proj_size", proj_size, allow_none=True)
    if proj_size is not None and proj_size >= hidden_size:
        # PyTorch's rule: a projection is a bottleneck; proj_size == H would silently add a free (H, H) map.
        raise ValueError(f"lstm: `proj_size` must be smaller than hidden_size={hidden_size}, got {proj_size}.")
    check_number(name, "forget_bias", forget_bias)
    check_number(name, "cell_clip", cell_clip, above=0, allow_none=True)
    check_options(name, param_dtype=param_dtype, dtype=dtype, chrono_t_max=chrono_t_max, use_bias=use_bias)
    check_activation(name, "gate_activation", gate_activation)
    check_activation(name, "activation", activation)
    H = hidden_size
    P = proj_size or hidden_size
    scheme = _init.resolve(init, H)

    def init_fn(key, input_size: int):
        check_size(name, "input_size", input_size)
        k_gates, k_peep, k_proj, k_chrono = jax.random.split(key, 4)
        params = gate_params(k_gates, input_size, P, H, 4, scheme, param_dtype, use_bias=use_bias)
        if use_bias:
            b = params["b"].at[H : 2 * H].add(forget_bias)
            if chrono_t_max is not None:
                b_f = _init.chrono_bias(k_chrono, H, chrono_t_max, param_dtype)
                b = b.at[:H].set(-b_f).at[H : 2 * H].set(b_f)
            params["b"] = b
        if peephole:
            params["w_peep"] = scheme.bias(k_peep, (3, H), param_dtype)
        if proj_size is not None:
            params["w_proj"] = scheme.kernel(k_proj, (H, P), param_dtype)
        if layer_norm:
            params["ln_i"] = jnp.ones((4 * H,), param_dtype)
            params["ln_h"] = jnp.ones((4 * H,), param_dtype)
            params["ln_c_scale"] = jnp.ones((H,), param_dtype)
            params["ln_c_bias"] = jnp.zeros((H,), param_dtype)
        return params

    def initial_state(params, batch_shape):
        dt = params["w_h"].dtype
        return LSTMState(h=zeros_state(batch_shape, P, dt), c=zeros_state(batch_shape, H, dt))

    def project(params, x):
        z = matmul(x, params["w_i"], dtype)
        if layer_norm:
            z = _common.layer_norm(z, params["ln_i"])
        if use_bias:
            z = z + params["b"]
        return z

    def transition(params, state, z):
        h, c = state
        zh = matmul(h, params["w_h"], dtype)
        if layer_norm:
            zh = _common.layer_norm(zh, params["ln_h"])
        i, f, g, o = jnp.split(z + zh, 4, axis=-1)
        if peephole:
            p_i, p_f, p_o = params["w_peep"]
            i = i + p_i * c
            f = f + p_f * c
        c_new = gate_activation(f) * c + gate_activation(i) * activation(g)
        if cell_clip is not None:
            c_new = jnp.clip(c_new, -cell_clip, cell_clip)
        if peephole:
            o = o + p_o * c_new
        c_out = _common.layer_norm(c_new, params["ln_c_scale"], params["ln_c_bias"]) if layer_norm else c_new
        h_new = gate_activation(o) * activation(c_out)
        if proj_size is not None:
            h_new = matmul(h_new, params["w_proj"], dtype)
        return LSTMState(h=h_new.astype(h.dtype), c=c_new.astype(c.dtype))

    defaults = default_activations(gate_activation, activation)
    plain = not (peephole or layer_norm) and proj_size is None and cell_clip is None and dtype is None
    plain = plain and defaults
    return make_cell(
        name,
        init=init_fn,
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["w_i"].shape[0],
        # The plain variant is the LSTM that recurrax.backends' sequence-level kernels run.
        structure=Structure(
            "lstm" if plain else None,
            gates=4,
            # h enters only the recurrent matmul, so recurrent dropout is the transition of the masked state.
            masked=lambda params, state, z, mask: transition(params, state._replace(h=state.h * mask), z),
        ),
    )
