"""A recurrax cell or layer as an ``equinox.Module``.

Example::

    import equinox as eqx
    import jax
    import recurrax as rx
    from recurrax.equinox import RNN

    rnn = RNN(rx.lstm(64), input_size=16, key=jax.random.key(0))
    final, ys = rnn(xs)                       # xs: (batch, T, 16) -> ys: (batch, T, 64)
    loss, grads = eqx.filter_value_and_grad(loss_fn)(rnn, xs)

Imported on use only (``import recurrax`` does not import equinox).
"""

from __future__ import annotations

import equinox as eqx

from recurrax.core import Array, Cell, Params, PRNGKey, State
from recurrax.flax import _common
from recurrax.layers import Layer


class RNN(eqx.Module):
    """Runs a recurrax :class:`~recurrax.Cell` (or :class:`~recurrax.Layer`) over a sequence.

    ``params`` is exactly the pytree ``cell.init(key, input_size)`` returns, an ordinary field, so
    ``eqx.filter_grad`` differentiates it and :func:`recurrax.scan` takes it as it is. The cell is a
    static field (cells built alike compare equal, so ``eqx.filter_jit`` caches across rebuilt modules).
    To wrap converted params (e.g. from :func:`recurrax.interop.from_equinox`), replace them:
    ``eqx.tree_at(lambda m: m.params, RNN(cell, I, key=key), params)``.

    Args:
      cell: a Cell, run with :func:`recurrax.scan`, or a Layer, run with its ``apply``.
      input_size: ``I``, the feature size of ``xs``.
      key: initialises the params.
      time_major: whether ``xs`` is ``(T, *batch, I)`` rather than ``(*batch, T, I)``.
      unroll, remat: as in :func:`recurrax.scan` (Cells only; give a Layer its own when building it).
    """

    params: Params
    cell: Cell | Layer = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    time_major: bool = eqx.field(static=True)
    unroll: int | bool | None = eqx.field(static=True)
    remat: bool = eqx.field(static=True)

    def __init__(
        self,
        cell: Cell | Layer,
        input_size: int,
        *,
        key: PRNGKey,
        time_major: bool = False,
        unroll: int | bool | None = None,
        remat: bool = False,
    ):
        _common.check_cell(f"recurrax.equinox.RNN({getattr(cell, 'name', '?')})", cell, unroll, remat)
        self.params = cell.init(key, input_size)
        self.cell = cell
        self.input_size = input_size
        self.time_major = time_major
        self.unroll = unroll
        self.remat = remat

    def __call__(
        self, xs: Array, state: State | None = None, *, lengths: Array | None = None, key: PRNGKey | None = None
    ) -> tuple[State, Array]:
        """Runs over ``xs: (*batch, T, I)`` (no batch dims is fine, as Equinox's convention of ``jax.vmap``).

        Args:
          xs: the inputs.
          state: the initial state (zeros by default), batch shape ``*batch``.
          lengths: ``(*batch,)`` valid steps per sequence, as in :func:`recurrax.scan`.
          key: a Layer's dropout key; without it the layer is deterministic (inference). Ignored for a Cell.

        Returns:
          ``(final_state, ys)`` with ``ys: (*batch, T, O)``.
        """
        return _common.run(
            self.cell,
            self.params,
            xs,
            state,
            lengths=lengths,
            reverse=False,
            time_major=self.time_major,
            unroll=self.unroll,
            remat=self.remat,
            key=key,
        )
