"""``stack``: a stack of cells (``Structure("stack")``, :func:`recurrax.as_cell` of a ``stacked`` layer) run layer
after layer over the whole sequence, each layer on the backend its own cell selects.

Stepping every layer at each time step (``sequential``) computes the same thing, but keeps every layer on the
generic loop; layer after layer, each layer's input projection is one matmul over all steps and a plain LSTM or
GRU layer runs its fast kernel. The driver has laid the problem out once (time-major, each sequence's valid part
first for ``reverse``), so each layer runs forward on the outputs of the one below in that same order, with the
same ``lengths`` and resets (each layer restores its own part of the reset state). Layers below do not depend on
those above, so the states, outputs and their derivatives are those of the step-by-step run.
"""

from __future__ import annotations

from collections.abc import Callable

from recurrax.backends.base import Backend, Request, Resets, needs_kind, request
from recurrax.core import Array, Cell, Params, State, next_input


def backend(choose: Callable[[Request], Backend]) -> Backend:
    """The ``stack`` backend, running each layer on ``choose(its request)`` (``backends.select`` under ``auto``)."""

    def run(
        cell: Cell, params: Params, xs: Array, state: State, lengths: Array | None, resets: Resets | None, req: Request
    ):
        layers, residual = cell.structure.layers, cell.structure.residual
        mask = None if resets is None else resets.mask
        finals, states, ys = [], [], xs
        for i, (layer, p, s) in enumerate(zip(layers, params, state)):
            sub = request(
                layer,
                p,
                ys,
                s,
                time_major=True,
                lengths=lengths,
                resets=mask,
                remat=req.remat,
                unroll=req.unroll,
                return_states=req.return_states,
            )
            layer_resets = None if resets is None else Resets(mask, resets.state[i])
            final, out, over_time = choose(sub).run(layer, p, ys, s, lengths, layer_resets, sub)
            ys = next_input(out, ys, residual=residual, layer=i)  # `ys` was this layer's input; zero past lengths
            finals.append(final)
            states.append(over_time)
        return tuple(finals), ys, (tuple(states) if req.return_states else None)

    return Backend(
        name="stack",
        supports=lambda req: needs_kind(req, "stack", "stack"),
        prefers=lambda req: True,
        run=run,
        description="a stack of cells layer after layer, each layer on its own backend",
    )


__all__ = ["backend"]
