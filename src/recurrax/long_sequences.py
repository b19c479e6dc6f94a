"""Sequences longer than memory: truncated BPTT in chunks, and sqrt(T) gradient checkpointing of the scan.

Backpropagation through ``T`` steps of :func:`recurrax.scan` keeps every step's intermediates: memory
grows like ``T``. Two standard ways out, both running :func:`recurrax.scan` on consecutive segments of
the sequence with the state carried from one to the next:

* :func:`checkpointed_scan` stores only the state entering each segment and recomputes a segment's
  steps during the backward pass (``jax.checkpoint``). With segments of ``sqrt(T)`` steps the memory
  is about ``2 sqrt(T)`` states instead of ``T`` steps of intermediates, for one extra forward pass
  (Chen et al., 2016, "Training Deep Nets with Sublinear Memory Cost"). Gradients are exact.
* :func:`truncated_scan` and :func:`tbptt` truncate the gradient at chunk boundaries
  (``stop_gradient`` on the carried state; Williams & Peng, 1990): :func:`tbptt` makes one optimizer
  update per chunk of a long stream, as in language-model training on a corpus read in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from recurrax.core import Array, Cell, Params, State, check_state
from recurrax.scan import check_lengths, scan

PyTree = Any


def checkpointed_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    segment_size: int | None = None,
    lengths: Array | None = None,
    time_major: bool = False,
    unroll: int | bool | None = None,
    backend: str = "auto",
) -> tuple[State, Array]:
    """:func:`recurrax.scan` with gradient checkpointing in segments: same values and gradients, less memory.

    The sequence is cut into segments of ``segment_size`` steps (default ``ceil(sqrt(T))``; the last
    one may be shorter); each runs :func:`recurrax.scan` under ``jax.checkpoint`` inside an outer
    ``lax.scan``, so the backward pass keeps only the state entering each segment and recomputes one
    segment's steps at a time.

    Args:
      cell, params, xs, state, lengths, time_major, unroll, backend: as in :func:`recurrax.scan`
        (``xs: (*batch, T, I)``).
      segment_size: steps per checkpointed segment.

    Returns:
      ``(final_state, outputs)``, ``outputs: (*batch, T, O)``, equal to :func:`recurrax.scan`'s.
    """
    num_steps = _num_steps("checkpointed_scan", xs, time_major)
    size = max(1, math.ceil(math.sqrt(num_steps))) if segment_size is None else segment_size
    return _segmented(cell, params, xs, state, size, "segment_size", True, False, lengths, time_major, unroll, backend)


def truncated_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    chunk_size: int,
    stop_gradient: bool = True,
    lengths: Array | None = None,
    time_major: bool = False,
    unroll: int | bool | None = None,
    backend: str = "auto",
) -> tuple[State, Array]:
    """:func:`recurrax.scan` in chunks of ``chunk_size`` steps, the gradient truncated between chunks.

    The forward values equal :func:`recurrax.scan`'s. With ``stop_gradient`` the state carried into
    each chunk after the first is ``lax.stop_gradient``-ed, so a chunk's loss reaches back at most to
    the start of its chunk (the gradient is the sum of each chunk's gradient with its incoming state
    held fixed); without it the gradient is the full one.

    Args:
      cell, params, xs, state, lengths, time_major, unroll, backend: as in :func:`recurrax.scan`.
      chunk_size: steps per chunk (the last chunk may be shorter).
      stop_gradient: cut the gradient at chunk boundaries.

    Returns:
      ``(final_state, outputs)`` with ``outputs: (*batch, T, O)``.
    """
    _num_steps("truncated_scan", xs, time_major)
    return _segmented(
        cell, params, xs, state, chunk_size, "chunk_size", False, stop_gradient, lengths, time_major, unroll, backend
    )


def tbptt(
    loss_fn: Callable[[Params, State, PyTree], tuple[Array, State]],
    optimizer: optax.GradientTransformation,
    params: Params,
    opt_state: optax.OptState,
    state: State,
    data: PyTree,
    *,
    chunk_size: int,
    time_axis: int = 1,
) -> tuple[Params, optax.OptState, State, Array]:
    """Truncated BPTT over a long stream: one optimizer update per chunk, the state carried across chunks.

    For each chunk of ``chunk_size`` steps, in order: ``(loss, state) = loss_fn(params, state, chunk)``
    is differentiated with respect to ``params`` (the incoming state is a constant, so the gradient
    stops at the chunk's start), ``optimizer`` updates ``params``, and the new state enters the next
    chunk. The chunks run in one ``lax.scan``, so the whole stream is one compiled call.

    Args:
      loss_fn: ``(params, state, chunk) -> (loss, final_state)``; ``chunk`` is ``data`` cut along time.
      optimizer: an optax transformation.
      params, opt_state: where training starts.
      state: the recurrent state entering the stream.
      data: a pytree whose leaves share the time axis ``time_axis`` (e.g. ``(xs, targets)``, each
        ``(B, T, ...)`` with ``time_axis=1``).
      chunk_size: steps per chunk; the last chunk may be shorter.
      time_axis: the time axis of every leaf of ``data``.

    Returns:
      ``(params, opt_state, state, losses)`` with ``losses: (num_chunks,)``, each chunk's loss before its update.
    """
    leaves = jax.tree.leaves(data)
    steps = {x.shape[time_axis] if x.ndim > time_axis else None for x in leaves}
    if not leaves or len(steps) != 1 or None in steps:
        shapes = [tuple(x.shape) for x in leaves]
        raise ValueError(f"tbptt: the leaves of `data` must share one length on axis {time_axis}, got {shapes}.")
    num_steps = steps.pop()
    _check_size("tbptt", "chunk_size", chunk_size)

    def update(carry, chunk):
        params, opt_state, state = carry
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, chunk)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, state), loss

    def cut(x, start, stop):
        return jax.lax.slice_in_dim(x, start, stop, axis=time_axis)

    def chunks(x):
        x = cut(x, 0, num * chunk_size)
        return jnp.moveaxis(x.reshape(_split_shape(x.shape, time_axis, num)), time_axis, 0)

    num = num_steps // chunk_size
    carry, losses = (params, opt_state, state), jnp.zeros((0,), jnp.float32)
    if num:
        carry, losses = jax.lax.scan(update, carry, jax.tree.map(chunks, data))
    if num * chunk_size < num_steps:
        carry, last = update(carry, jax.tree.map(lambda x: cut(x, num * chunk_size, num_steps), data))
        losses = jnp.concatenate([losses, last[None]])
    return (*carry, losses)


def _segmented(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None,
    size: int,
    size_arg: str,
    checkpoint: bool,
    stop_gradient: bool,
    lengths: Array | None,
    time_major: bool,
    unroll: int | bool | None,
    backend: str,
) -> tuple[State, Array]:
    """Runs :func:`recurrax.scan` on consecutive segments of ``size`` steps, carrying the state between them."""
    who = "checkpointed_scan" if checkpoint else "truncated_scan"
    _check_size(who, size_arg, size)
    xs = jnp.asarray(xs)
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    if not isinstance(cell, Cell):
        raise TypeError(f"{who}: `cell` must be a recurrax.Cell, got {type(cell).__name__}.")
    if state is None:
        state = cell.initial_state(params, batch_shape)
    else:
        check_state(cell.name, cell.initial_state, params, state, batch_shape)
    if lengths is not None:
        lengths = check_lengths(cell.name, lengths, batch_shape, num_steps)
    if num_steps == 0:
        return scan(cell, params, xs, state, lengths=lengths, time_major=time_major, backend=backend)
    size = min(size, num_steps)

    def run(params, carry, xs_seg, start):
        # A segment's valid steps: what is left of each sequence's length from the segment's start.
        seg_lengths = None if lengths is None else jnp.clip(lengths - start, 0, xs_seg.shape[0])
        return scan(cell, params, xs_seg, carry, lengths=seg_lengths, time_major=True, unroll=unroll, backend=backend)

    if checkpoint:
        # prevent_cse=False: inside lax.scan, CSE cannot undo the rematerialisation (jax.checkpoint docs).
        run = jax.checkpoint(run, prevent_cse=False)

    def segment(carry, inputs):
        xs_seg, start = inputs
        if stop_gradient:
            # The first segment keeps the gradient to the caller's state; later ones start from a constant.
            carry = jax.tree.map(lambda s: jnp.where(start > 0, jax.lax.stop_gradient(s), s), carry)
        return run(params, carry, xs_seg, start)

    num = num_steps // size
    main = xs_tm[: num * size].reshape(num, size, *xs_tm.shape[1:])
    final, ys = jax.lax.scan(segment, state, (main, jnp.arange(num) * size))
    ys = ys.reshape(num * size, *ys.shape[2:])
    if num * size < num_steps:
        final, ys_last = segment(final, (xs_tm[num * size :], jnp.asarray(num * size)))
        ys = jnp.concatenate([ys, ys_last])
    return final, (ys if time_major else jnp.moveaxis(ys, 0, -2))


def _num_steps(who: str, xs: Array, time_major: bool) -> int:
    shape = jnp.shape(xs)
    if len(shape) < 2:
        raise ValueError(f"{who}: `xs` must have shape (*batch, T, I) (or (T, I)), got {tuple(shape)}.")
    return shape[0] if time_major else shape[-2]


def _check_size(who: str, arg: str, size: Any) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{who}: `{arg}` must be a positive int, got {size!r}.")


def _split_shape(shape: tuple[int, ...], axis: int, num: int) -> tuple[int, ...]:
    """``shape`` with the axis ``axis`` split into ``(num, shape[axis] // num)``."""
    return (*shape[:axis], num, shape[axis] // num, *shape[axis + 1 :])
