"""A recurrax cell or layer as a ``flax.linen`` module.

Example::

    import flax.linen as nn
    import recurrax as rx
    from recurrax.flax.linen import RNN

    class Tagger(nn.Module):
        @nn.compact
        def __call__(self, xs, lengths):
            ys = RNN(rx.bidirectional(rx.lstm(64), rx.lstm(64)))(xs, lengths=lengths)
            return nn.Dense(10)(ys)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from recurrax.core import Array, Cell, State
from recurrax.flax import _common
from recurrax.layers import Layer

CARRY = "carry"
"""The variable collection a ``stateful`` :class:`RNN` keeps its state in (variable ``"state"``)."""


class RNN(nn.Module):
    """Runs a recurrax :class:`~recurrax.Cell` (or :class:`~recurrax.Layer`) over a sequence.

    The params are one Flax param, ``"cell"``, holding exactly the pytree ``cell.init(key, I)``
    returns (``I = xs.shape[-1]`` at init), so they can be converted, inspected or passed to
    :func:`recurrax.scan` directly. A Cell runs with :func:`recurrax.scan`; a Layer (from
    :func:`recurrax.stacked` / :func:`recurrax.bidirectional`) with its ``apply``, whose dropout
    draws its key from Flax's ``"dropout"`` rng stream when ``deterministic=False``.

    Attributes:
      cell: a Cell or a Layer.
      time_major: whether ``xs`` is ``(T, *batch, I)`` rather than ``(*batch, T, I)``.
      unroll: steps per loop iteration (Cells only; give a Layer its own at construction).
      remat: recompute each step in the backward pass (Cells only).
      return_state: return ``(final_state, ys)`` instead of ``ys``.
      learnable_initial_state: learn the initial state as a second param, ``"initial_state"``
        (zeros at init, unbatched, broadcast over the batch); used when no ``initial_state`` is
        passed (Flax issue #868), and as the state ``resets`` restore unless a ``reset_state`` is given.
      input_size: when set, ``xs`` must have this many features (checked at init and apply).
      stateful: keep the final state across calls, as Keras's ``stateful=True``: it is the variable
        ``"state"`` of the collection :data:`CARRY` and the next call's initial state (unless one is
        passed). The batch shape must stay the same; call ``apply(..., mutable=[CARRY])``. To start
        over, drop the collection from the variables (it is re-created from the initial state), or
        mark the rows to reset at their first step with ``resets``.
    """

    cell: Cell | Layer
    time_major: bool = False
    unroll: int | bool | None = None
    remat: bool = False
    return_state: bool = False
    learnable_initial_state: bool = False
    input_size: int | None = None
    stateful: bool = False

    @nn.compact
    def __call__(
        self,
        xs: Array,
        *,
        initial_state: State | None = None,
        lengths: Array | None = None,
        resets: Array | None = None,
        reset_state: State | None = None,
        reverse: bool = False,
        deterministic: bool = True,
    ) -> Array | tuple[State, Array]:
        """Runs the cell over ``xs``.

        Args:
          xs: ``(*batch, T, I)`` (``(T, *batch, I)`` with ``time_major``).
          initial_state: a state with batch shape ``batch``; zeros (or the learned one, or the kept
            one when ``stateful``) when None.
          lengths: integer ``(*batch,)`` valid lengths of right-padded sequences.
          resets: boolean ``(*batch, T)``, where a new segment (episode) starts; see :func:`recurrax.scan`.
          reset_state: the state ``resets`` restore (batch shape ``()`` or ``batch``); default the learned
            initial state with ``learnable_initial_state``, else zeros.
          reverse: run from each sequence's last valid step to its first; outputs keep time order.
          deterministic: no dropout when True; else a Layer's dropout uses the ``"dropout"`` rng.

        Returns:
          ``ys: (*batch, T, O)``, or ``(final_state, ys)`` with ``return_state``.
        """
        name = f"recurrax.flax.linen.RNN({getattr(self.cell, 'name', '?')})"
        _common.check_cell(name, self.cell, self.unroll, self.remat)
        if xs.ndim < 2:
            raise ValueError(f"{name}: `xs` must have shape (*batch, T, I) (or (T, I)), got {tuple(xs.shape)}.")
        features = xs.shape[-1]
        if self.input_size is not None and features != self.input_size:
            raise ValueError(
                f"{name}: `xs` has {features} features but the module was built with input_size={self.input_size}."
            )
        if self.has_variable("params", "cell"):
            _check_params_fit(name, self.cell, self.get_variable("params", "cell"), features)
        params = self.param("cell", lambda key: self.cell.init(key, features))
        batch = _common.batch_shape(xs, self.time_major)
        start = None  # the state a sequence starts from when none is passed
        if self.learnable_initial_state:
            learned = self.param("initial_state", lambda _: _common.unbatched_initial_state(self.cell, params))
            start = _common.broadcast_state(learned, batch)
            if resets is not None and reset_state is None:
                reset_state = learned
        if self.stateful:
            fresh = start if start is not None else self.cell.initial_state(params, batch)
            carry = self.variable(CARRY, "state", lambda: fresh)
            _common.check_carry(name, self.cell, params, carry.value, batch)
            start = carry.value
        if initial_state is None:
            initial_state = start
        key = None if deterministic or isinstance(self.cell, Cell) else self.make_rng("dropout")
        final, ys = _common.run(
            self.cell,
            params,
            xs,
            initial_state,
            lengths=lengths,
            resets=resets,
            reset_state=reset_state,
            reverse=reverse,
            time_major=self.time_major,
            unroll=self.unroll,
            remat=self.remat,
            key=key,
        )
        if self.stateful and not self.is_initializing():  # `init` leaves the carry at the initial state
            if not self.is_mutable_collection(CARRY):
                raise ValueError(
                    f"{name}: `stateful=True` keeps the final state in the {CARRY!r} collection; call "
                    f"`apply(..., mutable=[{CARRY!r}])` (and keep the returned variables)."
                )
            carry.value = final
        return (final, ys) if self.return_state else ys


def _check_params_fit(name: str, cell: Cell | Layer, params: Any, features: int) -> None:
    """Raises, naming both sizes, when ``params`` were not made for inputs of ``features`` features."""
    want = jax.eval_shape(lambda key: cell.init(key, features), jax.random.key(0))
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(params)
    if got_tree != jax.tree.structure(want):
        return  # not a shape question; let the driver report it
    for (path, got), expected in zip(got_leaves, jax.tree.leaves(want)):
        if tuple(got.shape) != tuple(expected.shape):
            raise ValueError(
                f"{name}: `xs` has {features} features, but the params were made for another input size: "
                f"`cell{jax.tree_util.keystr(path)}` has shape {tuple(got.shape)}, inputs of {features} "
                f"features need {tuple(expected.shape)}."
            )
