"""Sequence-level combinators: a cell as a layer, stacked layers, bidirectional layers.

A :class:`Layer` maps a whole sequence to a sequence, ``apply(params, xs, state) -> (state, ys)``.
Stacking runs layer after layer over the whole sequence (not step by step), so each layer's input
projection stays one large matmul, as cuDNN does. ``stacked`` and ``bidirectional`` accept cells
or layers and return a layer, so they compose: PyTorch's ``nn.LSTM(num_layers=2,
bidirectional=True)`` is ``stacked([bidirectional(lstm(H), lstm(H))] * 2)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrax import dropout as _dropout
from recurrax.backends.base import Backend, Remat, valid_mask
from recurrax.core import (
    ApplyFn,
    Array,
    Cell,
    Layer,
    Params,
    PRNGKey,
    State,
    Structure,
    built_with,
    constructor,
    feature_axes,
    next_input,
)
from recurrax.dropout import RecurrentDropout
from recurrax.scan import check_mask, pack_kept, reverse_sequences, reversed_resets, scan, unpack_kept


class BidirectionalState(NamedTuple):
    """The states of the forward and the backward direction."""

    forward: State
    backward: State


def as_layer(
    cell: Cell | Layer,
    *,
    dropout: RecurrentDropout | None = None,
    unroll: int | bool | None = None,
    remat: Remat = False,
    backend: str | Backend = "auto",
) -> Layer:
    """Wraps a cell as a :class:`Layer` running :func:`recurrax.scan` (a layer is returned as is).

    Args:
      dropout: dropout inside the recurrence (:class:`recurrax.RecurrentDropout`: variational input and recurrent
        dropout, zoneout), drawn from the ``key`` given to ``apply``; none without one (evaluation).
      unroll, remat, backend: passed to :func:`recurrax.scan`.
    """
    if isinstance(cell, Layer):
        if dropout is not None:
            raise ValueError(
                f"as_layer: `dropout` applies inside one cell's recurrence, but got the layer {cell.name}."
            )
        return cell
    if not isinstance(cell, Cell):
        raise TypeError(f"as_layer: expected a recurrax.Cell or Layer, got {type(cell).__name__}.")
    if dropout is not None:
        _dropout.check(f"as_layer[{cell.name}]", dropout, cell)
    return _cell_layer(cell, dropout=dropout, unroll=unroll, remat=remat, backend=backend)


@constructor
def _cell_layer(
    cell: Cell,
    *,
    dropout: RecurrentDropout | None = None,
    unroll: int | bool | None,
    remat: Remat,
    backend: str | Backend,
) -> Layer:
    def apply(
        params, xs, state=None, *, lengths=None, resets=None, reset_state=None, key=None, time_major=False, mask=None
    ):
        run, xs = cell, jnp.asarray(xs)
        if dropout is not None:
            xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
            start = cell.initial_state(params, xs_tm.shape[1:-1]) if state is None else state
            run, xs_tm = _dropout.regularized(cell, params, xs_tm, start, dropout, key)
            if run is not cell and isinstance(backend, str) and backend not in ("auto", "sequential", "newton"):
                raise ValueError(
                    f"{cell.name}: recurrent dropout and zoneout change the cell's transition, which runs on "
                    f"'sequential' or 'newton', not {backend!r} (input dropout alone keeps any backend)."
                )
            xs = xs_tm if time_major else jnp.moveaxis(xs_tm, 0, -2)
        return scan(
            run,
            params,
            xs,
            state,
            lengths=lengths,
            resets=resets,
            reset_state=reset_state,
            time_major=time_major,
            mask=mask,
            unroll=unroll,
            remat=remat,
            backend=backend,
        )

    return Layer(init=cell.init, initial_state=cell.initial_state, apply=apply, name=cell.name)


def as_cell(layer: Cell | Layer, *, caller: str = "as_cell") -> Cell:
    """The one-step form of ``layer``, for streaming and for :mod:`recurrax.dynamics`: a cell as it is, the cell of
    ``as_layer(cell)``, and a :func:`stacked` layer of those as one cell that runs every layer for each time step.

    The stack's state is the tuple of its layers' states (``state[1].c`` is the second layer's cell state), its
    params those of the layer, its ``project`` the first layer's and its ``output`` what the stack outputs (with
    ``residual``, the sum of the layers' outputs). Dropout acts only with a key, which a step has not: the cell is
    the layer in evaluation. ``scan`` of the cell runs layer after layer over the whole sequence (the ``stack``
    backend), each layer on the backend ``auto`` picks for it among those with a forward mode (so not
    ``cudnn_lstm``); the ``unroll``, ``remat`` and ``backend`` given to ``stacked`` are the layer's, not the cell's:
    pass them to ``scan``.
    ``cell.step`` steps every layer.

    Args:
      layer: a cell or a layer.
      caller: the function named in errors.

    Raises:
      ValueError: for layers with no one-step form, such as :func:`bidirectional` (its backward direction needs
        the whole sequence first): analyse each direction's cell.
    """
    if isinstance(layer, Cell):
        return layer
    if not isinstance(layer, Layer):
        raise TypeError(f"{caller}: expected a recurrax.Cell or Layer, got {type(layer).__name__}.")
    built = built_with(layer)
    kind = None if built is None else built[0]
    if kind == "_cell_layer":
        cell, dropout = built[1]["cell"], built[1]["dropout"]
        return cell if dropout is None else _dropout.in_evaluation(cell, dropout)
    if kind == "stacked":
        parts = tuple(as_cell(part, caller=caller) for part in built[1]["layers"])
        return _stacked_cell(parts, residual=built[1]["residual"])
    what = "a bidirectional layer (its backward direction needs the whole sequence first); analyse each direction"
    raise ValueError(
        f"{caller}: {layer.name} has no one-step form: "
        + (what if kind == "bidirectional" else "only cells, as_layer(cell) and stacked layers of them have one")
        + "."
    )


@constructor
def _stacked_cell(cells: tuple[Cell, ...], *, residual: bool) -> Cell:
    """The cell running ``cells`` one after another for each step (see :func:`as_cell`)."""
    first, rest = cells[0], cells[1:]
    name = "stacked(" + ", ".join(c.name for c in cells) + ")"

    def init(key, input_size: int):
        return stacked(list(cells), residual=residual).init(key, input_size)

    def initial_state(params, batch_shape):
        _check_tuple(name, "params", params, len(cells))
        return tuple(c.initial_state(p, batch_shape) for c, p in zip(cells, params))

    def project(params, x):
        _check_tuple(name, "params", params, len(cells))
        return first.project(params[0], x)

    def transition(params, state, z):
        _check_tuple(name, "params", params, len(cells))
        _check_tuple(name, "state", state, len(cells))
        new = [first.transition(params[0], state[0], z)]
        y = first.output(new[0])
        for i, (c, p, s) in enumerate(zip(rest, params[1:], state[1:]), 1):
            new.append(c.step(p, s, y))
            y = next_input(c.output(new[-1]), y, residual=residual, layer=i)
        return tuple(new)

    def output(state):
        outs = [c.output(s) for c, s in zip(cells, state)]
        return sum(outs[1:], outs[0]) if residual else outs[-1]  # next_input's sum, written out

    def step(params, state, x):
        return transition(params, state, project(params, x))

    structure = Structure(
        "stack", of=(project, transition, output), feature_axes=feature_axes(first), layers=cells, residual=residual
    )
    return Cell(
        init=init,
        initial_state=initial_state,
        step=step,
        project=project,
        transition=transition,
        output=output,
        name=name,
        structure=structure,
    )


def output_size(layer: Cell | Layer, params: Params, input_size: int) -> int:
    """The feature size of ``layer``'s outputs for inputs of ``input_size`` features (no FLOPs spent)."""
    layer = as_layer(layer)
    _, ys = jax.eval_shape(lambda p: layer.apply(p, jnp.zeros((1, input_size))), params)
    return ys.shape[-1]


@constructor
def stacked(
    layers: Sequence[Cell | Layer],
    *,
    residual: bool = False,
    dropout: float = 0.0,
    unroll: int | bool | None = None,
    remat: Remat = False,
    backend: str | Backend = "auto",
) -> Layer:
    """Layers run one after another over the whole sequence (a multi-layer RNN).

    Args:
      layers: cells or layers; the first sees the inputs, each next one the previous outputs.
      residual: add each layer's input to its output, for every layer but the first (whose input
        size usually differs), as in GNMT (Wu et al., 2016). Sizes must match.
      dropout: dropout rate on the outputs of every layer but the last (as PyTorch's
        ``dropout``); active only when ``apply`` is given a ``key``.
      unroll, remat, backend: passed to :func:`recurrax.scan` for the cells among ``layers``.

    Returns:
      A :class:`Layer` whose params and state are tuples with one entry per layer.
    """
    if not layers:
        raise ValueError("stacked: `layers` must not be empty.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"stacked: `dropout` must lie in [0, 1), got {dropout!r}.")
    for i, layer in enumerate(layers):
        if _unmerged(layer) and (i < len(layers) - 1 or residual):
            raise ValueError(
                f"stacked: layer {i} is bidirectional(merge=None), whose outputs are a pair of arrays; "
                + ("a residual connection" if i == len(layers) - 1 else "the next layer")
                + " needs one array (merge the directions, or put it last without `residual`)."
            )
    parts = tuple(as_layer(layer, unroll=unroll, remat=remat, backend=backend) for layer in layers)
    name = "stacked(" + ", ".join(p.name for p in parts) + ")"

    def init(key, input_size: int):
        params, size = [], input_size
        for i, (layer, k) in enumerate(zip(parts, jax.random.split(key, len(parts)))):
            p = layer.init(k, size)
            params.append(p)
            if i == len(parts) - 1 and not residual:
                break  # the last layer's output size is needed by nothing (and is a pair for merge=None)
            out = output_size(layer, p, size)
            if residual and i > 0 and out != size:
                raise ValueError(
                    f"{name}: a residual connection needs layer {i}'s input and output sizes to match, "
                    f"got input {size} and output {out}."
                )
            size = out
        return tuple(params)

    def initial_state(params, batch_shape):
        return tuple(layer.initial_state(p, batch_shape) for layer, p in zip(parts, params))

    def apply(
        params, xs, state=None, *, lengths=None, resets=None, reset_state=None, key=None, time_major=False, mask=None
    ):
        if mask is not None:  # every layer skips the same steps: pack them once, for the whole stack
            return _packed(name, apply, params, xs, state, mask, lengths, resets, key, time_major)
        _check_tuple(name, "params", params, len(parts))
        if state is not None:
            _check_tuple(name, "state", state, len(parts))
        if reset_state is not None:
            _check_tuple(name, "reset_state", reset_state, len(parts))
        ys = jnp.asarray(xs) if time_major else jnp.moveaxis(jnp.asarray(xs), -2, 0)
        resets = time_major_resets(resets, time_major)
        keys = [None] * len(parts) if key is None else list(jax.random.split(key, len(parts)))
        finals = []
        for i, (layer, p) in enumerate(zip(parts, params)):
            s = None if state is None else state[i]
            r = None if reset_state is None else reset_state[i]
            final, out = layer.apply(p, ys, s, lengths=lengths, **segments(resets, r), key=keys[i], time_major=True)
            out = next_input(out, ys, residual=residual, layer=i)
            if dropout and key is not None and i < len(parts) - 1:
                keep = jax.random.bernoulli(jax.random.fold_in(keys[i], 1), 1.0 - dropout, out.shape)
                out = jnp.where(keep, out / (1.0 - dropout), 0.0).astype(out.dtype)
            finals.append(final)
            ys = out
        return tuple(finals), (ys if time_major else _batch_major(ys))

    return Layer(init=init, initial_state=initial_state, apply=apply, name=name)


def _packed(
    name: str,
    apply: ApplyFn,
    params: Params,
    xs: Array,
    state: State | None,
    mask: Array,
    lengths: Array | None,
    resets: Array | None,
    key: PRNGKey | None,
    time_major: bool,
) -> tuple[State, Any]:
    """``apply`` over the steps ``mask`` keeps: each sequence's kept steps packed to its front, run with their
    count as ``lengths``, and the outputs moved back (zeros at the skipped steps), as :func:`recurrax.scan` does."""
    if resets is not None:
        raise ValueError(f"{name}: `mask` and `resets` together are not supported (as in recurrax.scan).")
    xs_tm = jnp.asarray(xs) if time_major else jnp.moveaxis(jnp.asarray(xs), -2, 0)
    keep = check_mask(name, mask, xs_tm.shape[1:-1], xs_tm.shape[0], time_major)
    if lengths is not None:
        keep = keep & valid_mask(xs_tm.shape[0], jnp.asarray(lengths))
    packed, count = pack_kept(xs_tm, keep)
    final, ys = apply(params, packed, state, lengths=count, key=key, time_major=True)
    ys = jax.tree.map(lambda y: unpack_kept(y, keep), ys)
    return final, (ys if time_major else _batch_major(ys))


def _batch_major(ys: Any) -> Any:
    """Time-major outputs (an array, or the pair of an unmerged bidirectional layer) moved to ``(*batch, T, O)``."""
    return jax.tree.map(lambda y: jnp.moveaxis(y, 0, -2), ys)


def _unmerged(layer: Cell | Layer) -> bool:
    """Whether ``layer`` is ``bidirectional(..., merge=None)``, whose outputs are a pair, not one array."""
    built = built_with(layer) if isinstance(layer, Layer) else None
    return built is not None and built[0] == "bidirectional" and built[1]["merge"] is None


MERGES: dict[str, Callable[[Array, Array], Array]] = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": jnp.add,
    "mul": jnp.multiply,
    "ave": lambda f, b: (f + b) / 2,
}


@constructor
def bidirectional(
    forward: Cell | Layer,
    backward: Cell | Layer,
    *,
    merge: str | Callable[[Array, Array], Array] | None = "concat",
    unroll: int | bool | None = None,
    remat: Remat = False,
    backend: str | Backend = "auto",
) -> Layer:
    """Runs ``forward`` over the sequence and ``backward`` over it reversed, and merges the outputs.

    The backward direction reverses only each sequence's valid part when ``lengths`` is given, and
    its outputs are returned in the original time order, so ``outputs[t]`` of both directions
    refer to the same ``xs[t]``. With ``resets``, each direction runs each segment on its own (the
    backward one from the segment's end, as :func:`recurrax.scan` with ``reverse=True``).

    Args:
      forward, backward: cells or layers.
      merge: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"``, a function ``(f, b) -> y``, or ``None``:
        the outputs are then the pair ``(forward, backward)``, each ``(*batch, T, O)`` in the original time order
        (Keras's ``merge_mode=None``); such a layer can only be the last of a :func:`stacked`.
      unroll, remat, backend: passed to :func:`recurrax.scan` for cells.

    Returns:
      A :class:`Layer` with params ``{"forward": ..., "backward": ...}`` and state
      :class:`BidirectionalState`.
    """
    if merge is None:
        merge_fn = lambda f, b: (f, b)  # noqa: E731
    elif isinstance(merge, str):
        if merge not in MERGES:
            raise ValueError(
                f"bidirectional: unknown `merge` {merge!r}; expected one of {sorted(MERGES)} or a function."
            )
        merge_fn = MERGES[merge]
    elif callable(merge):
        merge_fn = merge
    else:
        raise TypeError(f"bidirectional: `merge` must be a string, a function or None, got {merge!r}.")
    options = {"unroll": unroll, "remat": remat, "backend": backend}
    fwd, bwd = as_layer(forward, **options), as_layer(backward, **options)
    name = f"bidirectional({fwd.name}, {bwd.name})"

    def init(key, input_size: int):
        k_f, k_b = jax.random.split(key)
        return {"forward": fwd.init(k_f, input_size), "backward": bwd.init(k_b, input_size)}

    def initial_state(params, batch_shape):
        return BidirectionalState(
            fwd.initial_state(params["forward"], batch_shape), bwd.initial_state(params["backward"], batch_shape)
        )

    def apply(
        params, xs, state=None, *, lengths=None, resets=None, reset_state=None, key=None, time_major=False, mask=None
    ):
        if mask is not None:  # the backward direction then starts from each sequence's last kept step
            return _packed(name, apply, params, xs, state, mask, lengths, resets, key, time_major)
        if not (isinstance(params, dict) and set(params) == {"forward", "backward"}):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise TypeError(f"{name}: `params` must be a dict with keys ['backward', 'forward'], got {got}.")
        for arg, value in (("state", state), ("reset_state", reset_state)):
            if value is not None and not isinstance(value, BidirectionalState):
                raise TypeError(
                    f"{name}: `{arg}` must be a BidirectionalState(forward, backward) (as `initial_state` "
                    f"gives), got {type(value).__name__}."
                )
        xs_tm = jnp.asarray(xs) if time_major else jnp.moveaxis(jnp.asarray(xs), -2, 0)
        s_f, s_b = (None, None) if state is None else state
        r_f, r_b = (None, None) if reset_state is None else reset_state
        k_f, k_b = (None, None) if key is None else jax.random.split(key)
        resets_f = time_major_resets(resets, time_major)
        resets_b = None if resets is None else reversed_resets(jnp.asarray(resets_f), lengths)
        final_f, ys_f = fwd.apply(
            params["forward"], xs_tm, s_f, lengths=lengths, **segments(resets_f, r_f), key=k_f, time_major=True
        )
        xs_b = reverse_sequences(xs_tm, lengths)
        final_b, ys_b = bwd.apply(
            params["backward"], xs_b, s_b, lengths=lengths, **segments(resets_b, r_b), key=k_b, time_major=True
        )
        if merge in ("sum", "mul", "ave") and ys_f.shape[-1] != ys_b.shape[-1]:
            raise ValueError(
                f"{name}: `merge` {merge!r} needs both directions' outputs of one size, got "
                f"{ys_f.shape[-1]} (forward) and {ys_b.shape[-1]} (backward); use merge='concat'."
            )
        ys = merge_fn(ys_f, reverse_sequences(ys_b, lengths))
        return BidirectionalState(final_f, final_b), (ys if time_major else _batch_major(ys))

    return Layer(init=init, initial_state=initial_state, apply=apply, name=name)


def segments(resets: Array | None, reset_state: State | None) -> dict[str, Any]:
    """The ``resets``/``reset_state`` keywords of a layer's ``apply``, only where given: a layer written before
    resets existed (no such arguments) still runs every call without them."""
    given = {"resets": resets, "reset_state": reset_state}
    return {k: v for k, v in given.items() if v is not None}


def time_major_resets(resets: Array | None, time_major: bool) -> Array | None:
    """``resets`` in the time-major layout (``(*batch, T)`` moved to ``(T, *batch)`` unless already time-major)."""
    if resets is None or time_major:
        return resets
    return jnp.moveaxis(jnp.asarray(resets), -1, 0)


def _check_tuple(name: str, arg: str, value: Any, n: int) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = (
            f"a {type(value).__name__} of length {len(value)}"
            if isinstance(value, (tuple, list))
            else repr(type(value))
        )
        raise ValueError(f"{name}: `{arg}` must be a tuple with one entry per layer ({n}), got {got}.")
