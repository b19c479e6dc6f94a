"""Meshes and shardings for data-parallel training, single- or multi-host, on JAX's own runtime.

Nothing here replaces ``jax.sharding``: these are the few lines every data-parallel training script
writes, with the checks that turn a wrong batch size or a wrong rule into a clear message::

    mesh = distributed.make_mesh()                             # all devices on one "data" axis
    params = distributed.shard_params(params, mesh)            # replicated (or sharded by a rule)
    batch = distributed.shard_batch(batch, mesh)               # split along the leading axis
    step = jax.jit(train_step)                                 # XLA inserts the gradient all-reduce

On several hosts, call ``jax.distributed.initialize(...)`` first (see ``docs/distributed.md``); each
process then passes its own slice of the batch to :func:`shard_batch`, which assembles the global
array with ``jax.make_array_from_process_local_data``.

Checkpoints of sharded params are written with orbax directly; :func:`restore_checkpoint` adds a
check that names the first leaf whose stored shape or dtype does not fit the target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

PyTree = Any
_TMP_MARK = ".orbax-checkpoint-tmp"  # in the name of a directory orbax has not committed yet
Rule = Callable[[str, Any], PartitionSpec | None]


def make_mesh(
    axis_shapes: Sequence[int] | None = None,
    axis_names: Sequence[str] = ("data",),
    *,
    devices: Sequence[jax.Device] | None = None,
    axis_types: Sequence[AxisType] | None = None,
) -> Mesh:
    """A :class:`jax.sharding.Mesh` over ``devices`` (default: every device of every process).

    Args:
      axis_shapes: the size of each axis; one may be ``-1`` (the rest of the devices). Default: all
        devices on the first axis, 1 on the others.
      axis_names: one name per axis, e.g. ``("data",)`` or ``("data", "model")``.
      devices: the devices to lay out.
      axis_types: per axis; default ``AxisType.Auto`` for all (``jax.make_mesh``'s own default is
        ``Explicit``): jit then propagates the shardings of the arrays it is given, so a training step
        written for one device runs unchanged on placed arrays.

    Returns:
      the mesh, with ``jax.make_mesh``'s device order (which follows the hardware's topology).
    """
    devices = list(jax.devices() if devices is None else devices)
    names = tuple(axis_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"make_mesh: `axis_names` must be distinct names, got {names}.")
    shape = [len(devices)] + [1] * (len(names) - 1) if axis_shapes is None else [int(s) for s in axis_shapes]
    if len(shape) != len(names):
        raise ValueError(f"make_mesh: `axis_shapes` {tuple(shape)} and `axis_names` {names} differ in length.")
    if shape.count(-1) > 1 or any(s < 1 and s != -1 for s in shape):
        raise ValueError(f"make_mesh: `axis_shapes` must be positive, with at most one -1, got {tuple(shape)}.")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if len(devices) % known:
            raise ValueError(
                f"make_mesh: `axis_shapes` {tuple(shape)}: the other axes take {known} devices, which does not "
                f"divide the {len(devices)} devices, so -1 has no size."
            )
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"make_mesh: `axis_shapes` {tuple(axis_shapes)} must multiply to the number of devices, "
            f"{len(devices)}, got {math.prod(axis_shapes)}."
        )
    types = tuple(axis_types) if axis_types is not None else (AxisType.Auto,) * len(names)
    return jax.make_mesh(tuple(shape), names, axis_types=types, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The sharding that splits an array's leading (batch) axis over the mesh axis ``axis``."""
    _check_axis(mesh, axis)
    return NamedSharding(mesh, PartitionSpec(axis))


def by_path(patterns: Mapping[str, PartitionSpec]) -> Rule:
    """A sharding rule from ``{regex: PartitionSpec}``, matched (``re.search``) against a leaf's path.

    Paths are the leaf's keys joined by ``/``, e.g. ``"params/RNN_0/cell/w_i"``; the first matching
    pattern wins, and a leaf that matches none is replicated. Example::

        rule = by_path({r"cell/w_[ih]$": PartitionSpec(None, "model")})   # split the gate columns
    """
    compiled = [(re.compile(p), spec) for p, spec in patterns.items()]

    def rule(path: str, leaf: Any) -> PartitionSpec | None:
        return next((spec for pattern, spec in compiled if pattern.search(path)), None)

    return rule


def param_shardings(params: PyTree, mesh: Mesh, rule: Rule | None = None) -> PyTree:
    """A :class:`NamedSharding` for every leaf of ``params``: replicated, or as ``rule(path, leaf)`` says.

    ``rule`` returns a :class:`PartitionSpec` (or ``None`` to replicate); see :func:`by_path`. Raises,
    naming the leaf, when a spec names an unknown mesh axis, has more entries than the leaf has axes, or
    splits an axis whose size the mesh axes do not divide.
    """

    def leaf_sharding(path, leaf):
        name = _path_str(path)
        spec = rule(name, leaf) if rule is not None else None
        spec = PartitionSpec() if spec is None else spec
        shape = tuple(np.shape(leaf))
        if len(spec) > len(shape):
            raise ValueError(f"param_shardings: `{name}` has shape {shape}, too few axes for the spec {spec}.")
        for dim, axes in zip(shape, spec):
            axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
            for axis in axes:
                _check_axis(mesh, axis, who=f"param_shardings: the spec {spec} of `{name}`")
            parts = math.prod(mesh.shape[a] for a in axes)
            if dim % parts:
                raise ValueError(
                    f"param_shardings: `{name}` has shape {shape}; the spec {spec} splits an axis of size "
                    f"{dim} into {parts} parts, which does not divide it."
                )
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(leaf_sharding, params)


def shard_params(params: PyTree, mesh: Mesh, rule: Rule | None = None) -> PyTree:
    """``params`` placed on ``mesh`` with :func:`param_shardings` (replicated unless ``rule`` says otherwise)."""
    return jax.device_put(params, param_shardings(params, mesh, rule))


def shard_batch(
    batch: PyTree, mesh: Mesh, axis: str = "data", *, pad: bool = False
) -> PyTree | tuple[PyTree, jax.Array]:
    """Splits every leaf of ``batch`` along its leading axis over the mesh axis ``axis``.

    In a multi-process run each process passes its own slice of the global batch (the global batch
    is the processes' slices in ``process_index`` order).

    Args:
      batch: a pytree of arrays, all with one leading (batch) size ``B`` (this process's part).
      mesh: the mesh.
      axis: the data-parallel mesh axis.
      pad: when ``B`` is not a multiple of the axis size, pad each leaf with zero rows up to the next
        multiple and also return ``weights``, 1.0 for real rows and 0.0 for padding, to weight the loss.
        Without ``pad`` such a batch raises a ValueError that gives both numbers.

    Returns:
      the sharded batch, and with ``pad`` the pair ``(batch, weights)`` with ``weights: (B_padded,)``.
    """
    sharding = batch_sharding(mesh, axis)
    leaves = jax.tree.leaves(batch)
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if not leaves or len(sizes) != 1 or None in sizes:
        shapes = [tuple(np.shape(x)) for x in leaves]
        raise ValueError(f"shard_batch: `batch` leaves must share one leading batch size, got shapes {shapes}.")
    size = sizes.pop()
    multiple = local_batch_multiple(mesh, axis)
    padding = -size % multiple
    if padding and not pad:
        procs = jax.process_count()
        where = "" if procs == 1 else f" (this process's share of it over {procs} processes)"
        raise ValueError(
            f"shard_batch: the batch size {size} is not divisible by {multiple}, the size of the mesh axis "
            f"{axis!r}{where}; use a batch size that is a multiple of {multiple}, or pass pad=True to pad "
            f"{padding} rows and weight the loss with the returned weights."
        )

    def put(x):
        x = np.asarray(x)
        if padding:
            x = np.concatenate([x, np.zeros((padding, *x.shape[1:]), x.dtype)])
        return jax.make_array_from_process_local_data(sharding, x)

    sharded = jax.tree.map(put, batch)
    if not pad:
        return sharded
    weights = (np.arange(size + padding) < size).astype(np.float32)
    return sharded, jax.make_array_from_process_local_data(sharding, weights)


def local_batch_multiple(mesh: Mesh, axis: str = "data") -> int:
    """What this process's batch size must be a multiple of: its share of the mesh axis ``axis``."""
    _check_axis(mesh, axis)
    return max(1, mesh.shape[axis] // jax.process_count())


def restore_checkpoint(path: str | PathLike, target: PyTree) -> PyTree:
    """Restores an orbax checkpoint written with ``orbax.checkpoint.StandardCheckpointer`` into ``target``'s layout.

    ``target`` is a pytree of arrays or ``jax.ShapeDtypeStruct`` with ``sharding=`` set, so the leaves
    land sharded on *this* run's mesh, whatever the device count that wrote them. Before reading, the
    stored tree is checked against ``target``: a missing or extra leaf, or a leaf whose stored shape or
    dtype differs, raises a ValueError naming its path.

    Orbax writes a checkpoint into a temporary directory and renames it (or marks it committed) when
    complete. A path that does not exist raises FileNotFoundError, and one that is, or lies inside, an
    uncommitted temporary directory (a save that was interrupted) raises ValueError, so a half-written
    checkpoint is never read. (``orbax.checkpoint.CheckpointManager`` lists committed steps only.)
    """
    import orbax.checkpoint as ocp  # an optional dependency (the `checkpoint` extra)
    from etils import epath  # orbax's own path type (a dependency of orbax)

    path = epath.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"restore: no checkpoint at {path}.")
    # Orbax's own test for the directory (either commit convention); for its parents, the name orbax gives
    # temporary directories (an item inside an uncommitted step is itself complete).
    temporary = [p for p in path.parents if _TMP_MARK in p.name] or ([path] if ocp.step.is_path_temporary(path) else [])
    if temporary:
        raise ValueError(
            f"restore: {path} is an incomplete checkpoint (its save never committed: {temporary[0].name})."
        )
    with ocp.StandardCheckpointer() as checkpointer:
        stored = checkpointer.metadata(path).item_metadata.tree
        check_tree_fits(stored, target, what=f"the checkpoint at {path}")
        return checkpointer.restore(path, target)


def check_tree_fits(stored: PyTree, target: PyTree, *, what: str = "the stored tree") -> None:
    """Raises a ValueError naming the first path where ``stored`` and ``target`` differ in keys, shape or dtype."""
    got = {_path_str(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(stored)}
    want = {_path_str(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(target)}
    for name in sorted(set(got) | set(want)):
        if name not in got:
            raise ValueError(f"restore: `{name}` is in the target but not in {what}.")
        if name not in want:
            raise ValueError(f"restore: `{name}` is in {what} but not in the target.")
        stored_shape, target_shape = tuple(got[name].shape), tuple(np.shape(want[name]))
        if stored_shape != target_shape:
            raise ValueError(
                f"restore: `{name}` has shape {stored_shape} in {what}, but the target expects {target_shape}."
            )
        stored_dtype, target_dtype = np.dtype(got[name].dtype), np.dtype(want[name].dtype)
        if stored_dtype != target_dtype:
            raise ValueError(
                f"restore: `{name}` has dtype {stored_dtype} in {what}, but the target expects {target_dtype}."
            )


def _check_axis(mesh: Mesh, axis: str, *, who: str = "") -> None:
    if axis not in mesh.shape:
        who = who or "distributed"
        raise ValueError(f"{who}: the mesh has no axis {axis!r}; its axes are {tuple(mesh.axis_names)}.")


def _path_str(path: Sequence[Any]) -> str:
    """A leaf's path as keys joined by ``/``: ``params/RNN_0/cell/w_i`` (NamedTuple fields by name)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)
