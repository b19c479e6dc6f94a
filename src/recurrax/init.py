"""Initialisers for recurrent weights, in one place.

A :class:`Scheme` names three ``jax.nn.initializers``-style functions ``(key, shape, dtype) -> Array``:
one for the input kernel, one for the recurrent kernel and one for the bias. Cells apply them *per
gate block* (shape ``(in, hidden)`` each), so an orthogonal recurrent initialiser gives every gate an
orthogonal matrix, as Flax's cells do.

Schemes:
  * :func:`pytorch`: ``U(-1/sqrt(H), 1/sqrt(H))`` for everything (``torch.nn.RNN/LSTM/GRU``).
  * :func:`glorot_orthogonal`: Glorot-uniform input kernel, orthogonal recurrent kernel, zero bias
    (Keras's defaults; Flax uses the same orthogonal recurrent kernel).

:func:`chrono_bias` gives the chrono initialisation of gate biases (Tallec & Ollivier, 2018,
"Can recurrent neural networks warp time?").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


class Scheme(NamedTuple):
    """Initialisers for the input kernel, the recurrent kernel and the bias."""

    kernel: Initializer
    recurrent: Initializer
    bias: Initializer


def uniform(scale: float) -> Initializer:
    """``U(-scale, scale)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def pytorch(hidden_size: int) -> Scheme:
    """PyTorch's default: every weight and bias ``~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``."""
    u = uniform(1.0 / math.sqrt(hidden_size))
    return Scheme(kernel=u, recurrent=u, bias=u)


def glorot_orthogonal() -> Scheme:
    """Glorot-uniform input kernel, orthogonal recurrent kernel, zero bias (Keras and Flax)."""
    return Scheme(
        kernel=jax.nn.initializers.glorot_uniform(),
        recurrent=jax.nn.initializers.orthogonal(),
        bias=jax.nn.initializers.zeros,
    )


SCHEMES: dict[str, Callable[[int], Scheme]] = {
    "pytorch": pytorch,
    "glorot_orthogonal": lambda hidden_size: glorot_orthogonal(),
}


def resolve(scheme: str | Scheme, hidden_size: int) -> Scheme:
    """Turns a scheme name (``"pytorch"``, ``"glorot_orthogonal"``) or a :class:`Scheme` into a Scheme."""
    if isinstance(scheme, Scheme):
        return scheme
    if scheme not in SCHEMES:
        raise ValueError(f"init: unknown scheme {scheme!r}; expected one of {sorted(SCHEMES)} or an init.Scheme.")
    return SCHEMES[scheme](hidden_size)


def gate_blocks(
    initializer: Initializer, key: jax.Array, rows: int, hidden_size: int, num_gates: int, dtype
) -> jax.Array:
    """``num_gates`` blocks of shape ``(rows, hidden_size)``, initialised independently, side by side.

    Returns: ``(rows, num_gates * hidden_size)``.
    """
    keys = jax.random.split(key, num_gates)
    return jnp.concatenate([initializer(k, (rows, hidden_size), dtype) for k in keys], axis=-1)


def chrono_bias(key: jax.Array, hidden_size: int, t_max: float, dtype=jnp.float32) -> jax.Array:
    """Chrono initialisation: ``log(U(1, t_max - 1))`` for a forget (keep) gate's bias.

    With this bias the gate's characteristic timescales spread between 1 and ``t_max`` steps; the
    LSTM's input gate takes the negative of it (Tallec & Ollivier, 2018).

    Returns: ``(hidden_size,)``.
    """
    if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 2):
        raise ValueError(f"chrono_bias: `t_max` must be > 2 (the longest expected dependency), got {t_max}.")
    return jnp.log(jax.random.uniform(key, (hidden_size,), dtype, 1.0, t_max - 1.0))
