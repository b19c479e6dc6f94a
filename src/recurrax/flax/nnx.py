"""A recurrax cell or layer as a ``flax.nnx`` module.

Example::

    from flax import nnx
    import optax
    import recurrax as rx
    from recurrax.flax.nnx import RNN

    rnn = RNN(rx.lstm(64), input_size=16, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(rnn, optax.adam(1e-3), wrt=nnx.Param)
    ys = rnn(xs)                                   # xs: (batch, T, 16) -> ys: (batch, T, 64)
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from recurrax.core import Array, Cell, Params, State
from recurrax.flax import _common
from recurrax.layers import Layer


class Carry(nnx.Variable):
    """The state a ``stateful`` :class:`RNN` keeps between calls (not a param: optimisers over ``nnx.Param``
    leave it alone; ``nnx.state(model, Carry)`` selects it)."""


class RNN(nnx.Module):
    """Runs a recurrax :class:`~recurrax.Cell` (or :class:`~recurrax.Layer`) over a sequence.

    ``self.params`` mirrors the pytree ``cell.init(key, input_size)`` returns, with every array an
    ``nnx.Param`` (so optimisers, filters and ``nnx.state`` see one Param per weight);
    :meth:`cell_params` gives the plain pytree back. The call semantics are those of
    :class:`recurrax.flax.linen.RNN`.

    Args:
      cell: a Cell or a Layer.
      input_size: ``I``, the feature size of ``xs``.
      rngs: ``rngs.params()`` initialises the params; a Layer's dropout draws from
        ``rngs["dropout"]`` (a fork is kept) unless a ``rngs`` is passed to the call.
      time_major, unroll, remat, return_state: as in :class:`recurrax.flax.linen.RNN`.
      learnable_initial_state: hold the (unbatched) initial state as ``nnx.Param`` s, ``self.initial_state``;
        also the state ``resets`` restore unless a ``reset_state`` is passed.
      deterministic: default of the call's ``deterministic`` (``model.train()`` / ``model.eval()`` set it).
      stateful: keep the final state between calls in ``self.carry`` (:class:`Carry` variables), as Keras's
        ``stateful=True``; the next call starts from it unless given an ``initial_state``. Needs ``batch_shape``;
        :meth:`reset_carry` starts over (or mark rows to reset at their first step with ``resets``).
      batch_shape: the batch shape of every call, with ``stateful``.
    """

    def __init__(
        self,
        cell: Cell | Layer,
        input_size: int,
        *,
        rngs: nnx.Rngs,
        time_major: bool = False,
        unroll: int | bool | None = None,
        remat: bool = False,
        return_state: bool = False,
        learnable_initial_state: bool = False,
        deterministic: bool = True,
        stateful: bool = False,
        batch_shape: tuple[int, ...] | None = None,
    ):
        self.name = f"recurrax.flax.nnx.RNN({getattr(cell, 'name', '?')})"
        _common.check_cell(self.name, cell, unroll, remat)
        self.cell = cell
        self.input_size = input_size
        self.time_major = time_major
        self.unroll = unroll
        self.remat = remat
        self.return_state = return_state
        self.deterministic = deterministic
        params = cell.init(rngs.params(), input_size)
        self.params = nnx.data(jax.tree.map(nnx.Param, params))
        state0 = _common.unbatched_initial_state(cell, params) if learnable_initial_state else None
        self.initial_state = nnx.data(None if state0 is None else jax.tree.map(nnx.Param, state0))
        self.rngs = nnx.data(rngs["dropout"].fork() if isinstance(cell, Layer) else None)
        if stateful and batch_shape is None:
            raise ValueError(f"{self.name}: `stateful=True` needs `batch_shape`, the batch shape of every call.")
        self.batch_shape = None if batch_shape is None else tuple(batch_shape)
        self.carry = nnx.data(jax.tree.map(Carry, self._start()) if stateful else None)

    def _start(self) -> State:
        """The state of batch shape ``batch_shape`` a stateful module starts from (the learned one if any)."""
        if self.initial_state is not None:
            return _common.broadcast_state(_values(self.initial_state), self.batch_shape)
        return self.cell.initial_state(self.cell_params(), self.batch_shape)

    def reset_carry(self) -> None:
        """Sets the kept state (``stateful``) back to the initial state."""
        if self.carry is None:
            raise ValueError(f"{self.name}: `reset_carry` needs a module built with `stateful=True`.")
        jax.tree.map(lambda v, s: v.set_value(s), self.carry, self._start(), is_leaf=_is_variable)

    def cell_params(self) -> Params:
        """The params as the plain pytree ``cell.init`` returns (what :func:`recurrax.scan` takes)."""
        return _values(self.params)

    def __call__(
        self,
        xs: Array,
        *,
        initial_state: State | None = None,
        lengths: Array | None = None,
        resets: Array | None = None,
        reset_state: State | None = None,
        reverse: bool = False,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> Array | tuple[State, Array]:
        """Runs the cell over ``xs: (*batch, T, I)``; see :class:`recurrax.flax.linen.RNN`.

        Returns:
          ``ys: (*batch, T, O)``, or ``(final_state, ys)`` with ``return_state``.
        """
        deterministic = self.deterministic if deterministic is None else deterministic
        batch = _common.batch_shape(xs, self.time_major)
        if resets is not None and reset_state is None and self.initial_state is not None:
            reset_state = _values(self.initial_state)
        if self.carry is not None:
            _common.check_carry(self.name, self.cell, self.cell_params(), _values(self.carry), batch)
            if initial_state is None:
                initial_state = _values(self.carry)
        if initial_state is None and self.initial_state is not None:
            initial_state = _common.broadcast_state(_values(self.initial_state), batch)
        key = None
        if not deterministic and isinstance(self.cell, Layer):
            stream = rngs["dropout"] if rngs is not None else self.rngs
            if stream is None:
                raise ValueError(f"{self.name}: `deterministic=False` needs `rngs` (for the dropout stream).")
            key = stream()
        final, ys = _common.run(
            self.cell,
            self.cell_params(),
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
        if self.carry is not None:
            jax.tree.map(lambda v, s: v.set_value(s), self.carry, final, is_leaf=_is_variable)
        return (final, ys) if self.return_state else ys


def _is_variable(v: Any) -> bool:
    return isinstance(v, nnx.Variable)


def _values(tree: Any) -> Any:
    """Replaces every ``nnx.Variable`` in ``tree`` by its value."""
    return jax.tree.map(lambda v: v[...], tree, is_leaf=_is_variable)
