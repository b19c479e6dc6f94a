"""Gradient flow through time: ``dL / d s_t`` for every ``t`` in one reverse pass, and ``|| d s_T / d s_t ||``.

``gradient_flow`` adds a perturbation ``eps_t`` (zero) to the state at every boundary ``t`` and takes
the gradient of the loss with respect to all of them at once: ``dL / d eps_t = dL / d s_t``, the
total derivative through everything that follows ``t``. One backward pass gives every ``t``.

``jacobian_product_norms`` measures the long-horizon Jacobian ``P_t = d s_T / d s_t = J_{T-1} ... J_t``
(spectral norm, per field block too), by explicit products for small states or by power iteration
on Jacobian-vector and vector-Jacobian products for large ones; the power iteration reports its residual.

Complex state leaves (the LRU's ``x``) are analysed in the real view of :func:`recurrax.dynamics.flatten`
(``Re``, ``Im`` interleaved per unit): a complex field's block of ``d s_T / d s_t`` is ``(2 n, 2 n)`` real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat
from recurrax.dynamics.trajectory import trajectory


class GradientFlow(NamedTuple):
    """``dL / d s_t`` for ``t = 0..T`` (leaves ``(T + 1, n)``), its norm per field (leaves ``(T + 1,)``) and overall.

    Index ``t`` is the boundary before ``xs[t]``: ``grads`` at ``T`` is ``dL / d s_T``, at 0 the
    gradient with respect to the initial state. A complex field's gradient is
    ``dL / d Re s + i dL / d Im s`` (the steepest-ascent direction; ``jax.grad`` alone returns its
    conjugate), so its norm is that of the gradient in the real view.
    """

    grads: State
    norms: State
    total: Array


class ProductNorms(NamedTuple):
    """Spectral norms of ``d s_T / d s_t`` for ``t = 0..T``: per block (``blocks.<out>.<in>``, ``(T + 1,)``) and whole.

    At ``t = T`` the product is the identity.

    Attributes:
      blocks, total: the norms.
      block_residuals, residual: how far the power iteration is from convergence, shaped as ``blocks`` and
        ``total``: the relative residual ``|| A v - rho v || / rho`` of ``A = P_t^T P_t`` at the last
        iterate ``v`` (unit), ``rho = || P_t v ||^2``. Some eigenvalue of ``A`` lies within
        ``residual * rho`` of ``rho`` (Krylov-Weinstein), and the norm's relative error is typically of
        order ``residual^2``, so e.g. ``residual < 1e-3`` means the first five or so digits hold. Zero for
        ``method="explicit"`` (an exact SVD) and where the product is zero.
    """

    blocks: Any
    total: Array
    block_residuals: Any = None
    residual: Array | None = None


@_flat.on_steps
def gradient_flow(
    cell: Cell,
    params: Params,
    xs: Array,
    loss_fn: Callable[[State], Array],
    state: State | None = None,
) -> GradientFlow:
    """The gradient of a loss on the final state with respect to every intermediate state, in one reverse pass.

    Args:
      cell, params: the cell and its params.
      xs: one example's inputs ``(T, I)``.
      loss_fn: ``final_state -> scalar``, e.g. a read-out's squared error at time ``T``.
      state: the initial state (leaves ``(n,)``); zeros when ``None``.

    Returns:
      A :class:`GradientFlow`; its ``norms`` split the gradient by field (``norms.h``, ``norms.c``).
    """
    fn = "dynamics.gradient_flow"
    xs = _flat.check_inputs(fn, cell, params, xs)
    state = _flat.initial_state(fn, cell, params, state)
    zs = cell.project(params, xs)

    # The perturbations live in the flat real view, so a complex field is differentiated as two real ones.
    def loss_of(eps: Array) -> Array:
        def body(s, inputs):
            z, e = inputs
            s = jax.tree.map(jnp.add, cell.transition(params, s, z), _flat.unflatten(state, e))
            return s, None

        first = jax.tree.map(jnp.add, state, _flat.unflatten(state, eps[0]))
        final, _ = jax.lax.scan(body, first, (zs, eps[1:]))
        loss = jnp.asarray(loss_fn(final))
        if loss.shape != ():
            raise ValueError(f"{fn}: `loss_fn` must return a scalar, got shape {loss.shape}.")
        if jnp.issubdtype(loss.dtype, jnp.complexfloating):
            raise TypeError(f"{fn}: `loss_fn` must return a real scalar, got dtype {loss.dtype}.")
        return loss

    flat = _flat.flatten(state)
    flat_grads = jax.grad(loss_of)(jnp.zeros((xs.shape[0] + 1, *flat.shape), flat.dtype))
    grads = _flat.unflatten(state, flat_grads)
    norms = jax.tree.map(lambda g: jnp.linalg.norm(g, axis=-1), grads)
    return GradientFlow(grads, norms, jnp.linalg.norm(flat_grads, axis=-1))


@_flat.on_steps
def jacobian_product_norms(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    method: str = "auto",
    num_iters: int = 50,
    key: Array | None = None,
) -> ProductNorms:
    """``|| d s_T / d s_t ||_2`` for every ``t``, whole and per field block, along the run driven by ``xs``.

    Args:
      cell, params: the cell and its params.
      xs: one example's inputs ``(T, I)``.
      state: the initial state; zeros when ``None``.
      method: ``"explicit"`` multiplies the ``(S, S)`` step Jacobians (``O(T S^3)``; exact),
        ``"power"`` runs ``num_iters`` power iterations on ``P_t^T P_t`` with batched jvp/vjp products
        (``O(num_iters T^2 S^2)``, memory ``O(T S)``), ``"auto"`` the explicit one for ``S <= 256``.
      num_iters: power iterations (``"power"`` only); check ``residual`` to see whether they were enough.
      key: the power iteration's random start; a fixed key when ``None``.

    Returns:
      A :class:`ProductNorms`; e.g. ``blocks.c.c[t] = || d c_T / d c_t ||_2`` for an LSTM, with the power
      iteration's relative residuals in ``residual`` and ``block_residuals`` (zeros for ``"explicit"``).
    """
    fn = "dynamics.jacobian_product_norms"
    if method not in ("auto", "explicit", "power"):
        raise ValueError(f"{fn}: `method` must be 'auto', 'explicit' or 'power', got {method!r}.")
    _flat.check_count(fn, "num_iters", num_iters, low=1)
    states = trajectory(cell, params, xs, state)
    like = jax.tree.map(lambda s: s[0], states)
    size = sum(_flat.sizes(like))
    if method == "auto":
        method = "explicit" if size <= 256 else "power"
    flat_states = _flat.flatten(states)[:-1]
    zs = cell.project(params, xs)
    f = _flat.step_fn(cell, params, like)
    # One (in, out) mask pair per field block, then the whole matrix.
    field_masks = _field_masks(like)
    pairs = [(o, i) for o in field_masks for i in field_masks] + [(jnp.ones(size), jnp.ones(size))]
    out_masks = jnp.stack([o for o, _ in pairs])
    in_masks = jnp.stack([i for _, i in pairs])
    if method == "explicit":
        norms = _explicit(f, flat_states, zs, out_masks, in_masks)
        residuals = jnp.zeros_like(norms)
    else:
        key = jax.random.key(0) if key is None else key
        norms, residuals = _power(f, flat_states, zs, out_masks, in_masks, num_iters, key)
    tree = jax.tree_util.tree_structure(like)
    return ProductNorms(
        _per_block(tree, len(field_masks), norms),
        norms[-1],
        _per_block(tree, len(field_masks), residuals),
        residuals[-1],
    )


def _per_block(tree: Any, num_fields: int, rows: Array) -> Any:
    """The first ``num_fields^2`` rows of ``rows`` as a state of states, ``<out>.<in>``."""
    inner = [
        jax.tree_util.tree_unflatten(tree, list(rows[o * num_fields : (o + 1) * num_fields])) for o in range(num_fields)
    ]
    return jax.tree_util.tree_unflatten(tree, inner)


def _field_masks(like: State) -> list[Array]:
    """One 0/1 vector ``(S,)`` per leaf, selecting that leaf's part of the (real-view) flat state."""
    sizes = _flat.sizes(like)
    return [jnp.concatenate([jnp.full(n, float(i == j)) for i, n in enumerate(sizes)]) for j in range(len(sizes))]


def _explicit(f, flat_states: Array, zs: Array, out_masks: Array, in_masks: Array) -> Array:
    """Norms ``(M, T + 1)`` of the masked products, accumulated from ``t = T`` down to 0."""
    jacs = jax.vmap(jax.jacfwd(f))(flat_states, zs)  # (T, S, S)
    eye = jnp.eye(jacs.shape[-1], dtype=jacs.dtype)

    def body(p, jac):
        p = p @ jac
        return p, p

    _, products = jax.lax.scan(body, eye, jacs, reverse=True)  # products[t] = J_{T-1} ... J_t
    products = jnp.concatenate([products, eye[None]], axis=0)

    def norm(o, i):
        return jnp.linalg.norm(products * o[:, None] * i[None, :], ord=2, axis=(-2, -1))

    return jax.vmap(norm)(out_masks, in_masks)


def _power(
    f, flat_states: Array, zs: Array, out_masks: Array, in_masks: Array, num_iters: int, key: Array
) -> tuple[Array, Array]:
    """Norms and relative residuals ``(M, T + 1)`` by power iteration on ``P_t^T P_t``, all ``t`` at once.

    ``forward(V)[t] = P_t V[t]``: a batch of ``T + 1`` tangents, where tangent ``t`` joins the run at
    step ``t``; ``backward(U)[t] = P_t^T U[t]`` the same in reverse with cotangents.
    """
    num_steps, size = flat_states.shape
    times = jnp.arange(num_steps + 1)[:, None]

    def forward(V):
        def body(W, inputs):
            s, z, k = inputs
            _, jvp = jax.linearize(lambda v: f(v, z), s)
            return jnp.where(times <= k, jax.vmap(jvp)(W), W), None

        return jax.lax.scan(body, V, (flat_states, zs, jnp.arange(num_steps)))[0]

    def backward(U):
        def body(W, inputs):
            s, z, k = inputs
            _, vjp = jax.vjp(lambda v: f(v, z), s)
            return jnp.where(times <= k, jax.vmap(lambda w: vjp(w)[0])(W), W), None

        return jax.lax.scan(body, U, (flat_states, zs, jnp.arange(num_steps)), reverse=True)[0]

    def unit(v):
        return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), jnp.finfo(v.dtype).tiny)

    def one(o, i, key):
        v0 = unit(jax.random.normal(key, (num_steps + 1, size), flat_states.dtype) * i)
        zeros = jnp.zeros(num_steps + 1, flat_states.dtype)

        def iterate(_, carry):
            v, _, _ = carry
            u = forward(v) * o
            w = backward(unit(u)) * i
            # A v = |u| w and rho = |u|^2, so |A v - rho v| / rho = |w - |u| v| / |u|, without forming |u|^2.
            u_norm = jnp.linalg.norm(u, axis=-1)
            gap = jnp.linalg.norm(w - u_norm[:, None] * v, axis=-1)
            residual = jnp.where(u_norm > 0, gap / jnp.where(u_norm > 0, u_norm, 1.0), 0.0)
            return unit(w), jnp.linalg.norm(w, axis=-1), residual

        return jax.lax.fori_loop(0, num_iters, iterate, (v0, zeros, zeros))[1:]

    keys = jax.random.split(key, out_masks.shape[0])
    return jax.vmap(one)(out_masks, in_masks, keys)
