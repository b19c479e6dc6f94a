"""The one call both adapters make: run a cell (or layer) over ``xs``, plus the initial-state helpers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from recurrax.core import Array, Cell, Params, PRNGKey, State
from recurrax.layers import Layer, segments, time_major_resets
from recurrax.scan import reverse_sequences, reversed_resets, scan


def check_cell(adapter: str, cell: Any, unroll: int | bool | None, remat: Any) -> None:
    """Raises unless ``cell`` is a Cell or a Layer (whose own ``unroll``/``remat`` are fixed when it is built)."""
    if not isinstance(cell, (Cell, Layer)):
        raise TypeError(f"{adapter}: `cell` must be a recurrax.Cell or recurrax.Layer, got {type(cell).__name__}.")
    if isinstance(cell, Layer) and (unroll is not None or remat is not False):
        raise ValueError(
            f"{adapter}: `unroll`/`remat` apply to a Cell; for the layer {cell.name!r} pass them to "
            f"rx.stacked / rx.bidirectional instead (got unroll={unroll!r}, remat={remat!r})."
        )


def batch_shape(xs: Array, time_major: bool) -> tuple[int, ...]:
    """The batch dims of ``xs: (*batch, T, I)`` (or ``(T, *batch, I)`` time-major)."""
    return tuple(xs.shape[1:-1]) if time_major else tuple(xs.shape[:-2])


def unbatched_initial_state(cell: Cell | Layer, params: Params) -> State:
    """The zeros state with no batch dims: the starting value of a learnable initial state."""
    return cell.initial_state(params, ())


def check_carry(name: str, cell: Cell | Layer, params: Params, carry: State, batch: tuple[int, ...]) -> None:
    """Raises unless a kept state (``stateful``) has the batch shape of this call's inputs."""
    want = jax.eval_shape(lambda p: cell.initial_state(p, batch), params)
    if [leaf.shape for leaf in jax.tree.leaves(carry)] != [leaf.shape for leaf in jax.tree.leaves(want)]:
        held = tuple(jax.tree.leaves(carry)[0].shape)
        raise ValueError(
            f"{name}: `stateful=True` keeps a state for one batch shape; it holds a state of shape {held}, the "
            f"inputs have batch shape {tuple(batch)}. Reset the carry (see the docstring) to change it."
        )


def broadcast_state(state: State, shape: tuple[int, ...]) -> State:
    """Broadcasts an unbatched state to the batch ``shape``."""
    return jax.tree.map(lambda s: jnp.broadcast_to(s, (*shape, *s.shape)), state)


def run(
    cell: Cell | Layer,
    params: Params,
    xs: Array,
    state: State | None,
    *,
    lengths: Array | None,
    resets: Array | None = None,
    reset_state: State | None = None,
    reverse: bool,
    time_major: bool,
    unroll: int | bool | None,
    remat: bool,
    key: PRNGKey | None,
) -> tuple[State, Array]:
    """``recurrax.scan`` for a Cell, ``layer.apply`` for a Layer (``key`` drives its dropout).

    A layer has no ``reverse`` of its own, so it is given the valid part of each sequence reversed (and its
    resets, as :func:`recurrax.scan.reversed_resets`) and its outputs are flipped back, which is what
    ``scan(..., reverse=True)`` means for a cell.
    """
    if isinstance(cell, Cell):
        return scan(
            cell,
            params,
            xs,
            state,
            lengths=lengths,
            resets=resets,
            reset_state=reset_state,
            reverse=reverse,
            time_major=time_major,
            unroll=unroll,
            remat=remat,
        )
    if not reverse:
        return cell.apply(
            params, xs, state, lengths=lengths, **segments(resets, reset_state), key=key, time_major=time_major
        )
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    if resets is not None:
        resets = reversed_resets(time_major_resets(resets, time_major), lengths)
    xs_rev = reverse_sequences(xs_tm, lengths)
    final, ys = cell.apply(
        params, xs_rev, state, lengths=lengths, **segments(resets, reset_state), key=key, time_major=True
    )
    ys = reverse_sequences(ys, lengths)
    return final, (ys if time_major else jnp.moveaxis(ys, 0, -2))
