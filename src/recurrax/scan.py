"""The driver: checks a call, lays it out, and hands it to the backend :mod:`recurrax.backends` selects.

Everything that is the same on every backend happens here, once: argument checks, the time-major layout,
flipping each sequence's valid part for ``reverse``, and the states returned over time. A backend sees each
sequence with its valid part first and runs it forward (:mod:`recurrax.backends.base`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import backends as _backends
from recurrax.backends.base import Backend, Remat, Resets, restore, valid_mask, where_valid
from recurrax.core import (
    Array,
    Cell,
    Layer,
    Params,
    PRNGKey,
    State,
    check_param_leaves,
    check_state,
    feature_axes,
)


def scan(
    cell: Cell | Layer,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    lengths: Array | None = None,
    mask: Array | None = None,
    masked_outputs: str = "zeros",
    resets: Array | None = None,
    reset_state: State | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    remat: Remat = False,
    return_states: bool = False,
    include_initial: bool = False,
    backend: str | Backend = "auto",
    key: PRNGKey | None = None,
) -> tuple[State, Array] | tuple[State, Array, State]:
    """Runs ``cell`` over the time axis of ``xs``.

    The input projection (``cell.project``) is computed for all steps at once, as one large
    matmul, before the loop; only ``cell.transition`` runs inside the loop.

    Args:
      cell: the cell, or a layer (``stacked``, ``bidirectional``, ``as_layer``; what ``from_torch`` and the other
        converters return), which runs through its ``apply`` with ``state``, ``lengths``, ``resets``,
        ``reset_state``, ``time_major`` and ``key``; the options its ``apply`` has not are refused by name.
      params: its params.
      xs: inputs ``(*batch, T, I)`` (or ``(T, *batch, I)`` with ``time_major``); ``(T, I)`` unbatched.
      state: the initial state (batch shape ``batch``); zeros when ``None``.
      lengths: integer ``(*batch,)``, the number of valid steps of each right-padded sequence. The
        state stops changing after a sequence's last valid step and padded outputs are zero; what the padded
        steps of ``xs`` hold (even NaN) reaches neither the outputs nor the gradients. Concrete values must lie
        in ``[0, T]``; traced ones (under ``jit``), which cannot be checked, are clamped to ``[0, T]``.
      mask: boolean ``(*batch, T)`` (``(T, *batch)`` with ``time_major``), Keras's mask: ``False`` steps are
        skipped, wherever they are (holes, left padding): the state is carried over them unchanged and what they
        hold reaches neither outputs nor gradients. With ``lengths`` too, a step counts only when both allow it.
        It runs on every backend that runs ``lengths``: the valid steps are gathered to the front of each
        sequence, run with ``lengths`` = their count, and scattered back.
      masked_outputs: the outputs at masked steps: ``"zeros"`` (Keras's ``zero_output_for_mask=True``) or
        ``"state"``, the output of the carried state (Keras's default, ``zero_output_for_mask=False``).
      resets: boolean ``(*batch, T)`` (``(T, *batch)`` with ``time_major``): ``True`` where ``xs[t]`` is the
        first input of a new segment (an episode). Before such a step the state is replaced by
        ``reset_state``, and no gradient flows back across it into the previous segment::

            t        0  1  2  3  4  5  6
            done     .  .  x  .  .  x  .     done[t]: the episode ends with step t (gymnasium)
            resets   .  .  .  x  .  .  x     resets[t] = done[t - 1]; resets[0]: the last done before xs

        From a gymnasium-style ``dones`` array, ``resets = concatenate([last_done, dones[..., :-1]], -1)``; a
        rollout that stores with each observation whether it starts an episode (purejaxrl's ``last_done``)
        already holds ``resets``. Resets past a sequence's ``lengths`` do nothing; with ``reverse`` the run
        resets where a segment *ends* (before consuming ``xs[t]`` where ``resets[t + 1]``), so each segment
        is again run on its own, last step first.
      reset_state: the state a reset restores, of batch shape ``()`` (broadcast over the batch) or ``batch``;
        default ``cell.initial_state`` (zeros). Only with ``resets``.
      reverse: run from the last valid step to the first; outputs keep the original time order.
      time_major: whether the time axis of ``xs`` (and of the outputs) comes first.
      unroll: steps per loop iteration, as in ``lax.scan`` (an int >= 1 or a bool); ``None``: the backend's
        measured default (:data:`recurrax.backends.tuning.DEFAULT_UNROLL`; 1 for ``sequential``).
      remat: recompute in the backward pass instead of storing intermediates: ``True``, or a
        ``jax.checkpoint_policies`` policy (``sequential`` checkpoints each step, the others the whole call).
      return_states: also return every state over time, in the layout of the outputs: the state
        after consuming ``xs[t]`` at position ``t`` (``(*batch, T, ...)`` per leaf).
      include_initial: with ``return_states``, add the initial state, giving ``T + 1`` positions
        where position ``t`` is the state at the boundary before ``xs[t]`` (forward) or after it
        (``reverse``): index 0 is the initial state forward, index ``T`` in reverse.
      backend: ``"auto"`` (the fastest backend that can run the call, by the table of :mod:`recurrax.backends`),
        a backend's name (``"sequential"``, ``"native_lstm"``, ``"xla_lstm"``, ``"associative"``, ...; it raises
        if it cannot run the call, naming why), or a :class:`recurrax.backends.Backend`.
        ``recurrax.backends.available(cell, params, xs, ...)`` lists which can.
      key: for a layer, drives its dropout (none without it, as in evaluation); a cell has none.

    Returns:
      ``(final_state, outputs)`` with ``outputs: (*batch, T, O)``, or
      ``(final_state, outputs, states)`` with ``return_states``.
    """
    xs = jnp.asarray(xs)
    if isinstance(cell, Layer):
        refused = {
            "masked_outputs": masked_outputs != "zeros",
            "reverse": reverse,
            "unroll": unroll is not None,
            "remat": remat is not False,
            "return_states": return_states,
            "include_initial": include_initial,
            "backend": not (isinstance(backend, str) and backend == "auto"),
        }
        given = [option for option, set_ in refused.items() if set_]
        if given:
            raise ValueError(
                f"scan[{cell.name}]: a layer runs through its `apply`, which has no `{given[0]}`; set unroll, remat "
                "and backend when building the layer, or scan `recurrax.as_cell(layer)` (one step at a time) for "
                "the other options."
            )
        masked = {} if mask is None else {"mask": mask}  # a layer written before masks takes none
        return cell.apply(
            params,
            xs,
            state,
            lengths=lengths,
            resets=resets,
            reset_state=reset_state,
            key=key,
            time_major=time_major,
            **masked,
        )
    if not isinstance(cell, Cell):
        raise TypeError(f"scan: `cell` must be a recurrax.Cell or Layer, got {type(cell).__name__}.")
    if key is not None:
        raise ValueError(
            f"scan[{cell.name}]: `key` drives a layer's dropout, and a cell has none (use "
            "`recurrax.as_layer(cell, dropout=...)` for dropout inside the recurrence)."
        )
    name = f"scan[{cell.name}]"
    if xs.ndim < 2:
        raise ValueError(f"{name}: `xs` must have shape (*batch, T, I) (or (T, I)), got {tuple(xs.shape)}.")
    if include_initial and not return_states:
        raise ValueError(f"{name}: `include_initial=True` needs `return_states=True`.")
    _check_unroll(name, unroll)
    _check_remat(name, remat)
    # A convolutional cell's examples are feature maps: batch-major, time sits before their spatial axes, and those
    # axes count as batch axes of the state (`initial_state(params, (*batch, *spatial))`).
    spatial = feature_axes(cell) - 1
    check_param_leaves(name, params)
    # Trace-only check in the caller's layout, so an error shows the shape of `xs` as given.
    jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape, xs.dtype))
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2 - spatial, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    if spatial:
        # `lengths`, `mask` and `resets` are given per sequence and hold at every position of its maps.
        over = dict(batch_shape=batch_shape, spatial=spatial, num_steps=num_steps, time_major=time_major)
        lengths = _over_space(name, "lengths", lengths, per_step=False, **over)
        mask = _over_space(name, "mask", mask, per_step=True, **over)
        resets = _over_space(name, "resets", resets, per_step=True, **over)

    lengths = check_lengths(cell.name, lengths, batch_shape, num_steps)
    if state is None:
        state = cell.initial_state(params, batch_shape)
    else:
        check_state(cell.name, cell.initial_state, params, state, batch_shape)
    if mask is not None or masked_outputs != "zeros":
        keep = _mask(name, mask, masked_outputs, batch_shape, num_steps, time_major, lengths, resets)
        options = dict(unroll=unroll, remat=remat, backend=backend)
        final, outputs, states = _masked_scan(cell, params, xs_tm, state, keep, masked_outputs, reverse, options)
        layout = (batch_shape, time_major, reverse, return_states, include_initial, spatial)
        return _laid_out(final, outputs, states, state, *layout)
    segments = _resets(cell, params, resets, reset_state, batch_shape, num_steps, time_major, lengths, reverse)
    req = _backends.request(
        cell,
        params,
        xs_tm,
        state,
        time_major=True,
        lengths=lengths,
        resets=None if segments is None else segments.mask,
        reverse=reverse,
        remat=remat,
        unroll=unroll,
        return_states=return_states,
    )
    chosen = _backends.select(req, backend, name=name)
    if not num_steps:
        chosen = _backends.get("sequential")  # nothing to execute: every backend's answer is the initial state
    if lengths is not None:
        # Padded steps run on zeros: their states are discarded, but a NaN or an infinity in them would still
        # reach the gradients (the cotangent there is 0, and 0 times a NaN partial derivative is NaN).
        xs_tm = where_valid(valid_mask(num_steps, lengths), xs_tm, jnp.zeros_like(xs_tm))
    xs_run = reverse_sequences(xs_tm, lengths) if reverse else xs_tm
    final, outputs, states = chosen.run(cell, params, xs_run, state, lengths, segments, req)

    if reverse:
        outputs = reverse_sequences(outputs, lengths)
        if return_states:
            if lengths is None:
                states = jax.tree.map(lambda s: jnp.flip(s, 0), states)
            else:
                states = _reversed_states(states, state, lengths)
    layout = (batch_shape, time_major, reverse, return_states, include_initial, spatial)
    return _laid_out(final, outputs, states, state, *layout)


def _over_space(
    name: str,
    arg: str,
    value: Any,
    *,
    per_step: bool,
    batch_shape: tuple[int, ...],
    spatial: int,
    num_steps: int,
    time_major: bool,
) -> Array | None:
    """A convolutional cell's ``lengths`` ``(*batch,)`` or ``mask``/``resets`` ``(*batch, T)`` (``(T, *batch)``
    time-major), given per sequence, broadcast over the ``spatial`` axes that end its state's batch shape (a value
    already of that full shape passes as it is)."""
    if value is None:
        return None
    value = jnp.asarray(value)
    outer, maps = batch_shape[: len(batch_shape) - spatial], batch_shape[len(batch_shape) - spatial :]
    if not per_step:
        want, full = outer, batch_shape
    elif time_major:
        want, full = (num_steps, *outer), (num_steps, *batch_shape)
    else:
        want, full = (*outer, num_steps), (*batch_shape, num_steps)
    if tuple(value.shape) == full:  # already broadcast (a masked run's inner call)
        return value
    if tuple(value.shape) != want:
        layout = "(*batch,)" if not per_step else ("(T, *batch)" if time_major else "(*batch, T)")
        raise ValueError(
            f"{name}: `{arg}` must have shape {layout} = {want}, one value per sequence (the cell's spatial axes "
            f"{maps} share it), got {tuple(value.shape)}."
        )
    if per_step and not time_major:  # (*outer, T) -> (*outer, 1.., T)
        value = value.reshape(*outer, *(1,) * spatial, num_steps)
    else:
        value = value.reshape(*value.shape, *(1,) * spatial)
    return jnp.broadcast_to(value, full)


def _laid_out(
    final: State,
    outputs: Array,
    states: State | None,
    initial: State,
    batch_shape: tuple[int, ...],
    time_major: bool,
    reverse: bool,
    return_states: bool,
    include_initial: bool,
    spatial: int = 0,
) -> tuple[State, Array] | tuple[State, Array, State]:
    """The time-major results of a run, in original time order, laid out as :func:`scan` returns them (batch-major,
    time goes before the ``spatial`` axes that end the batch shape of a convolutional cell's state)."""
    outputs = outputs if time_major else jnp.moveaxis(outputs, 0, -2 - spatial)
    if not return_states:
        return final, outputs
    if include_initial:
        first = jax.tree.map(lambda s0: s0[None], initial)
        pair = (states, first) if reverse else (first, states)
        states = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), *pair)
    if not time_major:
        states = jax.tree.map(lambda s: jnp.moveaxis(s, 0, len(batch_shape) - spatial), states)
    return final, outputs, states


MASKED_OUTPUTS = ("zeros", "state")


def _mask(
    name: str,
    mask: Any,
    masked_outputs: Any,
    batch_shape: tuple[int, ...],
    num_steps: int,
    time_major: bool,
    lengths: Array | None,
    resets: Any,
) -> Array:
    """Checks ``mask`` (and the options it comes with) and returns it time-major, ``False`` past each length."""
    if masked_outputs not in MASKED_OUTPUTS:
        raise ValueError(f"{name}: `masked_outputs` must be one of {list(MASKED_OUTPUTS)}, got {masked_outputs!r}.")
    if mask is None:
        raise ValueError(f"{name}: `masked_outputs={masked_outputs!r}` is only used with `mask`.")
    if resets is not None:
        raise ValueError(
            f"{name}: `mask` and `resets` together are not supported (which masked step would a reset at a "
            "masked step apply to?); drop the masked steps' resets into the next valid step's, or pass `lengths`."
        )
    mask = check_mask(name, mask, batch_shape, num_steps, time_major)
    return mask if lengths is None else mask & valid_mask(num_steps, lengths)


def _masked_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State,
    keep: Array,
    masked_outputs: str,
    reverse: bool,
    options: dict[str, Any],
) -> tuple[State, Array, State]:
    """``scan`` over the steps where ``keep: (T, *batch)``, time-major, results in the original time order.

    The kept steps of each sequence are gathered to its front (in order) and run with ``lengths`` = their count,
    on whichever backend runs ``lengths``; each step's output and state are then gathered back to where it came
    from. A skipped step's state is the one carried over it: the state after the last kept step before it
    forward (after the first kept step after it in reverse), the initial state where there is none.
    """
    packed, count = pack_kept(xs, keep)
    final, ys, states = scan(
        cell, params, packed, state, lengths=count, reverse=reverse, time_major=True, return_states=True, **options
    )
    before = _kept_before(keep)
    outputs = unpack_kept(ys, keep)
    # The state carried at t: after the kept step at place `before - 1` forward (t itself when kept, at `before`).
    at = before if reverse else before + keep - 1
    carried = (at < count) if reverse else (at >= 0)
    states = jax.tree.map(lambda s, s0: where_valid(carried, _gather_steps(s, at), s0[None]), states, state)
    if masked_outputs == "state":
        outputs = where_valid(keep, outputs, cell.output(states).astype(outputs.dtype))
    return final, outputs, states


def pack_kept(xs: Array, keep: Array) -> tuple[Array, Array]:
    """``(packed, count)``: each sequence of the time-major ``xs: (T, *batch, ...)`` with its kept steps
    (``keep: (T, *batch)``) moved to the front in order, and their number ``(*batch,)``, the ``lengths`` to run
    ``packed`` with."""
    order = jnp.argsort(~keep, axis=0, stable=True)
    return _gather_steps(xs, order), jnp.sum(keep, axis=0, dtype=jnp.int32)


def unpack_kept(ys: Array, keep: Array) -> Array:
    """The outputs of a :func:`pack_kept` run moved back to the kept steps; zeros at the others."""
    return where_valid(keep, _gather_steps(ys, _kept_before(keep)), jnp.zeros((), ys.dtype))


def _kept_before(keep: Array) -> Array:
    """``(T, *batch)``: the kept steps before each ``t``, so a kept step's place in the packed run."""
    return jnp.cumsum(keep, axis=0, dtype=jnp.int32) - keep


def _gather_steps(a: Array, index: Array) -> Array:
    """``a[index[t, b], b, ...]`` along the time axis (``index: (T, *batch)``, clipped into range)."""
    return jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - index.ndim)), axis=0, mode="clip")


def check_mask(name: str, mask: Any, batch_shape: tuple[int, ...], num_steps: int, time_major: bool) -> Array:
    """``mask`` checked (boolean, ``(*batch, T)`` or ``(T, *batch)``) and returned time-major."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"{name}: `mask` must be a boolean array (True where a step counts), got dtype {mask.dtype}; "
            "convert with `mask.astype(bool)` if it holds 0/1 flags."
        )
    layout = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    if tuple(mask.shape) != layout:
        what = "(T, *batch)" if time_major else "(*batch, T)"
        raise ValueError(f"{name}: `mask` must have shape {what} = {layout}, got {tuple(mask.shape)}.")
    return mask if time_major else jnp.moveaxis(mask, -1, 0)


def reset(cell: Cell, params: Params, state: State, resets: Array, reset_state: State | None = None) -> State:
    """``state`` with the rows where ``resets`` replaced by the reset state: one step's reset, as :func:`scan`
    applies it, for stepping a cell by hand (an agent acting in its environments).

    Args:
      cell, params: the cell and its params.
      state: a state of batch shape ``batch``.
      resets: boolean ``(*batch,)``: which rows start a new segment before the next step.
      reset_state: as :func:`scan`'s (batch shape ``()`` or ``batch``; default ``cell.initial_state``).

    Returns:
      The state to give the next ``cell.step``; no gradient reaches the replaced rows of ``state``.
    """
    name = f"reset[{cell.name}]"
    resets = jnp.asarray(resets)
    batch_shape = tuple(resets.shape)
    try:
        check_state(name, cell.initial_state, params, state, batch_shape)
    except ValueError as err:
        # Either may be wrong: say which batch each one has.
        features = jax.tree.leaves(jax.eval_shape(lambda p: cell.initial_state(p, ()), params))
        leaves = jax.tree.leaves(state)
        if not (features and leaves):
            raise
        state_batch = tuple(np.shape(leaves[0]))[: max(0, np.ndim(leaves[0]) - len(features[0].shape))]
        if state_batch == batch_shape:
            raise
        raise ValueError(
            f"{name}: `resets` has batch shape {batch_shape}, `state` batch shape {state_batch}; {err}"
        ) from err
    mask = _resets(cell, params, resets[..., None], reset_state, batch_shape, 1, False, None, False, name=name)
    return restore(mask.mask[0], state, mask.state)


def _resets(
    cell: Cell,
    params: Params,
    resets: Any,
    reset_state: State | None,
    batch_shape: tuple[int, ...],
    num_steps: int,
    time_major: bool,
    lengths: Array | None,
    reverse: bool,
    *,
    name: str | None = None,
) -> Resets | None:
    """Checks ``resets`` and ``reset_state`` and lays them out for a backend: the mask time-major, in the order
    the backend runs the steps (flipped and shifted by one for ``reverse``), false past each length; the state
    broadcast over the batch."""
    name = name or f"scan[{cell.name}]"
    if resets is None:
        if reset_state is not None:
            raise ValueError(f"{name}: `reset_state` is only used with `resets`; pass both or neither.")
        return None
    resets = jnp.asarray(resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(
            f"{name}: `resets` must be a boolean array (True where a new segment starts), got dtype "
            f"{resets.dtype}; convert with `resets.astype(bool)` if it holds 0/1 flags."
        )
    layout = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    if tuple(resets.shape) != layout:
        what = "(T, *batch)" if time_major else "(*batch, T)"
        raise ValueError(f"{name}: `resets` must have shape {what} = {layout}, got {tuple(resets.shape)}.")
    mask = resets if time_major else jnp.moveaxis(resets, -1, 0)
    mask = reversed_resets(mask, lengths) if reverse else _within(mask, lengths)
    if reset_state is None:
        restored = cell.initial_state(params, batch_shape)
    else:
        restored = _broadcast_state(name, cell, params, reset_state, batch_shape)
    return Resets(mask=mask, state=restored)


def _within(resets: Array, lengths: Array | None) -> Array:
    return resets if lengths is None else resets & valid_mask(resets.shape[0], lengths)


def reversed_resets(resets: Array, lengths: Array | None = None) -> Array:
    """The time-major ``resets: (T, *batch)`` of a sequence for a run over it reversed (:func:`reverse_sequences`).

    Reversed, a segment is entered at its last step: the run resets before ``xs[t]`` where ``resets[t + 1]``
    (within the length), so each segment is again run on its own. Returned in the reversed run's order.
    """
    resets = _within(resets, lengths)
    ends = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    return reverse_sequences(ends, lengths)


def _broadcast_state(name: str, cell: Cell, params: Params, reset_state: State, batch_shape) -> State:
    """``reset_state`` of batch shape ``()`` or ``batch_shape``, broadcast to ``batch_shape``."""
    target = jax.eval_shape(lambda p: cell.initial_state(p, tuple(batch_shape)), params)
    unbatched = jax.eval_shape(lambda p: cell.initial_state(p, ()), params)
    leaves, tree = jax.tree.flatten(reset_state)
    if tree != jax.tree.structure(target):
        check_state(name, cell.initial_state, params, reset_state, (), arg="reset_state")  # raises, naming both
    shapes = [np.shape(leaf) for leaf in leaves]
    if shapes != [t.shape for t in jax.tree.leaves(target)]:
        paths = jax.tree_util.tree_flatten_with_path(unbatched)[0]
        for (path, one), got, full in zip(paths, shapes, jax.tree.leaves(target)):
            if got not in (one.shape, full.shape):
                raise ValueError(
                    f"{name}: `reset_state{jax.tree_util.keystr(path)}` must have shape {one.shape} (broadcast over "
                    f"the batch) or {full.shape} (batch {tuple(batch_shape)}), got {got}."
                )
    full = jax.tree.map(lambda s, t: jnp.broadcast_to(s, t.shape), reset_state, target)
    check_state(name, cell.initial_state, params, full, batch_shape, arg="reset_state")  # dtypes
    return jax.tree.map(lambda s, t: s.astype(t.dtype), full, target)


def _reversed_states(states: State, initial: State, lengths: Array) -> State:
    """States of a reversed run back in the original order; past its valid part a reversed sequence has consumed
    nothing yet, so its state there is the initial one."""
    steps = jax.tree.leaves(states)[0].shape[0]
    t = np.arange(steps).reshape((steps,) + (1,) * lengths.ndim)
    return jax.tree.map(
        lambda s, s0: where_valid(t < lengths, reverse_sequences(s, lengths), s0[None]), states, initial
    )


def reverse_sequences(xs: Array, lengths: Array | None = None) -> Array:
    """Reverses each sequence of a time-major ``xs: (T, *batch, ...)`` along time.

    With integer ``lengths: (*batch,)`` only each sequence's valid part ``[0, length)`` is reversed and the
    padding stays where it is. Applying it twice gives ``xs`` back. Lengths must lie in ``[0, T]`` (traced ones
    are clamped to it, as in :func:`scan`).
    """
    xs = jnp.asarray(xs)
    if lengths is None:
        return jnp.flip(xs, axis=0)
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"reverse_sequences: `lengths` must be an integer array, got dtype {lengths.dtype}.")
    if xs.ndim < lengths.ndim + 1 or tuple(xs.shape[1 : 1 + lengths.ndim]) != tuple(lengths.shape):
        raise ValueError(
            f"reverse_sequences: `lengths` must have the batch shape of the time-major `xs: (T, *batch, ...)`, "
            f"got lengths {tuple(lengths.shape)} for xs {tuple(xs.shape)}."
        )
    lengths = checked_lengths("reverse_sequences", lengths, xs.shape[0])
    t = jnp.arange(xs.shape[0]).reshape((xs.shape[0],) + (1,) * lengths.ndim)
    order = jnp.where(t < lengths, lengths - 1 - t, t)  # (T, *batch)
    order = order.reshape(order.shape + (1,) * (xs.ndim - order.ndim))
    return jnp.take_along_axis(xs, jnp.broadcast_to(order, xs.shape), axis=0)


def _check_unroll(name: str, unroll: Any) -> None:
    if unroll is None or isinstance(unroll, bool):
        return
    if not isinstance(unroll, (int, np.integer)) or unroll < 1:
        raise ValueError(f"{name}: `unroll` must be None, a bool or an int >= 1, got {unroll!r}.")


def _check_remat(name: str, remat: Any) -> None:
    if isinstance(remat, bool):
        return
    if isinstance(remat, str) or not callable(remat):
        raise TypeError(
            f"{name}: `remat` must be a bool or a jax.checkpoint policy (e.g. "
            f"jax.checkpoint_policies.nothing_saveable), got {remat!r}."
        )


def check_lengths(name: str, lengths: Any, batch_shape, num_steps: int) -> Array | None:
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
    return checked_lengths(f"scan[{name}]", lengths, num_steps)


def checked_lengths(name: str, lengths: Array, num_steps: int) -> Array:
    """``lengths`` checked to lie in ``[0, num_steps]`` when concrete; clamped to it when traced (under ``jit``
    the values cannot be checked, and every path then reads an out-of-range length the same way)."""
    try:
        concrete = np.asarray(lengths)
    except jax.errors.TracerArrayConversionError:
        return jnp.clip(lengths, 0, num_steps)
    if concrete.size and (concrete.min() < 0 or concrete.max() > num_steps):
        raise ValueError(
            f"{name}: `lengths` must lie in [0, T={num_steps}], got values in [{concrete.min()}, {concrete.max()}]."
        )
    return lengths
