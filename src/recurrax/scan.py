"""The driver: runs any :class:`~recurrax.Cell` over a sequence with ``jax.lax.scan``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import linear_scan as _linear_scan
from recurrax.core import Array, Cell, Params, State, check_state


def scan(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool = 1,
    remat: bool = False,
    return_states: bool = False,
    include_initial: bool = False,
    backend: str = "auto",
) -> tuple[State, Array] | tuple[State, Array, State]:
    """Runs ``cell`` over the time axis of ``xs``.

    The input projection (``cell.project``) is computed for all steps at once, as one large
    matmul, before the loop; only ``cell.transition`` runs inside ``lax.scan``.

    Args:
      cell: the cell.
      params: its params.
      xs: inputs ``(*batch, T, I)`` (or ``(T, *batch, I)`` with ``time_major``); ``(T, I)`` unbatched.
      state: the initial state (batch shape ``batch``); zeros when ``None``.
      lengths: integer ``(*batch,)``, the number of valid steps of each right-padded sequence. The
        state stops changing after a sequence's last valid step and padded outputs are zero.
      reverse: run from the last valid step to the first; outputs keep the original time order.
      time_major: whether the time axis of ``xs`` (and of the outputs) comes first.
      unroll: steps per loop iteration, as in ``lax.scan`` (a cell's fused fast path may read the
        default 1 as its measured per-backend default, see :mod:`recurrax.fused`).
      remat: recompute each step in the backward pass instead of storing its intermediates.
      return_states: also return every state over time, in the layout of the outputs: the state
        after consuming ``xs[t]`` at position ``t`` (``(*batch, T, ...)`` per leaf).
      include_initial: with ``return_states``, add the initial state, giving ``T + 1`` positions
        where position ``t`` is the state at the boundary before ``xs[t]`` (forward) or after it
        (``reverse``): index 0 is the initial state forward, index ``T`` in reverse.
      backend: ``"sequential"`` (``lax.scan``), or, for cells that declare a linear recurrence
        (``cell.linear``: minGRU, minLSTM, LRU), ``"associative"`` or ``"chunked"`` (parallel in time,
        see :mod:`recurrax.linear_scan`); ``"auto"`` picks the measured fastest for linear cells on
        this device and ``"sequential"`` for the others.

    Returns:
      ``(final_state, outputs)`` with ``outputs: (*batch, T, O)``, or
      ``(final_state, outputs, states)`` with ``return_states``.
    """
    xs = jnp.asarray(xs)
    if not isinstance(cell, Cell):
        raise TypeError(f"scan: `cell` must be a recurrax.Cell, got {type(cell).__name__}.")
    if xs.ndim < 2:
        raise ValueError(f"scan[{cell.name}]: `xs` must have shape (*batch, T, I) (or (T, I)), got {tuple(xs.shape)}.")
    if include_initial and not return_states:
        raise ValueError(f"scan[{cell.name}]: `include_initial=True` needs `return_states=True`.")
    # Trace-only check in the caller's layout, so an error shows the shape of `xs` as given.
    jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape, xs.dtype))
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]

    lengths = _check_lengths(cell.name, lengths, batch_shape, num_steps)
    backend = _linear_scan.resolve(cell, backend, num_steps)
    # Without lengths, lax.scan reverses by itself; with them, each sequence's valid part is flipped
    # (the inputs: I features are cheaper to gather than G projected ones), run forward, flipped back.
    flip = reverse and lengths is not None
    xs_run = reverse_sequences(xs_tm, lengths) if flip else xs_tm
    if state is None:
        state = cell.initial_state(params, batch_shape)
    else:
        check_state(cell.name, cell.initial_state, params, state, batch_shape)

    def body(carry, inputs):
        z, t = inputs
        if split:
            z = jnp.concatenate(z, axis=-1)  # XLA folds the transition's slices of this into the blocks
        new = cell.transition(params, carry, z)
        out = cell.output(new)
        if lengths is not None:
            valid = t < lengths
            new = jax.tree.map(lambda n, o: _where(valid, n, o), new, carry)
            out = _where(valid, out, jnp.zeros_like(out))
        return new, ((out, new) if return_states else out)

    split = False  # whether the generic loop below stores the projected inputs per gate block (Cell.blocks)
    states = None
    if backend != "sequential" and num_steps:
        # In parallel over time; past a sequence's last valid step its state holds still, as in `body`.
        zs = cell.project(params, xs_run if flip or not reverse else jnp.flip(xs_run, 0))
        states = _linear_scan.states(cell, params, zs, state, backend, lengths=lengths, remat=remat)
    elif cell.fused is not None and lengths is None and not remat and num_steps:
        # The cell's sequence-level fast path (same values, hand-written derivative); None where it does not apply.
        states = cell.fused(params, jnp.flip(xs_run, 0) if reverse else xs_run, state, unroll)
    if states is not None:
        final = jax.tree.map(lambda s: s[-1], states)
        states = jax.tree.map(lambda s: jnp.flip(s, 0), states) if reverse and not flip else states
        outs = cell.output(states)
        if lengths is not None:
            valid = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape)) < lengths
            outs = _where(valid, outs, jnp.zeros_like(outs))
        ys = (outs, states) if return_states else outs
    else:
        if remat:
            body = jax.checkpoint(body)
        zs = cell.project(params, xs_run)
        split = cell.blocks > 1 and zs.shape[-1] % cell.blocks == 0
        if split:
            zs = tuple(jnp.split(zs, cell.blocks, axis=-1))
        final, ys = jax.lax.scan(body, state, (zs, jnp.arange(num_steps)), unroll=unroll, reverse=reverse and not flip)

    outputs, states = ys if return_states else (ys, None)
    if flip:
        outputs = reverse_sequences(outputs, lengths)
    outputs = outputs if time_major else jnp.moveaxis(outputs, 0, -2)
    if not return_states:
        return final, outputs
    if flip:
        # Past its valid part a reversed sequence has consumed nothing yet: its state is the initial one.
        t = np.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
        states = jax.tree.map(lambda s, s0: _where(t < lengths, reverse_sequences(s, lengths), s0[None]), states, state)
    if include_initial:
        first = jax.tree.map(lambda s0: s0[None], state)
        pair = (states, first) if reverse else (first, states)
        states = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), *pair)
    if not time_major:
        states = jax.tree.map(lambda s: jnp.moveaxis(s, 0, len(batch_shape)), states)
    return final, outputs, states


def reverse_sequences(xs: Array, lengths: Array | None = None) -> Array:
    """Reverses each sequence of a time-major ``xs: (T, *batch, ...)`` along time.

    With ``lengths: (*batch,)`` only each sequence's valid part ``[0, length)`` is reversed and the
    padding stays where it is. Applying it twice gives ``xs`` back.
    """
    xs = jnp.asarray(xs)
    if lengths is None:
        return jnp.flip(xs, axis=0)
    lengths = jnp.asarray(lengths)
    t = jnp.arange(xs.shape[0]).reshape((xs.shape[0],) + (1,) * lengths.ndim)
    order = jnp.where(t < lengths, lengths - 1 - t, t)  # (T, *batch)
    order = order.reshape(order.shape + (1,) * (xs.ndim - order.ndim))
    return jnp.take_along_axis(xs, jnp.broadcast_to(order, xs.shape), axis=0)


def _where(mask: Array, a: Array, b: Array) -> Array:
    """``where(mask, a, b)`` with ``mask`` (batch dims) broadcast over the trailing feature axes."""
    extra = a.ndim - mask.ndim
    return jnp.where(mask.reshape(mask.shape + (1,) * extra), a, b)


def _check_lengths(name: str, lengths: Any, batch_shape, num_steps: int) -> Array | None:
    """Checks dtype, shape and (when not traced) range of ``lengths``."""
    if lengths is None:
        return None
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"scan[{name}]: `lengths` must be an integer array, got dtype {lengths.dtype}.")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"scan[{name}]: `lengths` must have the batch shape of `xs`, {tuple(batch_shape)}, "
            f"got {tuple(lengths.shape)}."
        )
    try:
        concrete = np.asarray(lengths)
    except jax.errors.TracerArrayConversionError:
        return lengths  # traced under jit: the values cannot be checked here
    if concrete.size and (concrete.min() < 0 or concrete.max() > num_steps):
        raise ValueError(
            f"scan[{name}]: `lengths` must lie in [0, T={num_steps}], "
            f"got values in [{concrete.min()}, {concrete.max()}]."
        )
    return lengths
