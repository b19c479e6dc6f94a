"""``sequential``: ``lax.scan`` of ``cell.transition`` over the projected inputs; the reference backend.

It calls the cell's own functions, so it runs every cell, including those whose functions were replaced, and
every option; the conformance suite (``tests/backends/``) holds every other backend to its results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrax.backends.base import Backend, Request, Resets, checkpointed, restore, where_valid
from recurrax.core import Array, Cell, Params, State, feature_axes


def run(
    cell: Cell, params: Params, xs: Array, state: State, lengths: Array | None, resets: Resets | None, req: Request
):
    # Projected in the batch-major layout: the projection's matmul then merges the batch axes with time in that
    # order, which keeps a sharded leading batch axis sharded (time first would gather it onto every device).
    # Time goes in front of all of one example's feature axes (a convolutional cell's spatial axes and channels).
    axis = -1 - feature_axes(cell)
    zs = jnp.moveaxis(cell.project(params, jnp.moveaxis(xs, 0, axis)), axis, 0)
    gates = 1 if cell.structure is None else cell.structure.gates
    split = gates > 1 and zs.shape[-1] % gates == 0
    if split:
        zs = tuple(jnp.split(zs, gates, axis=-1))
    unroll = 1 if req.unroll is None else req.unroll
    steps = jnp.arange(req.num_steps)

    def body(carry, inputs):
        z, t, reset = inputs
        if reset is not None:
            carry = restore(reset, carry, resets.state)
        if split:
            z = jnp.concatenate(z, axis=-1)  # XLA folds the transition's slices of this into the blocks
        new = cell.transition(params, carry, z)
        out = cell.output(new)
        if lengths is not None:
            valid = t < lengths
            new = jax.tree.map(lambda n, o: where_valid(valid, n, o), new, carry)
            out = where_valid(valid, out, jnp.zeros_like(out))
        return new, ((out, new) if req.return_states else out)

    final, ys = jax.lax.scan(
        checkpointed(body, req.remat), state, (zs, steps, None if resets is None else resets.mask), unroll=unroll
    )
    outputs, states = ys if req.return_states else (ys, None)
    return final, outputs, states


BACKEND = Backend(
    name="sequential",
    supports=lambda req: None,
    prefers=lambda req: True,
    run=run,
    description="lax.scan of cell.transition: every cell, every option; the reference",
)

__all__ = ["BACKEND"]
