"""Pieces every cell family shares: argument checks, mixed-precision matmul, gate parameters."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import init as _init

Array = jax.Array


def check_size(cell: str, arg: str, value: Any, *, allow_none: bool = False) -> None:
    """Raises unless ``value`` is a positive int (or ``None`` where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{cell}: `{arg}` must be a positive int, got {value!r}.")


def check_number(cell: str, arg: str, value: Any, *, above: float | None = None, allow_none: bool = False) -> None:
    """Raises unless ``value`` is a finite real number (``> above`` where given; ``None`` where allowed)."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or (above is not None and not value > above):
        bound = "" if above is None else f" > {above}"
        raise ValueError(f"{cell}: `{arg}` must be a finite number{bound}, got {value!r}.")


def check_options(
    cell: str, *, param_dtype: Any, dtype: Any | None = None, chrono_t_max: Any = None, use_bias: bool = True
) -> None:
    """The construction checks of the options most cells share: dtypes and the chrono initialisation."""
    for arg, value in (("param_dtype", param_dtype), ("dtype", dtype)):
        if value is None and arg == "dtype":
            continue
        try:
            floating = jnp.issubdtype(jnp.dtype(value), jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise ValueError(
                f"{cell}: `{arg}` must be a real floating-point dtype (float32, bfloat16, ...), got {value!r}."
            )
    # The chrono bias draws from U(1, t_max - 1): t_max must exceed 2 (recurrax.init.chrono_bias).
    check_number(cell, "chrono_t_max", chrono_t_max, above=2, allow_none=True)
    if chrono_t_max is not None and not use_bias:
        raise ValueError(f"{cell}: `chrono_t_max` initialises the gate bias, so it needs use_bias=True.")


# The gate and candidate functions of the classic cells by default: the ones the sequence-level backends and the
# torch, Haiku and Equinox cells compute (compared by identity, so a cell built with them keeps its fast path).
DEFAULT_ACTIVATIONS = {"gate_activation": jax.nn.sigmoid, "activation": jnp.tanh}


def default_activations(gate_activation: Any, activation: Any) -> bool:
    """Whether a cell's ``gate_activation`` and ``activation`` are :data:`DEFAULT_ACTIVATIONS` (the same objects)."""
    return gate_activation is DEFAULT_ACTIVATIONS["gate_activation"] and activation is DEFAULT_ACTIVATIONS["activation"]


def check_activation(cell: str, arg: str, fn: Any) -> None:
    """Raises unless ``fn`` is a function mapping an array to one of the same shape (checked abstractly)."""
    if not callable(fn):
        raise TypeError(f"{cell}: `{arg}` must be an elementwise function (jnp.tanh, jax.nn.sigmoid, ...), got {fn!r}.")
    probe = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    try:
        out = jax.eval_shape(fn, probe)
    except Exception as err:  # whatever the user's function raises, said with the argument's name
        raise TypeError(
            f"{cell}: `{arg}` must map an array to an array of the same shape; on a (2, 3) "
            f"float32 array it raised {type(err).__name__}: {err}"
        ) from err
    if getattr(out, "shape", None) != (2, 3):
        raise ValueError(
            f"{cell}: `{arg}` must be elementwise (an array to one of the same shape), but it maps a (2, 3) "
            f"array to {getattr(out, 'shape', type(out).__name__)}."
        )


def matmul(x: Array, w: Array, dtype: Any | None) -> Array:
    """``x @ w``; with a compute ``dtype`` both operands are cast to it and accumulated in >= float32.

    This is the mixed-precision policy: bf16/fp16 matmuls, float32 results for the gate math.
    """
    # As one (rows, I) @ (I, G) matmul whatever the leading axes: the reverse-mode weight gradient then
    # contracts a single axis, and XLA's CPU backend does not copy a transposed (rows, G) cotangent for it
    # (benchmarks/RESULTS.md, step 14).
    rows = x.reshape(-1, x.shape[-1])
    if dtype is None:
        z = rows @ w
    else:
        z = jnp.matmul(
            rows.astype(dtype), w.astype(dtype), preferred_element_type=jnp.promote_types(dtype, jnp.float32)
        )
    return z.reshape(*x.shape[:-1], w.shape[-1])


def layer_norm(x: Array, scale: Array, bias: Array | None = None, eps: float = 1e-5) -> Array:
    """Layer normalisation over the last axis (Ba et al., 2016), computed in >= float32."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps) * scale
    return y if bias is None else y + bias


def gate_params(
    key: Array,
    input_size: int,
    recurrent_size: int,
    hidden_size: int,
    num_gates: int,
    scheme: _init.Scheme,
    dtype: Any,
    *,
    use_bias: bool = True,
) -> dict[str, Array]:
    """``w_i: (I, G*H)``, ``w_h: (R, G*H)`` and, with ``use_bias``, ``b: (G*H,)``; gate blocks side by side."""
    k_i, k_h, k_b = jax.random.split(key, 3)
    params = {
        "w_i": _init.gate_blocks(scheme.kernel, k_i, input_size, hidden_size, num_gates, dtype),
        "w_h": _init.gate_blocks(scheme.recurrent, k_h, recurrent_size, hidden_size, num_gates, dtype),
    }
    if use_bias:
        params["b"] = scheme.bias(k_b, (num_gates * hidden_size,), dtype)
    return params


def zeros_state(batch_shape, size: int, dtype) -> Array:
    """Zeros of shape ``(*batch_shape, size)``."""
    return jnp.zeros((*tuple(batch_shape), size), dtype)
