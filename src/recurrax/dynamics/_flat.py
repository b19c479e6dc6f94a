"""A single example's state pytree as one flat vector, and the checks every analysis shares.

The analyses work on one example at a time (vmap over batches, seeds or params): state leaves are
``(n_i,)`` vectors and the flat state is their concatenation in pytree order, ``(S,)`` with
``S = sum n_i``. For ``LSTMState(h, c)`` that is ``[h, c]``.

Complex leaves (the LRU's ``x``) enter in their *real view*: each complex unit becomes two real
coordinates, interleaved as ``[Re x_0, Im x_0, Re x_1, Im x_1, ...]``, so such a leaf counts ``2 n``
in ``S``. Every analysis then differentiates a real map of real vectors (``jax`` cannot take the
Jacobian of a non-holomorphic complex map), and a complex-diagonal recurrence ``x' = lambda x``
has the block-diagonal real Jacobian of 2x2 blocks ``[[Re lambda, -Im lambda], [Im lambda, Re lambda]]``,
one per unit, whose eigenvalues are ``lambda`` and its conjugate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import core
from recurrax.core import Array, Cell, Params, State
from recurrax.layers import as_cell


def field_names(state: State) -> list[str]:
    """The name of each leaf of ``state``, in pytree order: ``"h"``, ``"c"`` for a cell's state, ``"0.h"``,
    ``"1.c"`` (layer, then field) for the tuple of states of a stack (:func:`recurrax.as_cell`)."""
    return [path_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(state)]


def path_name(path: tuple[Any, ...]) -> str:
    """A pytree key path as ``field_names`` writes it: attribute names and indices joined by dots."""
    return ".".join(str(getattr(k, "name", getattr(k, "idx", getattr(k, "key", k)))) for k in path)


def stack_parts(cell: Cell) -> tuple[tuple[Cell, ...], bool] | None:
    """``(layer cells, residual)`` of a stack's one-step form (``Structure("stack")``), else ``None`` (also once
    its functions were replaced: what it computes is then not known to be the layers')."""
    structure = core.structure_of(cell)
    if structure is None or structure.kind != "stack":
        return None
    return structure.layers, structure.residual


def check_state(fn: str, state: State, arg: str = "state", cell: Cell | None = None, params: Params = None) -> None:
    """Raises unless every leaf of ``state`` is a float or complex vector ``(n,)`` (one example) and, given
    ``cell`` and ``params``, has the structure, sizes and dtypes of the cell's state."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    if not leaves:
        raise TypeError(f"{fn}: `{arg}` has no array leaves.")
    for path, leaf in leaves:
        where = f"{arg}{jax.tree_util.keystr(path)}"
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{fn}: `{where}` must be a floating-point (or complex) array to be differentiated, got dtype {dtype}."
            )
        if np.ndim(leaf) != 1:
            raise ValueError(
                f"{fn}: `{where}` must be one example's state, shape (n,), got {tuple(np.shape(leaf))}; "
                f"use jax.vmap over batch dimensions."
            )
    if cell is not None:
        core.check_state(fn, cell.initial_state, params, state, (), arg=arg)


def is_complex(leaf: Any) -> bool:
    """Whether ``leaf`` has a complex dtype (it then takes two real coordinates per unit)."""
    return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating))


def sizes(state: State) -> list[int]:
    """The length of each leaf in the flat (real) state, in pytree order: ``2 n`` for a complex leaf ``(n,)``."""
    return [int(np.shape(leaf)[-1]) * (2 if is_complex(leaf) else 1) for leaf in jax.tree_util.tree_leaves(state)]


def real_view(leaf: Array) -> Array:
    """``(*batch, n)`` complex -> ``(*batch, 2 n)`` real, ``[Re_0, Im_0, Re_1, Im_1, ...]``; real leaves pass."""
    if not is_complex(leaf):
        return leaf
    leaf = jnp.asarray(leaf)
    return jnp.stack([leaf.real, leaf.imag], axis=-1).reshape(*leaf.shape[:-1], 2 * leaf.shape[-1])


def from_real_view(vec: Array, like: Any) -> Array:
    """The inverse of :func:`real_view`: ``vec[..., 2 n]`` as ``like``'s complex dtype (or ``vec[..., n]`` cast)."""
    dtype = jnp.result_type(like)
    if not is_complex(like):
        return vec.astype(dtype)
    pairs = vec.reshape(*vec.shape[:-1], vec.shape[-1] // 2, 2)
    return jax.lax.complex(pairs[..., 0], pairs[..., 1]).astype(dtype)


def flatten(state: State) -> Array:
    """``(*batch, S)`` real: the leaves (complex ones in their real view) concatenated along the feature axis."""
    return jnp.concatenate([real_view(leaf) for leaf in jax.tree_util.tree_leaves(state)], axis=-1)


def unflatten(like: State, vec: Array) -> State:
    """The inverse of :func:`flatten`: splits ``vec[..., S]`` into leaves shaped (and typed) as ``like``'s.

    A complex leaf of ``like`` takes ``2 n`` real coordinates back to ``n`` complex ones.
    """
    leaves, tree = jax.tree_util.tree_flatten(like)
    parts = jnp.split(vec, np.cumsum(sizes(like))[:-1], axis=-1)
    return jax.tree_util.tree_unflatten(tree, [from_real_view(p, leaf) for p, leaf in zip(parts, leaves)])


def blocks(like: State, matrix: Array, like_in: State | None = None) -> Any:
    """Splits ``matrix[..., S_out, S_in]`` into a state-of-states: ``blocks.<out field>.<in field>``.

    The outer structure is ``like``'s (rows, the output), the inner one ``like_in``'s (columns, the
    input; ``like`` when ``None``), as ``jax.jacfwd`` of a state-to-state function arranges them.
    A non-pytree ``like_in`` (an input vector) leaves the columns whole: ``blocks.<out field>``.
    """
    out_tree = jax.tree_util.tree_structure(like)
    rows = jnp.split(matrix, np.cumsum(sizes(like))[:-1], axis=-2)
    like_in = like if like_in is None else like_in
    if isinstance(like_in, jax.Array | np.ndarray):
        return jax.tree_util.tree_unflatten(out_tree, rows)
    in_tree = jax.tree_util.tree_structure(like_in)
    cut = np.cumsum(sizes(like_in))[:-1]
    inner = [jax.tree_util.tree_unflatten(in_tree, jnp.split(r, cut, axis=-1)) for r in rows]
    return jax.tree_util.tree_unflatten(out_tree, inner)


def check_inputs(fn: str, cell: Cell, params: Params, xs: Array, arg: str = "xs", *, sequence: bool = True) -> Array:
    """Checks one example's inputs, ``xs: (T, I)`` (or ``x: (I,)`` when not a ``sequence``), against the params."""
    xs = jnp.asarray(xs)
    want = 2 if sequence else 1
    if xs.ndim != want:
        shape = "(T, I)" if sequence else "(I,)"
        raise ValueError(
            f"{fn}: `{arg}` must be one example's inputs, shape {shape}, got {tuple(xs.shape)}; "
            f"use jax.vmap over batch dimensions."
        )
    _check_against_params(fn, cell, params, xs, arg)
    return xs


def check_point(fn: str, cell: Cell, params: Params, state: State, x: Array) -> Array:
    """Checks one state (leaves ``(n,)``, float) and one input ``x: (I,)``; returns ``x`` as an array."""
    check_state(fn, state, "state", cell, params)
    return check_inputs(fn, cell, params, x, "x", sequence=False)


def _check_against_params(fn: str, cell: Cell, params: Params, xs: Array, arg: str) -> None:
    """Traces ``cell.project`` on ``xs`` so a wrong feature size or dtype fails here, named ``arg``."""
    try:
        jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape, xs.dtype))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{fn}: `{arg}` does not fit the cell's params: {err}") from err


def initial_state(fn: str, cell: Cell, params: Params, state: State | None) -> State:
    """``state`` checked as one example's float state, or the cell's zero state when ``None``."""
    if state is None:
        state = cell.initial_state(params, ())
    check_state(fn, state, "state", cell, params)
    return state


def step_fn(cell: Cell, params: Params, like: State):
    """``(s[S], z[G]) -> s'[S]``: the cell's transition on flat states."""

    def f(vec: Array, z: Array) -> Array:
        return flatten(cell.transition(params, unflatten(like, vec), z))

    return f


def check_square(fn: str, matrix: Array, *, batched: bool) -> Array:
    """``matrix`` as an array, checked to be square, ``(S, S)`` (``(..., S, S)`` when ``batched``)."""
    matrix = jnp.asarray(matrix)
    if (matrix.ndim < 2 if batched else matrix.ndim != 2) or matrix.shape[-1] != matrix.shape[-2]:
        want = "(..., S, S)" if batched else "(S, S)"
        raise ValueError(f"{fn}: `matrix` must be a square matrix {want}, got shape {tuple(matrix.shape)}.")
    return matrix


def check_count(fn: str, arg: str, value: Any, *, low: int) -> None:
    """Raises unless ``value`` is an int (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{fn}: `{arg}` must be an int >= {low}, got {value!r}.")


def concrete(x: Any) -> Any:
    """``x`` as NumPy when it is a concrete value, else ``None`` (inside jit or vmap)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
        return None


def on_steps(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Lets the analysis ``fn(cell, ...)`` take a layer too, through its one-step form (:func:`recurrax.as_cell`):
    a ``stacked`` network is analysed as one cell whose state is the tuple of its layers' states."""

    @functools.wraps(fn)
    def analysis(cell: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(as_cell(cell, caller=f"dynamics.{fn.__name__}"), *args, **kwargs)

    return analysis
