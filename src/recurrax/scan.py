"""The driver: runs any :class:`~recurrax.Cell` over a sequence with ``jax.lax.scan``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
      unroll: steps per loop iteration, as in ``lax.scan``.
      remat: recompute each step in the backward pass instead of storing its intermediates.
      return_states: also return every state over time, in the layout of the outputs: the state
        after consuming ``xs[t]`` at position ``t`` (``(*batch, T, ...)`` per leaf).
      include_initial: with ``return_states``, add the initial state, giving ``T + 1`` positions
        where position ``t`` is the state at the boundary before ``xs[t]`` (forward) or after it
        (``reverse``): index 0 is the initial state forward, index ``T`` in reverse.

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
    order = _time_order(num_steps, batch_shape, lengths, reverse)
    # Gathering the inputs (I features) is cheaper than gathering projections (G features).
    zs = cell.project(params, _gather_time(xs_tm, order))
    if state is None:
        state = cell.initial_state(params, batch_shape)
    else:
        check_state(cell.name, cell.initial_state, params, state, batch_shape)

    def body(carry, inputs):
        z, t = inputs
        new = cell.transition(params, carry, z)
        out = cell.output(new)
        if lengths is not None:
            valid = t < lengths
            new = jax.tree.map(lambda n, o: _where(valid, n, o), new, carry)
            out = _where(valid, out, jnp.zeros_like(out))
        return new, ((out, new) if return_states else out)

    if remat:
        body = jax.checkpoint(body)
    final, ys = jax.lax.scan(body, state, (zs, jnp.arange(num_steps)), unroll=unroll)

    outputs, states = ys if return_states else (ys, None)
    if reverse:
        outputs = _gather_time(outputs, order)
    outputs = outputs if time_major else jnp.moveaxis(outputs, 0, -2)
    if not return_states:
        return final, outputs
    if reverse:
        states = jax.tree.map(lambda s: _gather_time(s, order), states)
        if lengths is not None:
            # Before its last valid step a reversed sequence has consumed nothing: its state is the initial one.
            t = np.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
            states = jax.tree.map(lambda s, s0: _where(t < lengths, s, s0[None]), states, state)
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
    if lengths is not None:
        lengths = jnp.asarray(lengths)
    batch_shape = () if lengths is None else lengths.shape
    return _gather_time(xs, _time_order(xs.shape[0], batch_shape, lengths, True))


def _where(mask: Array, a: Array, b: Array) -> Array:
    """``where(mask, a, b)`` with ``mask`` (batch dims) broadcast over the trailing feature axes."""
    extra = a.ndim - mask.ndim
    return jnp.where(mask.reshape(mask.shape + (1,) * extra), a, b)


def _time_order(num_steps: int, batch_shape, lengths: Array | None, reverse: bool) -> Array | None:
    """Per-sequence time indices that reverse each valid part (an involution), or ``None`` (identity)."""
    if not reverse:
        return None
    t = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
    if lengths is None:
        return num_steps - 1 - t
    return jnp.where(t < lengths, lengths - 1 - t, t)


def _gather_time(x: Array, order: Array | None) -> Array:
    """``x[order[t, b], b]`` for a time-major ``x: (T, *batch, ...)``; identity for ``order=None``."""
    if order is None:
        return x
    if order.size == order.shape[0]:  # the same order for every sequence: a plain index
        return x[order.reshape(-1)]
    idx = order.reshape(order.shape + (1,) * (x.ndim - order.ndim))
    return jnp.take_along_axis(x, jnp.broadcast_to(idx, order.shape + x.shape[order.ndim :]), axis=0)


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
