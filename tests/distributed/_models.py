"""The small Flax model and data the distributed tests share (in the pytest process and in the children)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import recurrax as rx
from recurrax.flax import linen as rx_linen

INPUTS, HIDDEN, STEPS = 4, 16, 12


class Tagger(nn.Module):
    """A recurrax LSTM (through the Flax adapter) and a per-step linear read-out."""

    hidden: int = HIDDEN

    @nn.compact
    def __call__(self, xs):
        return nn.Dense(2)(rx_linen.RNN(rx.lstm(self.hidden))(xs))


def data(batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``xs: (batch, STEPS, INPUTS)`` and targets ``(batch, STEPS, 2)``, the same on every device count."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((batch, STEPS, INPUTS)).astype(np.float32)
    return xs, np.cumsum(xs[..., :2], axis=1).astype(np.float32)


def init_params(hidden: int = HIDDEN):
    return Tagger(hidden).init(jax.random.key(0), jnp.zeros((1, STEPS, INPUTS)))["params"]


def loss_and_outputs(params, xs, targets, weights=None):
    """Mean squared error over the rows (weighted by ``weights: (B,)`` when given) and the outputs."""
    ys = Tagger().apply({"params": params}, xs)
    per_row = jnp.mean((ys - targets) ** 2, axis=(1, 2))
    loss = jnp.mean(per_row) if weights is None else jnp.sum(per_row * weights) / jnp.sum(weights)
    return loss, ys


# One jitted training computation used on one device and on the mesh alike: only the placement differs.
grad_step = jax.jit(jax.value_and_grad(loss_and_outputs, has_aux=True))
