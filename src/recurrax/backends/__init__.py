"""How a call of :func:`recurrax.scan` is executed: one table of backends, one :func:`select`.

A cell says *what* it is (:class:`recurrax.core.Structure`); a backend says what it can run (``supports``) and
whether ``auto`` should run it (``prefers``, from the measured thresholds of :mod:`~recurrax.backends.tuning`);
:func:`select` chooses by this table alone. In table order:

============== ========================================= ============ ======== ============================
backend        runs                                      platform     dtype    ``auto`` prefers it
============== ========================================= ============ ======== ============================
native_lstm    the plain LSTM (C++ kernels)              CPU          float32  from ``T * N = 128``
native_gru     the plain reset-after GRU (C++ kernels)   CPU          float32  from ``T * N = 128``
cudnn_lstm     the plain LSTM (cuDNN); see below         GPU          float32  always
xla_lstm       the plain LSTM (XLA, sequence derivative) any          any      always
xla_gru        the plain GRU (XLA, sequence derivative)  any          any      never (only when named)
associative    linear recurrences (min_gru, lru, ...)    any          any      GPU/TPU (tuning.LINEAR_AUTO)
chunked        linear recurrences, chunked               any          any      where LINEAR_AUTO says
stack          a stack of cells, layer after layer       any          any      always
newton         every real-state cell, Newton in parallel any          any      never (only when named)
sequential     every cell: ``lax.scan`` of its functions any          any      always (the last resort)
============== ========================================= ============ ======== ============================

Every backend takes every option of :func:`recurrax.scan` (lengths, resets, reverse, time_major, batch dims,
initial state, return_states, unroll, remat), except where its ``supports`` names one (``cudnn_lstm``: resets and
return_states); ``cudnn_lstm`` has no forward mode. ``stack`` runs each layer of :func:`recurrax.as_cell`'s stack on
the backend ``auto`` picks for that layer among those with a forward mode (so a stack keeps ``jax.jvp`` on GPU).
The native kernels skip the steps past each row's ``lengths`` and cuDNN reads them itself; the others run through
the padding and keep only the valid steps. The conformance suite (``tests/backends/``) holds each to the results
of ``sequential``.

A new backend is its own module plus one entry in :data:`TABLE`.
"""

from __future__ import annotations

from recurrax.backends import tuning
from recurrax.backends.base import Backend, Request, request
from recurrax.backends.cpu import GRU as NATIVE_GRU
from recurrax.backends.cpu import LSTM as NATIVE_LSTM
from recurrax.backends.gpu import CUDNN_LSTM
from recurrax.backends.linear import ASSOCIATIVE, CHUNKED
from recurrax.backends.nonlinear import NEWTON, newton
from recurrax.backends.sequential import BACKEND as SEQUENTIAL
from recurrax.backends.stack import backend as _stack_backend
from recurrax.backends.xla import GRU as XLA_GRU
from recurrax.backends.xla import LSTM as XLA_LSTM
from recurrax.core import Array, Cell, Params, State

__all__ = ["TABLE", "Backend", "Request", "available", "get", "newton", "request", "select", "tuning", "which"]


def _auto(req: Request, *, forward_mode: bool = False) -> Backend:
    """What ``auto`` runs: the first backend of :data:`TABLE` that supports and prefers ``req`` (with
    ``forward_mode``, among those that have one: how ``stack`` picks each layer's backend)."""
    return next(b for b in TABLE if (b.forward_mode or not forward_mode) and b.supports(req) is None and b.prefers(req))


STACK = _stack_backend(lambda req: _auto(req, forward_mode=True))

TABLE: tuple[Backend, ...] = (
    NATIVE_LSTM,
    NATIVE_GRU,
    CUDNN_LSTM,
    XLA_LSTM,
    XLA_GRU,
    ASSOCIATIVE,
    CHUNKED,
    STACK,
    NEWTON,
    SEQUENTIAL,
)
"""Every backend, in the order ``auto`` tries them; ``sequential`` runs anything and comes last."""

_BY_NAME = {b.name: b for b in TABLE}


def get(name: str) -> Backend:
    """The backend called ``name``; raises listing the valid names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; valid: 'auto', {', '.join(map(repr, _BY_NAME))}.") from None


def select(req: Request, backend: str | Backend = "auto", *, name: str = "scan") -> Backend:
    """The backend that runs ``req``: ``auto`` takes the first of :data:`TABLE` that supports and prefers it.

    A backend asked for by name (or passed as a :class:`Backend`) that cannot run the call raises a
    ``ValueError`` giving its reason.
    """
    if isinstance(backend, str) and backend == "auto":
        return _auto(req)
    if isinstance(backend, str):
        chosen = get(backend)
    elif isinstance(backend, Backend):
        chosen = backend
    else:
        raise TypeError(f"{name}: `backend` must be 'auto', a backend name or a Backend, got {type(backend).__name__}.")
    reason = chosen.supports(req)
    if reason is not None:
        raise ValueError(f"{name}: backend {chosen.name!r} cannot run this call: {reason}.")
    return chosen


def available(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    **options,
) -> dict[str, str | None]:
    """For each backend of :data:`TABLE`, ``None`` if it can run ``scan(cell, params, xs, state, **options)``,
    else the reason it cannot.

    ``options`` are :func:`recurrax.scan`'s ``time_major``, ``lengths``, ``resets``, ``reverse``, ``remat``,
    ``unroll`` and ``return_states`` (``xs``, ``lengths`` and ``resets`` may be ``jax.ShapeDtypeStruct``).
    """
    req = request(cell, params, xs, state, **options)
    return {b.name: b.supports(req) for b in TABLE}


def which(cell: Cell, params: Params, xs: Array, state: State | None = None, **options) -> str:
    """The name of the backend ``auto`` runs ``scan(cell, params, xs, state, **options)`` on (as :func:`available`)."""
    return select(request(cell, params, xs, state, **options)).name
