"""Quickstart: an LSTM as pure functions, run over a padded batch, and what c and h look like.

Run: python examples/quickstart.py
"""

import jax
import jax.numpy as jnp

import recurrax as rx


def main() -> None:
    key_params, key_data = jax.random.split(jax.random.key(0))
    cell = rx.lstm(64)
    params = cell.init(key_params, 16)
    xs = jax.random.normal(key_data, (8, 100, 16))  # (batch, time, features)
    lengths = jnp.arange(8) * 12 + 16  # right-padded sequences of 16..100 steps

    run = jax.jit(lambda p, x, n: rx.scan(cell, p, x, lengths=n, return_states=True))
    final, ys, states = run(params, xs, lengths)
    print(f"{cell.name}: params {jax.tree.map(jnp.shape, params)}")
    print(f"outputs {ys.shape}, final h {final.h.shape}, final c {final.c.shape}")
    print(f"padded outputs are zero: {bool(jnp.all(ys[0, lengths[0] :] == 0))}")

    # h is squashed through tanh and rewritten every step; c accumulates additively.
    h_abs = jnp.abs(states.h).max()
    c_abs = jnp.abs(states.c).max()
    print(f"max |h| = {h_abs:.3f} (bounded by 1), max |c| = {c_abs:.3f} (unbounded)")

    # Gradients flow through the scan like through any JAX function.
    loss = lambda p: jnp.mean(rx.scan(cell, p, xs, lengths=lengths)[1] ** 2)  # noqa: E731
    grads = jax.jit(jax.grad(loss))(params)
    print("grad norms:", {k: round(float(jnp.linalg.norm(v)), 4) for k, v in grads.items()})


if __name__ == "__main__":
    main()
