"""Sequence parallelism for linear-recurrence cells: one sequence split along time across devices.

A cell that declares a diagonal linear recurrence ``s_t = a_t * s_{t-1} + b_t`` (``Structure("linear")``:
minGRU, minLSTM, LRU) composes over a block of steps into one affine map ``s -> A s + B``. So with the
time axis sharded over ``D`` devices (``shard_map``), each device

1. projects its block and scans it locally from "no state", giving every step's composed ``(A_t, B_t)``
   and its block's summary ``(A, B)`` (the last step's);
2. gathers the ``D`` summaries (``all_gather``: ``D`` states per device, tiny next to the sequence) and
   composes them with an associative scan, which gives the state entering every block, its own included;
3. fixes its steps up locally, ``s_t = A_t s_in + B_t``, and reads out the outputs.

The result equals the single-device :func:`recurrax.scan` to rounding; the work per device is ``T / D``
steps plus ``O(D)`` for the carries, and gradients flow through ``shard_map`` as usual.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recurrax import linear_scan as _ls
from recurrax.core import Array, Cell, Params, State, check_state, structure_of
from recurrax.scan import scan


def sequence_parallel_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    mesh: Mesh,
    axis: str = "time",
    batch_axis: str | None = None,
    time_major: bool = False,
) -> tuple[State, Array]:
    """Runs a linear-recurrence ``cell`` over ``xs`` with the time axis sharded over the mesh axis ``axis``.

    Args:
      cell: a cell that declares a linear recurrence (e.g. ``recurrax.min_gru``, ``min_lstm``, ``lru``).
      params: its params (replicated on every device).
      xs: ``(*batch, T, I)`` (``(T, *batch, I)`` with ``time_major``); ``T`` a multiple of the axis size.
      state: the initial state (batch shape ``batch``), zeros when ``None``; replicated.
      mesh: the mesh; its other axes, if any, see the same (replicated) work.
      axis: the mesh axis the time steps are split over.
      batch_axis: a mesh axis to split the leading batch axis over as well (data and sequence
        parallelism together); ``None`` repeats the work of each time block on the mesh's other axes.
      time_major: whether the time axis of ``xs`` and of the outputs comes first.

    Returns:
      ``(final_state, outputs)`` as :func:`recurrax.scan`: ``outputs: (*batch, T, O)`` sharded along
      time over ``axis`` (and batch over ``batch_axis``), ``final_state`` replicated over ``axis``.
    """
    xs = jnp.asarray(xs)
    structure = structure_of(cell) if isinstance(cell, Cell) else None
    if structure is None or structure.kind != "linear":
        name = getattr(cell, "name", type(cell).__name__)
        raise TypeError(
            f"sequence_parallel_scan: `cell` must declare a linear recurrence (Structure('linear'), as min_gru, "
            f"min_lstm and lru do); {name!r} does not."
        )
    for name in (axis, batch_axis):
        if name is not None and name not in mesh.shape:
            raise ValueError(f"sequence_parallel_scan: the mesh has no axis {name!r}; its axes are {mesh.axis_names}.")
    if batch_axis == axis:
        raise ValueError(f"sequence_parallel_scan: `batch_axis` and `axis` must differ, got {axis!r} for both.")
    if xs.ndim < 2 + (batch_axis is not None):
        need = "(B, *batch, T, I)" if batch_axis is not None else "(*batch, T, I)"
        raise ValueError(f"sequence_parallel_scan: `xs` must have shape {need}, got {tuple(xs.shape)}.")
    jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape, xs.dtype))  # the input-size check
    time_dim = 0 if time_major else xs.ndim - 2
    num_steps, devices = xs.shape[time_dim], mesh.shape[axis]
    if num_steps % devices:
        raise ValueError(
            f"sequence_parallel_scan: the number of steps T={num_steps} is not divisible by {devices}, the "
            f"size of the mesh axis {axis!r}; pad the sequence or pick another mesh."
        )
    batch_shape = xs.shape[:time_dim] + xs.shape[time_dim + 1 : -1]
    if state is None:
        state = cell.initial_state(params, batch_shape)
    else:
        check_state(cell.name, cell.initial_state, params, state, batch_shape)
    if not num_steps:
        return scan(cell, params, xs, state, time_major=time_major)  # no steps to split: the initial state
    batch_dim = None if batch_axis is None else (1 if time_major else 0)
    if batch_axis is not None and xs.shape[batch_dim] % mesh.shape[batch_axis]:
        raise ValueError(
            f"sequence_parallel_scan: the batch size {xs.shape[batch_dim]} is not divisible by "
            f"{mesh.shape[batch_axis]}, the size of the mesh axis {batch_axis!r}."
        )
    dims = {time_dim: axis, batch_dim: batch_axis}
    time_spec = PartitionSpec(*[dims.get(d) for d in range(xs.ndim)])
    state_spec = PartitionSpec(batch_axis)  # state leaves are (*batch, S): the leading batch axis split

    def local(params: Params, xs_block: Array, state: State) -> tuple[State, Array]:
        lin = structure.recurrence
        # The composition rules of recurrax.linear_scan (affine maps, or their logarithms).
        combine = _ls.compose_log if lin.log_space else _ls.compose
        apply = functools.partial(_ls.apply_affine, log_space=lin.log_space)
        xs_tm = xs_block if time_major else jnp.moveaxis(xs_block, -2, 0)
        zs = cell.project(params, xs_tm)
        a, b = lin.coefficients(params, zs)
        composed = jax.lax.associative_scan(combine, (a, b), axis=0)  # step t of the block from its start
        summaries = jax.lax.all_gather(jax.tree.map(lambda c: c[-1], composed), axis)  # (D, *batch, S) each
        through = jax.lax.associative_scan(combine, summaries, axis=0)  # blocks 0..d composed
        s0 = lin.carry(state)
        s0 = s0.astype(jnp.result_type(s0, a))
        ends = apply(through, s0)  # the state leaving each block
        entering = jnp.concatenate([s0[None], ends[:-1]])[jax.lax.axis_index(axis)]
        states = lin.state(params, apply(composed, entering).astype(lin.carry(state).dtype), zs)
        # The final state lives on the last device; a masked psum hands it to every device.
        last = jax.lax.axis_index(axis) == devices - 1
        final = jax.tree.map(lambda s: jax.lax.psum(jnp.where(last, s[-1], jnp.zeros_like(s[-1])), axis), states)
        outs = cell.output(states)
        return final, (outs if time_major else jnp.moveaxis(outs, 0, -2))

    run = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(), time_spec, state_spec),
        out_specs=(state_spec, time_spec),
    )
    if axis in mesh.explicit_axes or batch_axis in mesh.explicit_axes:
        # Explicit axes are part of the array's type: the time split must be asked for, not inferred.
        xs = jax.reshard(xs, NamedSharding(mesh, time_spec))
        state = jax.tree.map(lambda s: jax.reshard(s, NamedSharding(mesh, state_spec)), state)
    return run(params, xs, state)
