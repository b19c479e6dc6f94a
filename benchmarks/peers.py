"""The implementations under test: recurrax and its peers, each built for one case and one mode.

Every implementation turns ``(case, mode)`` into a :class:`Prepared`: a ``run()`` that blocks until
its result is ready, plus its compile time and peak memory. JAX peers are compiled ahead of time
(``jit(...).lower(...).compile()``) so compile time is measured apart from run time. Peers import
lazily, so a missing package is reported, not fatal.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable
from typing import Any

from benchmarks import cases as _cases
from benchmarks.cases import GATES, MODES, Case
from benchmarks.timing import compile_jax, rss_peak_growth

SEED = 0


@dataclasses.dataclass
class Prepared:
    """A benchmark ready to time: ``run()`` blocks until done."""

    run: Callable[[], Any]
    compile_s: float | None = None
    peak_bytes: int | None = None
    peak_method: str | None = None


@dataclasses.dataclass(frozen=True)
class Impl:
    """An implementation: its display name, the package it needs, and what it supports."""

    name: str
    package: str
    cells: tuple[str, ...]
    build: Callable[[Case, str], Prepared]
    modes: tuple[str, ...] = MODES
    needs_gpu: bool = False
    default: bool = True

    def unavailable(self, case: Case, mode: str) -> str | None:
        """Why this implementation does not run ``(case, mode)`` here, or ``None`` when it does."""
        multi = case.layers > 1 or _cases.variant(case.cell) is not None  # no one-step latency to measure
        if case.cell not in self.cells or mode not in self.modes or (mode == "step" and multi):
            return "n/a"
        if importlib.util.find_spec(self.package) is None:
            return f"missing: package {self.package!r} is not installed (pip install 'recurrax[bench]')"
        if self.needs_gpu:
            import jax

            if jax.default_backend() != "gpu":
                return f"skipped: needs a GPU (cuDNN); the JAX backend here is {jax.default_backend()!r}"
        return None


# --------------------------------------------------------------------------------------------- JAX


@dataclasses.dataclass
class JaxModel:
    """A JAX implementation as pure functions: ``apply(params, xs, *extra) -> ys`` and ``step(params, state, x)``.

    ``extra`` are further arguments of ``apply`` that are not differentiated (the ``lengths`` of a variant),
    passed at run time so XLA cannot fold them into the program.
    """

    apply: Callable
    params: Any
    step: Callable | None = None
    state: Any = None
    extra: tuple = ()


def _inputs(case: Case):
    import jax

    s = case.size
    return jax.random.normal(jax.random.key(SEED + 1), (s.batch, s.steps, s.inputs))


def _jax_prepared(model: JaxModel, case: Case, mode: str) -> Prepared:
    import jax
    import jax.numpy as jnp

    xs = _inputs(case)
    if mode == "step":
        fn, args = model.step, (model.params, model.state, xs[:, 0])
    elif mode == "fwd":
        fn, args = model.apply, (model.params, xs, *model.extra)
    else:
        fn = jax.grad(lambda p, x, *extra: jnp.sum(model.apply(p, x, *extra)), argnums=(0, 1))
        args = (model.params, xs, *model.extra)
    compiled, seconds, peak = compile_jax(fn, *args)
    return Prepared(lambda: jax.block_until_ready(compiled(*args)), seconds, peak, "XLA memory_analysis")


def _lengths(case: Case) -> tuple:
    """``(lengths,)`` for a variant that passes them, else ``()``."""
    import jax.numpy as jnp

    lengths = _cases.lengths(case.cell, case.size.batch, case.size.steps)
    return () if lengths is None else (jnp.asarray(lengths, jnp.int32),)


def _resets(case: Case) -> tuple:
    """``(resets,)`` for a variant that passes them, else ``()``."""
    import jax.numpy as jnp

    resets = _cases.resets(case.cell, case.size.batch, case.size.steps)
    return () if resets is None else (jnp.asarray(resets, bool),)


def _variant_args(case: Case) -> tuple[str | None, tuple]:
    """The keyword of ``scan`` a variant passes at run time (``lengths`` or ``resets``) and its value, as extra."""
    for name, values in (("lengths", _lengths(case)), ("resets", _resets(case))):
        if values:
            return name, values
    return None, ()


def _layer_inputs(case: Case) -> list[int]:
    return [case.size.inputs] + [case.size.hidden] * (case.layers - 1)


def _recurrax(path: str = "default") -> Callable[[Case, str], Prepared]:
    """``path``: "default" (what ``recurrax.lstm`` etc. do), "xla" (without the native CPU kernels: the LSTM's
    sequence-level XLA loop, the GRU's generic loop), "generic" (the plain per-step scan, no fast path), "plain"
    (a variant's case without its option: the call it is compared with, timed in the same rounds)."""

    def build(case: Case, mode: str) -> Prepared:
        import jax

        import recurrax as rx

        factory = {"lstm": rx.lstm, "lstm2": rx.lstm, "gru": rx.gru, "elman": rx.elman}[_cases.base(case.cell)]
        plain = path == "plain"
        options = {"remat": True} if _cases.variant(case.cell) == "remat" and not plain else {}
        keyword, extra = (None, ()) if plain else _variant_args(case)
        cells = [factory(case.size.hidden) for _ in range(case.layers)]
        if path == "generic" or (path == "xla" and _cases.base(case.cell) == "gru"):
            options["backend"] = "sequential"
        elif path == "xla":
            options["backend"] = "xla_lstm"
        key = jax.random.key(SEED)
        if case.layers > 1:
            layer = rx.stacked(cells, **options)
            return _jax_prepared(
                JaxModel(lambda p, xs: layer.apply(p, xs)[1], layer.init(key, case.size.inputs)), case, mode
            )
        cell = cells[0]
        params = cell.init(key, case.size.inputs)
        model = JaxModel(
            apply=lambda p, xs, *given: rx.scan(cell, p, xs, **dict(zip([keyword], given)), **options)[1],
            params=params,
            step=cell.step,
            state=cell.initial_state(params, (case.size.batch,)),
            extra=extra,
        )
        return _jax_prepared(model, case, mode)

    return build


def _linen(cell_name: str) -> Callable[[Case, str], Prepared]:
    def build(case: Case, mode: str) -> Prepared:
        import flax.linen as nn
        import jax

        cls = getattr(nn, cell_name)
        key = jax.random.key(SEED)
        xs = _inputs(case)
        if mode == "step":
            cell = cls(case.size.hidden)
            carry = cell.initialize_carry(key, xs[:, 0].shape)
            params = cell.init(key, carry, xs[:, 0])
            model = JaxModel(None, params, lambda p, s, x: cell.apply(p, s, x)[0], carry)
        else:
            net = nn.RNN(cls(case.size.hidden)) if case.layers == 1 else None
            if net is None:
                net = nn.Sequential([nn.RNN(cls(case.size.hidden)) for _ in range(case.layers)])
            extra = _lengths(case)
            apply = net.apply
            if extra:

                def apply(p, xs, lengths):
                    return net.apply(p, xs, seq_lengths=lengths)

            model = JaxModel(apply, net.init(key, xs), extra=extra)
        return _jax_prepared(model, case, mode)

    return build


def _linen_with_resets(cell_name: str) -> Callable[[Case, str], Prepared]:
    """A Flax cell in ``nn.scan`` with the reset written by hand before each step, ``jnp.where(reset, initial
    carry, carry)``: the ``ScannedRNN`` of purejaxrl and the RL libraries that copy it."""

    def build(case: Case, mode: str) -> Prepared:
        import functools

        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        cls, hidden = getattr(nn, cell_name), case.size.hidden

        class ScannedRNN(nn.Module):
            @functools.partial(
                nn.scan, variable_broadcast="params", in_axes=1, out_axes=1, split_rngs={"params": False}
            )
            @nn.compact
            def __call__(self, carry, inputs):
                x, reset = inputs
                fresh = jax.tree.map(jnp.zeros_like, carry)
                carry = jax.tree.map(lambda c0, c: jnp.where(reset[:, None], c0, c), fresh, carry)
                return cls(hidden)(carry, x)

        net = ScannedRNN()
        xs, (resets,) = _inputs(case), _resets(case)
        carry = cls(hidden).initialize_carry(jax.random.key(SEED), xs[:, 0].shape)
        params = net.init(jax.random.key(SEED), carry, (xs, resets))
        model = JaxModel(lambda p, xs, resets: net.apply(p, carry, (xs, resets))[1], params, extra=(resets,))
        return _jax_prepared(model, case, mode)

    return build


def _nnx(cell_name: str) -> Callable[[Case, str], Prepared]:
    def build(case: Case, mode: str) -> Prepared:
        from flax import nnx

        cls = getattr(nnx, cell_name)
        rngs = nnx.Rngs(SEED)
        batch = case.size.batch
        layers = [nnx.RNN(cls(i, case.size.hidden, rngs=rngs)) for i in _layer_inputs(case)]
        # The carry is made outside the traced function: nnx.RNN would otherwise draw it from its Rngs.
        carries = [layer.cell.initialize_carry((batch, i), rngs) for layer, i in zip(layers, _layer_inputs(case))]
        if mode == "step":
            graph, params, rest = nnx.split(layers[0].cell, nnx.Param, ...)
            step = lambda p, s, x: nnx.merge(graph, p, rest)(s, x)[0]  # noqa: E731
            return _jax_prepared(JaxModel(None, params, step, carries[0]), case, mode)
        splits = [nnx.split(layer, nnx.Param, ...) for layer in layers]

        def apply(params, xs):
            for (graph, _, rest), p, carry in zip(splits, params, carries):
                xs = nnx.merge(graph, p, rest)(xs, initial_carry=carry)
            return xs

        return _jax_prepared(JaxModel(apply, [p for _, p, _ in splits]), case, mode)

    return build


def _equinox(cell_name: str) -> Callable[[Case, str], Prepared]:
    def build(case: Case, mode: str) -> Prepared:
        import equinox as eqx
        import jax
        import jax.numpy as jnp

        cls = getattr(eqx.nn, cell_name)
        keys = jax.random.split(jax.random.key(SEED), case.layers)
        cells = [cls(i, case.size.hidden, key=k) for i, k in zip(_layer_inputs(case), keys)]
        params, static = eqx.partition(cells, eqx.is_inexact_array)
        zeros = jnp.zeros((case.size.hidden,))
        init = (zeros, zeros) if cell_name == "LSTMCell" else zeros
        output = (lambda s: s[0]) if cell_name == "LSTMCell" else (lambda s: s)

        def apply(p, xs):
            for cell in eqx.combine(p, static):

                def one(seq, cell=cell):  # (T, I): eqx cells are unbatched, so vmap over the batch
                    def body(s, x):
                        s = cell(x, s)
                        return s, output(s)

                    return jax.lax.scan(body, init, seq)[1]

                xs = jax.vmap(one)(xs)
            return xs

        def step(p, s, x):
            return jax.vmap(eqx.combine(p, static)[0])(x, s)

        batch = jax.tree.map(lambda z: jnp.zeros((case.size.batch, *z.shape)), init)
        return _jax_prepared(JaxModel(apply, params, step, batch), case, mode)

    return build


def _cudnn(case: Case, mode: str) -> Prepared:
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn

    s = case.size
    weights = rnn.init_lstm_weight(jax.random.key(SEED), s.inputs, s.hidden, case.layers, False)
    h0 = jnp.zeros((case.layers, s.batch, s.hidden))
    lengths = jnp.full((s.batch,), s.steps, jnp.int32)

    def apply(w, xs):
        return rnn.lstm(xs, h0, h0, w, lengths, s.inputs, s.hidden, case.layers, 0.0, False)[0]

    return _jax_prepared(JaxModel(apply, weights), case, mode)


def _gemm_floor(case: Case, mode: str) -> Prepared:
    """The GEMM work alone: per layer one ``(T*B, I+H) @ (I+H, G*H)`` matmul, as one compiled call."""
    import jax

    s = case.size
    g = GATES[_cases.base(case.cell)]
    keys = jax.random.split(jax.random.key(SEED), 2 * case.layers)
    a = [jax.random.normal(keys[2 * k], (s.steps * s.batch, i + s.hidden)) for k, i in enumerate(_layer_inputs(case))]
    w = [jax.random.normal(keys[2 * k + 1], (i + s.hidden, g * s.hidden)) for k, i in enumerate(_layer_inputs(case))]
    compiled, seconds, peak = compile_jax(lambda a, w: [x @ y for x, y in zip(a, w)], a, w)
    return Prepared(lambda: jax.block_until_ready(compiled(a, w)), seconds, peak, "XLA memory_analysis")


# -------------------------------------------------------------------------------------------- torch


def _torch(case: Case, mode: str) -> Prepared:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(SEED)
    s = case.size
    kind = {"lstm": "LSTM", "lstm2": "LSTM", "gru": "GRU", "elman": "RNN"}[case.cell]
    x = torch.randn(s.batch, s.steps, s.inputs)
    if mode == "step":
        cell = getattr(torch.nn, kind + "Cell")(s.inputs, s.hidden)
        h = torch.zeros(s.batch, s.hidden)
        state = (h, h.clone()) if kind == "LSTM" else h

        def run():
            with torch.inference_mode():
                return cell(x[:, 0], state)

        return Prepared(run)
    net = getattr(torch.nn, kind)(s.inputs, s.hidden, num_layers=case.layers, batch_first=True)
    if mode == "fwd":

        def run():
            with torch.inference_mode():
                return net(x)[0]

        return Prepared(run)

    def run():
        xg = x.detach().requires_grad_()
        net.zero_grad(set_to_none=True)
        net(xg)[0].sum().backward()
        return xg.grad

    run()  # allocate once, so the peak below is one step's working set
    return Prepared(run, None, rss_peak_growth(run), "peak RSS growth (VmHWM)")


def torch_threads() -> int | None:
    """The thread count the torch peer runs with (the core count), or ``None`` without torch."""
    return (os.cpu_count() or 1) if importlib.util.find_spec("torch") else None


# ------------------------------------------------------------------------------------------ registry

IMPLEMENTATIONS: tuple[Impl, ...] = (
    Impl("recurrax", "recurrax", _cases.CELLS, _recurrax()),
    Impl("recurrax (XLA loop)", "recurrax", ("lstm", "gru", "lstm2"), _recurrax("xla"), ("fwd", "fwd+bwd")),
    Impl(
        "recurrax (plain call)",
        "recurrax",
        tuple(c for c in _cases.CELLS if _cases.variant(c)),
        _recurrax("plain"),
        ("fwd", "fwd+bwd"),
    ),
    Impl(
        "recurrax (generic scan)",
        "recurrax",
        ("lstm", "gru", "lstm2"),
        _recurrax("generic"),
        ("fwd", "fwd+bwd"),
        default=False,
    ),
    Impl("flax.linen LSTMCell", "flax", ("lstm", "lstm2", "lstm:ragged", "lstm:equal"), _linen("LSTMCell")),
    Impl(
        "flax.linen OptimizedLSTMCell",
        "flax",
        ("lstm", "lstm2", "lstm:ragged", "lstm:equal"),
        _linen("OptimizedLSTMCell"),
    ),
    Impl("flax.linen GRUCell", "flax", ("gru", "gru:ragged", "gru:equal"), _linen("GRUCell")),
    Impl(
        "flax.linen OptimizedLSTMCell (reset by hand)",
        "flax",
        ("lstm:resets1", "lstm:resets10"),
        _linen_with_resets("OptimizedLSTMCell"),
        ("fwd", "fwd+bwd"),
    ),
    Impl(
        "flax.linen GRUCell (reset by hand)",
        "flax",
        ("gru:resets1", "gru:resets10"),
        _linen_with_resets("GRUCell"),
        ("fwd", "fwd+bwd"),
    ),
    Impl("flax.linen SimpleCell", "flax", ("elman",), _linen("SimpleCell")),
    Impl("flax.nnx LSTMCell", "flax", ("lstm", "lstm2"), _nnx("LSTMCell")),
    Impl("flax.nnx GRUCell", "flax", ("gru",), _nnx("GRUCell")),
    Impl("flax.nnx SimpleCell", "flax", ("elman",), _nnx("SimpleCell")),
    Impl("equinox LSTMCell", "equinox", ("lstm", "lstm2"), _equinox("LSTMCell")),
    Impl("equinox GRUCell", "equinox", ("gru",), _equinox("GRUCell")),
    Impl("torch.nn", "torch", ("lstm", "gru", "elman", "lstm2"), _torch),
    Impl("jax.experimental.rnn (cuDNN)", "jax", ("lstm", "lstm2"), _cudnn, ("fwd", "fwd+bwd"), needs_gpu=True),
    Impl("GEMM floor", "jax", ("lstm", "gru", "elman", "lstm2"), _gemm_floor, ("fwd",)),
)
"""Every implementation, recurrax first. Equinox has no Elman cell; cuDNN's JAX binding has only the LSTM.
``recurrax (XLA loop)`` is recurrax without its native CPU kernels (their gain, in every run); ``recurrax (plain
call)`` runs a variant's case without its option (``lengths``, ``remat``, ``resets``), so the option's cost is a ratio
of one run; the Flax cells ``(reset by hand)`` are the RL pattern that ``resets`` replaces;
``recurrax (generic scan)`` (the plain per-step scan, for before/after comparisons) runs only when named."""

REFERENCE = "recurrax"


def implementations(names: list[str] | None = None) -> tuple[Impl, ...]:
    """The implementations named in ``names`` (the default ones without); unknown names raise listing the valid ones."""
    if not names:
        return tuple(impl for impl in IMPLEMENTATIONS if impl.default)
    valid = [impl.name for impl in IMPLEMENTATIONS]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown implementation {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}.")
    return tuple(impl for impl in IMPLEMENTATIONS if impl.name in names)
