"""What every backend shares: the :class:`Backend` and :class:`Request` types and the helpers for their runs.

A backend receives the problem the driver (:func:`recurrax.scan`) has already laid out: time-major inputs
``xs: (T, *batch, I)``, not yet projected, with each sequence's valid part first (the driver flips it for
``reverse``), the initial state, and ``lengths: (*batch,)`` or ``None``. It returns
``(final_state, outputs, states)``: outputs ``(T, *batch, O)`` zero past each sequence's length, and every state
over time (leaves ``(T, *batch, ...)``, frozen past each length) when the request asks for them, else ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrax.core import Array, Cell, Params, State, Structure, feature_axes, structure_of

Remat = bool | Callable[..., Any]
"""``remat``: ``False``, ``True`` (save nothing but the inputs), or a ``jax.checkpoint_policies`` policy."""


class Request(NamedTuple):
    """What one call asks of a backend; built once by :func:`request`, the only place the platform is read.

    Attributes:
      structure: :func:`recurrax.core.structure_of` the cell (``None`` once its functions were replaced).
      declared: the kind the cell declares, whether or not its functions still match (for error messages).
      num_steps: ``T``.
      batch_shape: the batch dims of the call.
      dtypes: the distinct dtypes of the params, inputs and state, sorted by name.
      platform: JAX's default backend (``"cpu"``, ``"gpu"``, ``"tpu"``).
      lengths: whether ``lengths`` were given.
      resets: whether ``resets`` were given (:class:`Resets`).
      reverse: whether the cell runs from the last valid step to the first.
      remat: as :data:`Remat`.
      unroll: ``None`` (the backend's measured default), an ``int >= 1`` or a ``bool`` (as ``lax.scan``).
      return_states: whether every state over time is wanted.
      feature_axes: the trailing axes one example's features span (:func:`recurrax.core.feature_axes`: 1, or
        ``1 + n`` for a convolutional cell's ``n`` spatial axes), as the cell declares it, replaced functions or not.
    """

    structure: Structure | None
    declared: str | None
    num_steps: int
    batch_shape: tuple[int, ...]
    dtypes: tuple[str, ...]
    platform: str
    lengths: bool = False
    resets: bool = False
    reverse: bool = False
    remat: Remat = False
    unroll: int | bool | None = None
    return_states: bool = False
    feature_axes: int = 1

    @property
    def rows(self) -> int:
        """``T * N``: steps times batch elements."""
        return self.num_steps * math.prod(self.batch_shape)

    @property
    def kind(self) -> str | None:
        return None if self.structure is None else self.structure.kind

    @property
    def dtype(self) -> str | None:
        """The one dtype of every operand, or ``None`` where they differ."""
        return self.dtypes[0] if len(self.dtypes) == 1 else None


class Resets(NamedTuple):
    """Where a run resets its state, as the driver hands it to a backend.

    Attributes:
      mask: boolean ``(T, *batch)`` in the order the backend runs the steps: ``mask[t]`` replaces the state by
        ``state`` before step ``t`` (false past each length).
      state: the state restored, leaves ``(*batch, ...)``.
    """

    mask: Array
    state: State


Run = Callable[
    [Cell, Params, Array, State, "Array | None", "Resets | None", Request], "tuple[State, Array, State | None]"
]


class Backend(NamedTuple):
    """One way to execute :func:`recurrax.scan`.

    Attributes:
      name: what ``scan(..., backend=name)`` asks for.
      supports: ``request -> None`` if the backend can run the call, else the reason it cannot.
      prefers: ``request -> bool``, under ``backend="auto"``: whether it should run a call it supports (the
        measured thresholds of :mod:`recurrax.backends.tuning`).
      run: ``(cell, params, xs, state, lengths, resets, request) -> (final, outputs, states)`` (module docstring;
        ``resets`` a :class:`Resets` or ``None``).
      forward_mode: whether ``jax.jvp`` (forward-mode differentiation) works through ``run``.
      description: one line for :func:`recurrax.backends.available` and the docs.
    """

    name: str
    supports: Callable[[Request], str | None]
    prefers: Callable[[Request], bool]
    run: Run
    forward_mode: bool = True
    description: str = ""


def request(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    time_major: bool = False,
    lengths: Array | None = None,
    resets: Array | None = None,
    reverse: bool = False,
    remat: Remat = False,
    unroll: int | bool | None = None,
    return_states: bool = False,
) -> Request:
    """The :class:`Request` of ``scan(cell, params, xs, state, ...)`` (``xs`` in the caller's layout; ``state``
    ``None`` for the zero state)."""
    shape = tuple(xs.shape)
    num_steps = shape[0] if time_major else shape[-2]
    batch = shape[1:-1] if time_major else shape[:-2]
    if state is None:
        state = jax.eval_shape(lambda p: cell.initial_state(p, tuple(batch)), params)
    leaves = [*jax.tree.leaves(params), xs, *jax.tree.leaves(state)]
    return Request(
        structure=structure_of(cell),
        declared=None if cell.structure is None else cell.structure.kind,
        num_steps=num_steps,
        batch_shape=tuple(batch),
        dtypes=tuple(sorted({str(jnp.result_type(leaf)) for leaf in leaves})),
        platform=jax.default_backend(),
        lengths=lengths is not None,
        resets=resets is not None,
        reverse=reverse,
        remat=remat,
        unroll=unroll,
        return_states=return_states,
        feature_axes=feature_axes(cell),
    )


# ------------------------------------------------------------------------------- reasons for supports()


def needs_kind(req: Request, kind: str, backend: str) -> str | None:
    """Why a backend that runs its own equations for ``kind`` cannot run this cell, or ``None``."""
    if req.kind == kind:
        return None
    if req.declared == kind:
        replaced = "`project`, `transition` or `output`" if kind == "stack" else "`project` or `transition`"
        return (
            f"the cell's {replaced} was replaced, and {backend!r} runs the {kind} equations, not the cell's functions"
        )
    what = {
        "lstm": (
            "the plain LSTM (recurrax.lstm with the default activations and without peepholes, projection, layer "
            "norm, clipping or a compute dtype)"
        ),
        "gru": (
            "the plain reset-after GRU (recurrax.gru with reset_after=True, the default activations and no "
            "compute dtype)"
        ),
        "linear": "a cell that declares a linear recurrence (min_gru, min_lstm, lru)",
        "stack": "the one-step form of a stacked layer (recurrax.as_cell(stacked([...])))",
    }[kind]
    return f"{backend!r} runs only {what}"


def needs_one_dtype(req: Request, backend: str, allowed: tuple[str, ...] | None = None) -> str | None:
    """Why the operands' dtypes rule a backend out (they must agree, and be in ``allowed``), or ``None``."""
    if req.dtype is None:
        return f"{backend!r} needs params, inputs and state of one dtype, got {', '.join(req.dtypes)}"
    if allowed is not None and req.dtype not in allowed:
        return f"{backend!r} runs {'/'.join(allowed)} only, got {req.dtype}"
    return None


def needs_platform(req: Request, platform: str, backend: str) -> str | None:
    if req.platform == platform:
        return None
    return f"{backend!r} runs on {platform.upper()} only; the JAX platform here is {req.platform!r}"


def refuses_resets(req: Request, backend: str, why: str) -> str | None:
    """The reason a backend that cannot reset its state inside a sequence gives, or ``None`` without resets."""
    return f"{backend!r} cannot run `resets`: {why}" if req.resets else None


def first_reason(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r is not None), None)


# ------------------------------------------------------------------------------------ helpers for run()


def checkpointed(fn: Callable, remat: Remat) -> Callable:
    """``fn`` under ``jax.checkpoint`` as ``remat`` asks (``False``: ``fn`` itself)."""
    if remat is False:
        return fn
    return jax.checkpoint(fn) if remat is True else jax.checkpoint(fn, policy=remat)


def valid_mask(num_steps: int, lengths: Array) -> Array:
    """``(T, *batch)``: whether step ``t`` of each sequence is within its length."""
    return jnp.arange(num_steps).reshape((num_steps,) + (1,) * lengths.ndim) < lengths


def where_valid(mask: Array, a: Array, b: Array) -> Array:
    """``where(mask, a, b)`` with ``mask`` (leading dims of ``a``) broadcast over the trailing feature axes."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)


def restore(mask: Array, state: State, restored: State) -> State:
    """``state`` with the rows where ``mask: (*batch,)`` replaced by ``restored``'s: a ``where``, so no gradient
    reaches the replaced rows of ``state``."""
    return jax.tree.map(lambda s, r: where_valid(mask, r, s), state, restored)


def from_states(cell: Cell, states: State, initial: State, lengths: Array | None, req: Request):
    """``(final, outputs, states)`` from every state over time of a backend that runs each sequence to ``T``.

    Right-padded and run forward, a sequence's states before its length do not depend on its padding, so the
    states past it are replaced: by the state at its last valid step (the initial one for length 0).
    """
    if lengths is None:
        final = jax.tree.map(lambda s: s[-1], states)
        return final, cell.output(states), (states if req.return_states else None)
    valid = valid_mask(req.num_steps, lengths)
    last = jnp.maximum(lengths - 1, 0)

    def at_last(s: Array, s0: Array) -> Array:
        idx = last.reshape((1, *last.shape) + (1,) * (s.ndim - 1 - last.ndim))
        picked = jnp.take_along_axis(s, jnp.broadcast_to(idx, (1, *s.shape[1:])), axis=0)[0]
        return where_valid(lengths > 0, picked, s0)

    final = jax.tree.map(at_last, states, initial)
    outputs = cell.output(states)
    outputs = where_valid(valid, outputs, jnp.zeros_like(outputs))
    if not req.return_states:
        return final, outputs, None
    frozen = jax.tree.map(lambda s, f: where_valid(valid, s, jnp.broadcast_to(f, s.shape)), states, final)
    return final, outputs, frozen
