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
      learnable_initial_state: hold the (unbatched) initial state as ``nnx.Param`` s, ``self.initial_state``.
      deterministic: default of the call's ``deterministic`` (``model.train()`` / ``model.eval()`` set it).
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

    def cell_params(self) -> Params:
        """The params as the plain pytree ``cell.init`` returns (what :func:`recurrax.scan` takes)."""
        return _values(self.params)

    def __call__(
        self,
        xs: Array,
        *,
        initial_state: State | None = None,
        lengths: Array | None = None,
        reverse: bool = False,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> Array | tuple[State, Array]:
        """Runs the cell over ``xs: (*batch, T, I)``; see :class:`recurrax.flax.linen.RNN`.

        Returns:
          ``ys: (*batch, T, O)``, or ``(final_state, ys)`` with ``return_state``.
        """
        deterministic = self.deterministic if deterministic is None else deterministic
        if initial_state is None and self.initial_state is not None:
            batch = _common.batch_shape(xs, self.time_major)
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
            reverse=reverse,
            time_major=self.time_major,
            unroll=self.unroll,
            remat=self.remat,
            key=key,
        )
        return (final, ys) if self.return_state else ys


def _values(tree: Any) -> Any:
    """Replaces every ``nnx.Variable`` in ``tree`` by its value."""
    return jax.tree.map(lambda v: v[...], tree, is_leaf=lambda v: isinstance(v, nnx.Variable))
