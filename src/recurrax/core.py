"""The Cell protocol, state types, the structures cells declare, and the checks every cell shares.

A recurrent cell is a bundle of pure functions (in the spirit of
``optax.GradientTransformation``)::

    cell = recurrax.lstm(128)
    params = cell.init(key, input_size)
    state = cell.initial_state(params, batch_shape)
    state = cell.step(params, state, x)          # == transition(params, state, project(params, x))

``project`` is the time-parallel part (the input matmul, done for a whole sequence at once by
:func:`recurrax.scan`); ``transition`` is the sequential part that stays inside the loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array
Params = Any
State = Any
Shape = Sequence[int]


class LSTMState(NamedTuple):
    """State of an LSTM: ``h`` (working memory, what the next layer sees) and ``c`` (cell state).

    Shapes: ``h: (*batch, proj_size or hidden_size)``, ``c: (*batch, hidden_size)``.
    """

    h: Array
    c: Array


class RNNState(NamedTuple):
    """State of a single-vector cell (Elman, GRU, MGU, ...): ``h: (*batch, hidden_size)``."""

    h: Array


class LinearRecurrence(NamedTuple):
    """Declares that a cell's ``transition`` is the diagonal linear recurrence ``s_t = a_t * s_{t-1} + b_t``.

    The coefficients depend on the projected input only (never on the state), so
    :func:`recurrax.scan` can run the recurrence in parallel over time (``backend="associative"`` or
    ``"chunked"``; see :mod:`recurrax.backends.linear`). A cell declares it as ``Structure("linear", recurrence=...)``.

    Attributes:
      coefficients: ``(params, z[..., G]) -> (a, b)``, each ``(..., S)``; ``(log a, log b)`` with ``log_space``
        (real ``log b``, so ``b > 0``); ``a`` and ``b`` may be complex otherwise.
      carry: ``state -> s[..., S]``, the part of the state the recurrence carries.
      state: ``(params, s[..., S], z[..., G]) -> state``, the full state after a step, from its carry and its
        projected input (e.g. an output ``y`` read out of ``s``).
      log_space: whether ``coefficients`` are logarithms, combined with ``logaddexp`` for stability.
    """

    coefficients: Callable[[Params, Array], tuple[Array, Array]]
    carry: Callable[[State], Array]
    state: Callable[[Params, Array, Array], State]
    log_space: bool = False


class Structure(NamedTuple):
    """What a cell's ``project`` and ``transition`` compute, declared so a backend may run them without calling them.

    A cell says *what* it is; how a call runs is chosen in :mod:`recurrax.backends`. :func:`make_cell` binds the
    declaration to the functions it describes (``of``), so a cell whose functions were replaced
    (``cell._replace(transition=f)``) no longer claims it (:func:`structure_of`) and runs only on backends that
    call its functions.

    Attributes:
      kind: ``"lstm"``: the plain LSTM of :func:`recurrax.lstm` (params ``w_i: (I, 4H)``, ``w_h: (H, 4H)``,
        optional ``b: (4H,)``; gate order i, f, g, o; no variant). ``"gru"``: the plain reset-after GRU of
        :func:`recurrax.gru` (``w_i, w_h, b`` and ``b_hn: (H,)``; r, z, n). ``"linear"``: ``transition`` is the
        diagonal linear recurrence ``recurrence``. ``"stack"``: ``layers`` stepped one above the other.
        ``None``: nothing a backend may substitute.
      gates: how many equal gate blocks ``z`` holds side by side (4 for the LSTM's i, f, g, o). A layout hint for
        the sequential loop, which then stores the projected inputs as one array per block, so each step reads
        whole blocks (on CPU, XLA's fused gate math on slices of one step's slice is 2-6x slower). Values do not
        depend on it.
      recurrence: the :class:`LinearRecurrence`, for ``kind="linear"``.
      of: the functions described, ``(project, transition)``, filled in by :func:`make_cell`; a stack, whose
        backend computes its outputs too, adds ``output``: ``(project, transition, output)``.
      feature_axes: how many trailing axes of ``x``, ``z`` and the state leaves one example's features span: 1 for
        vectors, ``1 + n`` for the convolutional cells (``n`` spatial axes and the channels, which ``project`` and
        ``transition`` mix). Backends keep the time and batch axes in front of them. Unlike ``gates``, values depend
        on it.
      masked: ``(params, state, z, mask) -> state``: the transition with ``state.h * mask`` where ``h`` enters the
        recurrent matmul and ``h`` itself elsewhere (the update of a GRU): recurrent dropout
        (:mod:`recurrax.dropout`); ``None`` for a cell with no such form.
      layers, residual: for ``kind="stack"`` (:func:`recurrax.as_cell` of a ``stacked`` layer): the layers' cells,
        each stepped on the output of the one below (params and state are tuples, one entry per layer), and
        whether each layer after the first adds its input to its output. A backend may then run layer after
        layer over the whole sequence, each layer on the backend that its own cell selects.
    """

    kind: str | None = None
    gates: int = 1
    recurrence: LinearRecurrence | None = None
    of: tuple[Callable, ...] | None = None
    feature_axes: int = 1
    masked: Callable[[Params, State, Array, Array], State] | None = None
    layers: tuple[Cell, ...] | None = None
    residual: bool = False


def next_input(out: Array, inp: Array, *, residual: bool, layer: int) -> Array:
    """What the layer above layer ``layer`` of a stack reads: its output ``out``, plus its input ``inp`` where the
    stack is ``residual`` and the layer is not the first (whose input may have another size)."""
    return out + inp if residual and layer > 0 else out


class Spec:
    """What built a cell or layer: ``key`` (constructor, arguments) compared and hashed, and ``built``, its fields
    as built (not compared: a cell equals another by ``key`` only while its fields are still these)."""

    __slots__ = ("built", "key")

    def __init__(self, key: tuple, built: tuple) -> None:
        self.key, self.built = key, built

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Spec{self.key!r}"


def _identity(obj: Any) -> tuple:
    """What ``obj`` (a :class:`Cell` or ``Layer``) is compared by: its spec while its fields are as built, else
    the field objects themselves."""
    built = tuple(obj)[:-1]
    spec = obj.spec
    if spec is not None and len(spec.built) == len(built) and all(a is b for a, b in zip(spec.built, built)):
        return ("spec", spec.key)
    return ("functions", *built)


def compared_by_spec(cls: type) -> type:
    """Makes a NamedTuple of functions whose last field is ``spec`` compare and hash by :func:`_identity`, and
    registers it as a pytree without leaves: static structure carried whole in the treedef, so ``jit`` caches on
    its equality."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, cls):
            return NotImplemented
        return _identity(self) == _identity(other)

    def __ne__(self, other: object) -> bool:
        equal = __eq__(self, other)
        return equal if equal is NotImplemented else not equal

    cls.__eq__, cls.__ne__ = __eq__, __ne__
    cls.__hash__ = lambda self: hash(_identity(self))
    jax.tree_util.register_pytree_node(cls, lambda obj: ((), obj), lambda obj, _: obj)
    return cls


@compared_by_spec
class Cell(NamedTuple):
    """A recurrent cell as a bundle of pure functions.

    Attributes:
      init: ``(key, input_size) -> params``.
      initial_state: ``(params, batch_shape) -> state`` of zeros.
      step: ``(params, state, x[*batch, I]) -> state``; equals ``transition(p, s, project(p, x))``.
      project: ``(params, x[..., I]) -> z[..., G]``, the time-parallel input projection.
      transition: ``(params, state, z[*batch, G]) -> state``, the sequential part.
      output: ``state -> h``, what the next layer sees.
      name: a short name used in error messages.
      structure: what ``project`` and ``transition`` compute (:class:`Structure`), or ``None``.
      spec: the constructor and arguments that built the cell (:func:`constructor`), or ``None``.

    Two cells built by the same constructor with the same arguments are equal and hash equal (so
    ``jax.jit(f, static_argnums=...)`` caches hit for ``rx.gru(64)`` built anew), as long as neither had a
    function replaced; any other cells are equal only when their functions are the same objects. A cell is a
    pytree without leaves, so it may also be passed to ``jax.jit``-compiled functions as an ordinary argument.
    """

    init: Callable[[PRNGKey, int], Params]
    initial_state: Callable[[Params, Shape], State]
    step: Callable[[Params, State, Array], State]
    project: Callable[[Params, Array], Array]
    transition: Callable[[Params, State, Array], State]
    output: Callable[[State], Array]
    name: str = "cell"
    structure: Structure | None = None
    spec: Spec | None = None


class ApplyFn(Protocol):
    def __call__(
        self,
        params: Params,
        xs: Array,
        state: State | None = None,
        *,
        lengths: Array | None = None,
        resets: Array | None = None,
        reset_state: State | None = None,
        key: PRNGKey | None = None,
        time_major: bool = False,
        mask: Array | None = None,
    ) -> tuple[State, Array]: ...


@compared_by_spec
class Layer(NamedTuple):
    """A sequence-to-sequence recurrent layer as a bundle of pure functions.

    Attributes:
      init: ``(key, input_size) -> params``.
      initial_state: ``(params, batch_shape) -> state`` of zeros.
      apply: ``(params, xs, state=None, *, lengths=None, resets=None, reset_state=None, key=None,
        time_major=False, mask=None) -> (final_state, outputs)``, with ``xs: (*batch, T, I)`` and
        ``outputs: (*batch, T, O)``; ``lengths``, ``resets``, ``reset_state`` and ``mask`` as in
        :func:`recurrax.scan` (``reset_state`` in the layer's state structure; masked outputs are zeros). ``key``
        drives dropout; without it the layer is deterministic (evaluation mode).
      name: a short name used in error messages.
      spec: the builder and arguments that made the layer, or ``None``.

    Like cells, two layers built by ``as_layer``, ``stacked`` or ``bidirectional`` with equal arguments are equal
    and hash equal (until a function is replaced), and a layer is a pytree without leaves. :func:`recurrax.scan`
    runs a layer through its ``apply``.
    """

    init: Callable[[PRNGKey, int], Params]
    initial_state: Callable[[Params, Shape], State]
    apply: ApplyFn
    name: str = "layer"
    spec: Spec | None = None


def built_with(cell: Any) -> tuple[str, dict[str, Any]] | None:
    """``(constructor name, its arguments with defaults)`` while ``cell`` (a :class:`Cell` or ``Layer``) is as its
    constructor built it (no function replaced), else ``None``: what a converter may read to know what it computes.
    Sequence arguments are given as tuples."""
    identity = _identity(cell)
    if identity[0] != "spec":
        return None
    _, name, arguments = identity[1]
    return name, dict(arguments)


def constructor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a cell (or layer) constructor so what it builds carries its :class:`Spec` (see :class:`Cell`)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def build(*args: Any, **kwargs: Any) -> Any:
        cell = fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        # Lists become tuples, so `stacked([lstm(8)] * 2)` built twice hashes alike.
        arguments = tuple((name, _frozen(value)) for name, value in bound.arguments.items())
        key = (fn.__module__, fn.__qualname__, arguments)
        try:
            hash(key)
        except TypeError:  # an unhashable argument (an array): such cells are equal only to themselves
            return cell
        return cell._replace(spec=Spec(key, tuple(cell)[:-1]))

    return build


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def feature_axes(cell: Cell) -> int:
    """How many trailing axes of the inputs and state leaves are one example's features (:class:`Structure`)."""
    return 1 if cell.structure is None else cell.structure.feature_axes


def structure_of(cell: Cell) -> Structure | None:
    """``cell.structure`` while the cell's functions are the ones it describes (``Structure.of``), else None."""
    structure = cell.structure
    if structure is None or structure.of is None:
        return None
    current = (cell.project, cell.transition, cell.output)[: len(structure.of)]
    return structure if all(a is b for a, b in zip(current, structure.of)) else None


def make_cell(
    name: str,
    *,
    init: Callable[[PRNGKey, int], Params],
    initial_state: Callable[[Params, Shape], State],
    project: Callable[[Params, Array], Array],
    transition: Callable[[Params, State, Array], State],
    input_size: Callable[[Params], int],
    output: Callable[[State], Array] = lambda state: state.h,
    structure: Structure | None = None,
) -> Cell:
    """Builds a :class:`Cell`, adding the argument checks every cell shares.

    ``project`` is wrapped to check the params against the shapes ``init`` gives for their ``input_size`` and the
    input's feature size and dtype, and ``step`` is derived as ``transition . project`` with the state checked
    against ``initial_state``'s shapes and dtypes, so no cell writes either by hand. ``structure`` declares what
    ``project`` and ``transition`` compute (default: nothing a backend may substitute, so the cell runs on the
    backends that call its functions).
    """

    @functools.cache
    def expected_params(size: int) -> Any:
        return jax.eval_shape(lambda key: init(key, size), jax.eval_shape(jax.random.key, 0))

    def checked_input_size(params: Params) -> int:
        try:
            size = input_size(params)
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            keys = _param_paths(expected_params(1))
            raise ValueError(
                f"{name}: `params` must be this cell's params (keys {keys}, from `cell.init`), got "
                f"{_param_paths(params) or type(params).__name__}."
            ) from err
        check_params(name, expected_params(int(size)), params)
        return int(size)

    def checked_init(key: PRNGKey, input_size: int) -> Params:
        check_key(name, key)
        return init(key, input_size)

    def checked_project(params: Params, x: Array) -> Array:
        x = jnp.asarray(x)
        check_input(name, x, checked_input_size(params), arg="x")
        return project(params, x)

    def step(params: Params, state: State, x: Array) -> State:
        x = jnp.asarray(x)
        check_input(name, x, checked_input_size(params), arg="x")
        check_state(name, initial_state, params, state, x.shape[:-1])
        return transition(params, state, project(params, x))

    if structure is not None:
        if not isinstance(structure, Structure):
            raise TypeError(
                f"{name}: `structure` must be a recurrax.Structure or None, got {type(structure).__name__}."
            )
        if (structure.kind == "linear") != (structure.recurrence is not None):
            raise ValueError(f"{name}: a Structure has a `recurrence` exactly when its kind is 'linear'.")
        structure = structure._replace(of=(checked_project, transition))
    return Cell(
        init=checked_init,
        initial_state=initial_state,
        step=step,
        project=checked_project,
        transition=transition,
        output=output,
        name=name,
        structure=structure,
    )


def _param_paths(params: Any) -> str:
    return ", ".join(jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def check_params(name: str, expected: Any, params: Params) -> None:
    """Raises unless ``params`` has the keys and leaf shapes of ``expected`` (``init``'s, as shapes)."""
    want = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]}
    got = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    missing, extra = [k for k in want if k not in got], [k for k in got if k not in want]
    if missing or extra:
        raise ValueError(
            f"{name}: `params` must have the keys {', '.join(want)} (as `cell.init` makes them); "
            f"missing: {', '.join(missing) or 'none'}, unexpected: {', '.join(extra) or 'none'}."
        )
    for key, leaf in want.items():
        shape = tuple(np.shape(got[key]))
        if shape != tuple(leaf.shape):
            raise ValueError(f"{name}: `params{key}` must have shape {tuple(leaf.shape)}, got {shape}.")
        dtype = jnp.result_type(got[key])
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(f"{name}: `params{key}` must be floating-point, got dtype {dtype}.")


def check_key(name: str, key: Any, arg: str = "key") -> None:
    """Raises unless ``key`` is a PRNG key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` one."""
    dtype = getattr(key, "dtype", None)
    if isinstance(key, jax.Array | np.ndarray) and (
        jnp.issubdtype(dtype, jax.dtypes.prng_key) or (dtype == np.uint32 and np.shape(key)[-1:] == (2,))
    ):
        return
    got = f"{type(key).__name__} of dtype {dtype}, shape {np.shape(key)}" if dtype is not None else repr(key)
    raise TypeError(f"{name}: `{arg}` must be a PRNG key, e.g. jax.random.key(0), got {got}.")


def check_param_leaves(name: str, params: Params) -> None:
    """Raises unless every leaf of ``params`` is an array JAX can read (a torch tensor, say, is not)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float | jax.ShapeDtypeStruct):
            continue
        if hasattr(leaf, "__jax_array__"):
            continue
        hint = (
            " (convert a torch module with recurrax.interop.torch.from_torch)"
            if "torch" in type(leaf).__module__
            else ""
        )
        raise TypeError(
            f"{name}: `params{jax.tree_util.keystr(path)}` must be a JAX or NumPy array, got "
            f"{type(leaf).__module__}.{type(leaf).__name__}{hint}."
        )


def check_input(name: str, x: Array, input_size: int, *, arg: str = "x") -> None:
    """Raises unless ``x`` is a real floating array whose last axis has ``input_size`` features."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = (
            "split a complex signal into its real and imaginary parts as features"
            if jnp.issubdtype(x.dtype, jnp.complexfloating)
            else "cast integer data, or embed token ids first"
        )
        raise TypeError(f"{name}: `{arg}` must be a real floating-point array, got dtype {x.dtype} ({hint}).")
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(
            f"{name}: `{arg}` must have shape (..., {input_size}) to match the params "
            f"(input_size={input_size}), got shape {tuple(x.shape)}."
        )


def check_state(
    name: str,
    initial_state: Callable[[Params, Shape], State],
    params: Params,
    state: State,
    batch_shape: Shape,
    *,
    arg: str = "state",
) -> None:
    """Raises unless ``state`` has the structure and leaf shapes of ``initial_state(params, batch_shape)``."""
    expected = jax.eval_shape(lambda p: initial_state(p, tuple(batch_shape)), params)
    exp_leaves, exp_tree = jax.tree_util.tree_flatten_with_path(expected)
    try:
        got_leaves = exp_tree.flatten_up_to(state)
    except (ValueError, TypeError) as err:
        raise TypeError(
            f"{name}: `{arg}` must have the structure {exp_tree}, got {jax.tree_util.tree_structure(state)}."
        ) from err
    for (path, want), got in zip(exp_leaves, got_leaves):
        got_shape = tuple(np.shape(got))
        where = f"{arg}{jax.tree_util.keystr(path)}"
        if got_shape != tuple(want.shape):
            raise ValueError(
                f"{name}: `{where}` must have shape {tuple(want.shape)} "
                f"(batch {tuple(batch_shape)} + features {tuple(want.shape[len(batch_shape) :])}), "
                f"got {got_shape}."
            )
        got_dtype = jnp.result_type(got)
        if not jnp.issubdtype(got_dtype, jnp.inexact):
            raise TypeError(f"{name}: `{where}` must be floating-point, got dtype {got_dtype}.")
        # Complex where the cell is real (or the reverse) would drop a part; a narrower float than the cell's
        # would run the recurrence in it, silently.
        complex_want = jnp.issubdtype(want.dtype, jnp.complexfloating)
        if jnp.issubdtype(got_dtype, jnp.complexfloating) != complex_want or (
            jnp.promote_types(got_dtype, want.dtype) != got_dtype
        ):
            kind = "complex" if complex_want else "real floating-point"
            raise TypeError(
                f"{name}: `{where}` must be {kind} of at least the precision of {want.dtype} (the dtype "
                f"`initial_state` gives these params), got dtype {got_dtype}."
            )
