"""PPO with a recurrent policy on a memory task: a recurrax GRU, the same agent in Flax, and a memoryless MLP.

The task, cue recall (after bsuite's MemoryChain): an episode shows one of ``K`` cues (one-hot) at its
first step, then ``L`` blank steps (``L`` drawn anew each episode from ``[--min-delay, --max-delay]``), then
a query flag. The action taken at the query is rewarded +1 if it names the cue and -1 otherwise, and the
episode ends; actions before it do nothing. Without memory the query looks the same whatever the cue, so a
memoryless policy is right 1/K of the time: expected return 2/K - 1, -0.5 for the default K = 4. A perfect
memory scores +1. With the default delays, 10 to 40, an episode lasts 12 to 42 steps, so a 64-step rollout
holds one to five episode ends per environment, and the episode running at its start began in the previous
rollout: its memory is in the recurrent state the rollout starts from.

The agent has purejaxrl's PPO-RNN layout: a dense embedding of the observation, a recurrent core, actor and
critic heads on its output. The environments run under ``jax.vmap`` and reset themselves, so a rollout of
fixed length crosses episode ends. Each stored step carries ``done``: "this observation is the first of a
new episode" (purejaxrl's ``last_done``, stored beside ``last_obs``), which is exactly what
``rx.scan(..., resets=)`` takes. Training replays the whole rollout from the recurrent state it started
from, ``rx.scan(cell, params, xs, h0, resets=dones)``, so the state is zeroed at the same steps as when
acting, and no gradient crosses an episode boundary.

Three agents, with the same seeds, hyper-parameters and environment:
  * ``recurrax``: ``rx.gru(H)`` (``--cell lstm``: ``rx.lstm(H)``), acting with ``cell.step``, training with
    ``rx.scan(..., resets=dones)``;
  * ``flax``: ``nn.GRUCell`` (``nn.OptimizedLSTMCell``) in a ``ScannedRNN``, ``nn.scan`` over time with the
    reset ``jnp.where(done, initial_carry, carry)`` written by hand, purejaxrl's pattern. It starts from the
    recurrax agent's weights (``recurrax.interop.to_linen``) and draws the same random numbers, so the two
    compute the same thing and differ only by floating-point rounding;
  * ``mlp``: a dense layer in place of the recurrent core, the memoryless baseline.

One update is a rollout plus ``--ppo-epochs`` epochs of minibatch PPO (clipped objective, GAE, clipped value
loss, entropy bonus, Adam with gradient clipping; a minibatch is a set of environments, whole sequences),
all one jitted function. The agents' updates are interleaved, so a change of machine load hits all three.
Reported: the mean episode return over the last tenth of the updates, the greedy return on fresh episodes,
and the median time per update (the first, which compiles, left out).

Run: python examples/ppo_memory.py --out runs/ppo_memory    (full run)
     python examples/ppo_memory.py --quick                  (CI-sized)
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax as rx
from recurrax.interop import to_linen

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

Params = Any
Carry = Any  # an agent's recurrent state, batch axis first on every leaf; () for the MLP


# --- the environment -------------------------------------------------------------------------------------


class Task(NamedTuple):
    """The cue-recall task's settings (static)."""

    cues: int
    min_delay: int
    max_delay: int

    @property
    def obs_size(self) -> int:
        return self.cues + 1  # the cue (one-hot, first step only) and the query flag

    @property
    def max_episode(self) -> int:
        return self.max_delay + 2  # cue, blanks, query


class EnvState(NamedTuple):
    cue: jax.Array  # () int32
    delay: jax.Array  # () int32: the query comes at t = delay + 1
    t: jax.Array  # () int32, steps taken in this episode


def env_reset(task: Task, key: jax.Array) -> tuple[jax.Array, EnvState]:
    """A new episode: ``obs (obs_size,)`` and its state."""
    k_cue, k_delay = jax.random.split(key)
    state = EnvState(
        cue=jax.random.randint(k_cue, (), 0, task.cues),
        delay=jax.random.randint(k_delay, (), task.min_delay, task.max_delay + 1),
        t=jnp.zeros((), jnp.int32),
    )
    return env_obs(task, state), state


def env_obs(task: Task, state: EnvState) -> jax.Array:
    """``(obs_size,)``: the one-hot cue at ``t = 0``, the query flag at ``t = delay + 1``, zeros between."""
    cue = jax.nn.one_hot(state.cue, task.cues) * (state.t == 0)
    return jnp.concatenate([cue, (state.t == state.delay + 1)[None].astype(jnp.float32)])


def env_step(
    task: Task, key: jax.Array, state: EnvState, action: jax.Array
) -> tuple[jax.Array, EnvState, jax.Array, jax.Array]:
    """One step with auto-reset: ``(obs, state, reward, done)``; after ``done`` the obs is a new episode's first."""
    query = state.t == state.delay + 1
    reward = jnp.where(query, jnp.where(action == state.cue, 1.0, -1.0), 0.0)
    stepped = state._replace(t=state.t + 1)
    fresh_obs, fresh = env_reset(task, key)
    state = jax.tree.map(lambda a, b: jnp.where(query, a, b), fresh, stepped)
    obs = jnp.where(query, fresh_obs, env_obs(task, stepped))
    return obs, state, reward, query


# --- the agents ------------------------------------------------------------------------------------------


class Agent(NamedTuple):
    """An actor-critic as pure functions (``T`` time, ``B`` environments, ``O`` obs size, ``A`` actions).

    * ``init(key) -> params``;
    * ``initial_carry(params, B)``: the recurrent state of a fresh episode;
    * ``act(params, carry, obs (B, O), done (B,)) -> (carry, logits (B, A), value (B,))``: one step, starting
      afresh where ``done`` (``obs`` is the first of an episode);
    * ``unroll(params, carry0, obs (T, B, O), dones (T, B)) -> (logits (T, B, A), values (T, B))``: the same
      over a whole rollout from its initial state, for training.
    """

    name: str
    init: Callable[[jax.Array], Params]
    initial_carry: Callable[[Params, int], Carry]
    act: Callable[..., tuple[Carry, jax.Array, jax.Array]]
    unroll: Callable[..., tuple[jax.Array, jax.Array]]


def dense_init(key: jax.Array, n_in: int, n_out: int, scale: float) -> dict[str, jax.Array]:
    """Orthogonal kernel ``(n_in, n_out)`` of gain ``scale``, zero bias: Flax ``Dense``'s param layout."""
    return {"kernel": jax.nn.initializers.orthogonal(scale)(key, (n_in, n_out)), "bias": jnp.zeros(n_out)}


def dense(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return x @ p["kernel"] + p["bias"]


def init_body(key: jax.Array, task: Task, hidden: int) -> dict[str, Any]:
    """The embedding and the two heads (purejaxrl's gains: sqrt 2 hidden, 0.01 policy, 1 value)."""
    k = jax.random.split(key, 5)
    return {
        "embed": dense_init(k[0], task.obs_size, hidden, np.sqrt(2)),
        "actor_hidden": dense_init(k[1], hidden, hidden, np.sqrt(2)),
        "actor_out": dense_init(k[2], hidden, task.cues, 0.01),
        "critic_hidden": dense_init(k[3], hidden, hidden, np.sqrt(2)),
        "critic_out": dense_init(k[4], hidden, 1, 1.0),
    }


def embed(params: Params, obs: jax.Array) -> jax.Array:
    return jax.nn.relu(dense(params["embed"], obs))


def heads(params: Params, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Features ``(..., H)`` -> logits ``(..., A)``, value ``(...)``."""
    logits = dense(params["actor_out"], jax.nn.relu(dense(params["actor_hidden"], y)))
    value = dense(params["critic_out"], jax.nn.relu(dense(params["critic_hidden"], y)))[..., 0]
    return logits, value


def recurrax_agent(cell: rx.Cell, task: Task, hidden: int) -> Agent:
    """The recurrent core is ``cell``: one ``cell.step`` per environment step, ``rx.scan(resets=)`` to train."""

    def init(key):
        k_body, k_cell = jax.random.split(key)
        return {**init_body(k_body, task, hidden), "cell": cell.init(k_cell, hidden)}

    def initial_carry(params, batch):
        return cell.initial_state(params["cell"], (batch,))

    def act(params, state, obs, done):
        # A new episode starts from the initial state: the same reset rx.scan applies at `resets` in training.
        state = rx.reset(cell, params["cell"], state, done)
        state = cell.step(params["cell"], state, embed(params, obs))
        return state, *heads(params, cell.output(state))

    def unroll(params, state, obs, dones):
        _, ys = rx.scan(cell, params["cell"], embed(params, obs), state, resets=dones, time_major=True)
        return heads(params, ys)

    return Agent("recurrax", init, initial_carry, act, unroll)


class ScannedRNN(nn.Module):
    """purejaxrl's ``ScannedRNN``: a Flax cell under ``nn.scan`` over time, zeroing the carry where ``reset``."""

    kind: str  # "gru" or "lstm"
    hidden: int

    @functools.partial(nn.scan, variable_broadcast="params", in_axes=0, out_axes=0, split_rngs={"params": False})
    @nn.compact
    def __call__(self, carry: Carry, inputs: tuple[jax.Array, jax.Array]) -> tuple[Carry, jax.Array]:
        x, reset = inputs  # (B, H), (B,)
        fresh = jax.tree.map(jnp.zeros_like, carry)
        carry = jax.tree.map(lambda c0, c: jnp.where(reset[:, None], c0, c), fresh, carry)
        return flax_cell(self.kind, self.hidden)(carry, x)


def flax_cell(kind: str, hidden: int) -> nn.Module:
    return nn.GRUCell(hidden, name="cell") if kind == "gru" else nn.OptimizedLSTMCell(hidden, name="cell")


class FlaxActorCritic(nn.Module):
    """The same network as :func:`recurrax_agent` in Flax linen, with the same param names."""

    kind: str
    hidden: int
    actions: int

    @nn.compact
    def __call__(self, carry: Carry, obs: jax.Array, dones: jax.Array) -> tuple[Carry, jax.Array, jax.Array]:
        """``obs (T, B, O)``, ``dones (T, B)`` -> ``(carry, logits (T, B, A), values (T, B))``."""
        x = nn.relu(nn.Dense(self.hidden, name="embed")(obs))
        carry, ys = ScannedRNN(self.kind, self.hidden, name="rnn")(carry, (x, dones))
        logits = nn.Dense(self.actions, name="actor_out")(nn.relu(nn.Dense(self.hidden, name="actor_hidden")(ys)))
        value = nn.Dense(1, name="critic_out")(nn.relu(nn.Dense(self.hidden, name="critic_hidden")(ys)))
        return carry, logits, value[..., 0]


def flax_agent(kind: str, task: Task, hidden: int, start_from: Agent) -> Agent:
    """The Flax twin; its params are ``start_from``'s initial params, the cell's converted by ``to_linen``."""
    model = FlaxActorCritic(kind, hidden, task.cues)

    def init(key):
        p = start_from.init(key)
        body = {k: v for k, v in p.items() if k != "cell"}
        return {"params": {**body, "rnn": {"cell": to_linen(flax_cell(kind, hidden), p["cell"])["params"]}}}

    def initial_carry(params, batch):
        h = jnp.zeros((batch, hidden))
        return h if kind == "gru" else (h, h)  # OptimizedLSTMCell's carry is (c, h)

    def act(params, carry, obs, done):
        carry, logits, value = model.apply(params, carry, obs[None], done[None])  # a sequence of one step
        return carry, logits[0], value[0]

    def unroll(params, carry, obs, dones):
        return model.apply(params, carry, obs, dones)[1:]

    return Agent("flax", init, initial_carry, act, unroll)


def mlp_agent(task: Task, hidden: int) -> Agent:
    """The memoryless baseline: a dense layer where the recurrent core was."""

    def init(key):
        k_body, k_core = jax.random.split(key)
        return {**init_body(k_body, task, hidden), "core": dense_init(k_core, hidden, hidden, np.sqrt(2))}

    def features(params, obs):
        return jax.nn.relu(dense(params["core"], embed(params, obs)))

    def act(params, carry, obs, done):
        return carry, *heads(params, features(params, obs))

    def unroll(params, carry, obs, dones):
        return heads(params, features(params, obs))

    return Agent("mlp", init, lambda params, batch: (), act, unroll)


# --- PPO -------------------------------------------------------------------------------------------------


class Config(NamedTuple):
    envs: int
    rollout: int
    ppo_epochs: int
    minibatches: int
    lr: float
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5


class Runner(NamedTuple):
    """What one update hands the next."""

    params: Params
    opt_state: Any
    env_state: EnvState  # (B,) per leaf
    obs: jax.Array  # (B, O): the next observation to act on
    done: jax.Array  # (B,): whether `obs` is the first of an episode
    carry: Carry  # the agent's state before acting on `obs`
    episode_return: jax.Array  # (B,): reward so far in the running episodes
    key: jax.Array


class Transition(NamedTuple):
    """One rollout step, time-major ``(T, B, ...)`` when stacked."""

    obs: jax.Array
    done: jax.Array  # obs is the first of an episode: the step's `resets`
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    ended: jax.Array  # the episode ended at this step (the next step's `done`)
    finished_return: jax.Array  # the episode's return where `ended`, else 0


def optimizer(cfg: Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=1e-5))


def init_runner(agent: Agent, task: Task, cfg: Config, key: jax.Array) -> Runner:
    """Fresh params, optimizer state and environments; the same ``key`` gives every agent the same episodes."""
    k_params, k_env, key = jax.random.split(key, 3)
    params = agent.init(k_params)
    obs, env_state = jax.vmap(functools.partial(env_reset, task))(jax.random.split(k_env, cfg.envs))
    return Runner(
        params=params,
        opt_state=optimizer(cfg).init(params),
        env_state=env_state,
        obs=obs,
        done=jnp.ones(cfg.envs, bool),
        carry=agent.initial_carry(params, cfg.envs),
        episode_return=jnp.zeros(cfg.envs),
        key=key,
    )


def rollout(agent: Agent, task: Task, cfg: Config, runner: Runner, key: jax.Array) -> tuple[Runner, Transition]:
    """``cfg.rollout`` steps of every environment, sampling from the policy; returns the stacked transitions."""
    step_envs = jax.vmap(functools.partial(env_step, task))

    def one_step(r: Runner, k: jax.Array) -> tuple[Runner, Transition]:
        k_act, k_env = jax.random.split(k)
        carry, logits, value = agent.act(r.params, r.carry, r.obs, r.done)
        action = jax.random.categorical(k_act, logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
        obs, env_state, reward, ended = step_envs(jax.random.split(k_env, cfg.envs), r.env_state, action)
        episode_return = r.episode_return + reward
        t = Transition(r.obs, r.done, action, log_prob, value, reward, ended, jnp.where(ended, episode_return, 0.0))
        r = r._replace(
            env_state=env_state,
            obs=obs,
            done=ended,
            carry=carry,
            episode_return=jnp.where(ended, 0.0, episode_return),
        )
        return r, t

    return jax.lax.scan(one_step, runner, jax.random.split(key, cfg.rollout))


def gae(cfg: Config, traj: Transition, last_value: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimates and value targets, ``(T, B)`` each; no bootstrap across an episode end."""

    def back(carry, t: Transition):
        advantage, next_value = carry
        not_ended = 1.0 - t.ended
        delta = t.reward + cfg.gamma * next_value * not_ended - t.value
        advantage = delta + cfg.gamma * cfg.gae_lambda * not_ended * advantage
        return (advantage, t.value), advantage

    _, advantages = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
    return advantages, advantages + traj.value


def ppo_loss(
    agent: Agent, cfg: Config, params: Params, carry0: Carry, traj: Transition, advantages: jax.Array, targets
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The clipped PPO objective on whole sequences ``(T, b)``, replayed from their initial state ``carry0``."""
    logits, values = agent.unroll(params, carry0, traj.obs, traj.done)
    log_probs = jax.nn.log_softmax(logits)
    log_prob = jnp.take_along_axis(log_probs, traj.action[..., None], -1)[..., 0]
    log_ratio = log_prob - traj.log_prob
    ratio = jnp.exp(log_ratio)
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv).mean()
    clipped = traj.value + jnp.clip(values - traj.value, -cfg.clip, cfg.clip)
    value_loss = 0.5 * jnp.maximum((values - targets) ** 2, (clipped - targets) ** 2).mean()
    entropy = -(jnp.exp(log_probs) * log_probs).sum(-1).mean()
    loss = actor_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
    # Before the first gradient step the replay must reproduce the acting pass: this is that gap.
    return loss, {"value_loss": value_loss, "entropy": entropy, "max_abs_log_ratio": jnp.abs(log_ratio).max()}


def make_update(agent: Agent, task: Task, cfg: Config) -> Callable[[Runner], tuple[Runner, dict[str, jax.Array]]]:
    """One PPO update (rollout, GAE, ``ppo_epochs`` x ``minibatches`` gradient steps), to be jitted."""
    tx = optimizer(cfg)
    grad_fn = jax.value_and_grad(functools.partial(ppo_loss, agent, cfg), has_aux=True)
    per_mb = cfg.envs // cfg.minibatches

    def update(runner: Runner) -> tuple[Runner, dict[str, jax.Array]]:
        k_roll, k_perm, key = jax.random.split(runner.key, 3)
        carry0 = runner.carry  # the state the rollout starts from: training replays from it
        runner, traj = rollout(agent, task, cfg, runner, k_roll)
        _, _, last_value = agent.act(runner.params, runner.carry, runner.obs, runner.done)
        advantages, targets = gae(cfg, traj, last_value)

        def epoch(state, k):
            # Minibatches are sets of environments, each a whole sequence with its own initial state.
            order = jax.random.permutation(k, cfg.envs).reshape(cfg.minibatches, per_mb)
            by_env = lambda x: jnp.moveaxis(x[:, order], 1, 0)  # noqa: E731  (T, B, ...) -> (M, T, b, ...)
            batches = (jax.tree.map(lambda c: c[order], carry0), *jax.tree.map(by_env, (traj, advantages, targets)))

            def minibatch(state, batch):
                params, opt_state = state
                (loss, aux), grads = grad_fn(params, *batch)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **aux}

            return jax.lax.scan(minibatch, state, batches)

        (params, opt_state), stats = jax.lax.scan(
            epoch, (runner.params, runner.opt_state), jax.random.split(k_perm, cfg.ppo_epochs)
        )
        episodes = traj.ended.sum()
        weights = jnp.arange(traj.action.size, dtype=jnp.int32).reshape(traj.action.shape) % 9973 + 1
        metrics = {
            "episodes": episodes,
            "return": traj.finished_return.sum() / jnp.maximum(episodes, 1),
            "success": (traj.finished_return > 0).sum() / jnp.maximum(episodes, 1),
            "loss": stats["loss"].mean(),
            "value_loss": stats["value_loss"].mean(),
            "entropy": stats["entropy"].mean(),
            "replay_gap": stats["max_abs_log_ratio"][0, 0],
            "action_checksum": (traj.action * weights).sum(),  # tells whether two agents took the same actions
        }
        return runner._replace(params=params, opt_state=opt_state, key=key), metrics

    return update


def evaluate(agent: Agent, task: Task, params: Params, key: jax.Array, n: int) -> dict[str, float]:
    """Greedy (argmax) actions on ``n`` fresh episodes: mean return and success rate of each one's first episode."""
    keys = jax.random.split(key, task.max_episode + 1)
    obs, env_state = jax.vmap(functools.partial(env_reset, task))(jax.random.split(keys[0], n))
    step_envs = jax.vmap(functools.partial(env_step, task))

    def one_step(state, k):
        carry, env_state, obs, done, alive, total = state
        carry, logits, _ = agent.act(params, carry, obs, done)
        obs, env_state, reward, ended = step_envs(jax.random.split(k, n), env_state, jnp.argmax(logits, -1))
        return (carry, env_state, obs, ended, alive & ~ended, total + reward * alive), None

    start = (agent.initial_carry(params, n), env_state, obs, jnp.ones(n, bool), jnp.ones(n, bool), jnp.zeros(n))
    (*_, total), _ = jax.lax.scan(one_step, start, keys[1:])
    return {"return": float(total.mean()), "success": float((total > 0).mean())}


# --- the comparison --------------------------------------------------------------------------------------


def train_all(agents: list[Agent], task: Task, cfg: Config, args) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Trains the agents side by side, one update of each in turn; returns each one's metrics and the
    per-update metrics of every update."""
    key = jax.random.key(args.seed)
    k_train, k_eval = jax.random.split(key)
    runners = {a.name: init_runner(a, task, cfg, k_train) for a in agents}  # one key: the same episodes
    updates = {a.name: jax.jit(make_update(a, task, cfg)) for a in agents}
    progress = {a.name: _common.Progress(f"ppo_memory/{a.name}", args.steps, args.epochs) for a in agents}
    history: dict[str, list[dict]] = {a.name: [] for a in agents}
    seconds: dict[str, list[float]] = {a.name: [] for a in agents}
    epoch_lines: dict[str, list[dict]] = {a.name: [] for a in agents}
    for step in range(1, args.steps + 1):
        for agent in agents:
            start = time.perf_counter()
            runners[agent.name], m = updates[agent.name](runners[agent.name])
            m = {k: v.item() for k, v in jax.device_get(m).items()}  # blocks, so the update is timed whole
            seconds[agent.name].append(time.perf_counter() - start)
            history[agent.name].append(m)
            if progress[agent.name].epoch_ends(step):
                recent = history[agent.name][-max(1, args.steps // args.epochs) :]
                line = {
                    "update": step,
                    "return": float(np.mean([h["return"] for h in recent])),
                    "success": float(np.mean([h["success"] for h in recent])),
                    "entropy": float(np.mean([h["entropy"] for h in recent])),
                    "ms_per_update": 1e3 * float(np.median(seconds[agent.name][1:] or seconds[agent.name])),
                }
                epoch_lines[agent.name].append(line)
                progress[agent.name].line(step, **{k: v for k, v in line.items() if k != "update"})
    last = max(1, args.steps // 10)
    results = {}
    for agent in agents:
        h, s = history[agent.name], seconds[agent.name]
        results[agent.name] = {
            "return_last_updates": float(np.mean([x["return"] for x in h[-last:]])),
            "success_last_updates": float(np.mean([x["success"] for x in h[-last:]])),
            "last_updates": last,
            "greedy_eval": evaluate(agent, task, runners[agent.name].params, k_eval, args.eval_episodes),
            "ms_per_update": 1e3 * float(np.median(s[1:] or s)),
            "first_update_seconds": s[0],  # compiles
            "train_seconds": float(np.sum(s)),
            "max_replay_gap": float(np.max([x["replay_gap"] for x in h])),
            "history": epoch_lines[agent.name],
        }
    return results, history


def same_actions_for(a: list[dict], b: list[dict]) -> int:
    """For how many updates from the first two agents' rollouts took the same actions (checksum and return)."""
    n = 0
    for x, y in zip(a, b):
        if (x["action_checksum"], x["return"]) != (y["action_checksum"], y["return"]):
            break
        n += 1
    return n


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=400, quick_steps=6, epochs=10)
    p.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--cues", type=int, default=4, help="K: cues and actions")
    p.add_argument("--min-delay", type=int, default=10, help="fewest blank steps between cue and query")
    p.add_argument("--max-delay", type=int, default=40, help="most blank steps between cue and query")
    p.add_argument("--envs", type=int, default=128, help="environments run in parallel")
    p.add_argument("--rollout", type=int, default=64, help="steps per rollout (crossing episode ends)")
    p.add_argument("--ppo-epochs", type=int, default=4, help="passes over each rollout")
    p.add_argument("--minibatches", type=int, default=4, help="minibatches (sets of environments) per pass")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-episodes", type=int, default=1024)
    args = _common.parse(p, argv)
    if args.quick:
        args.hidden, args.envs, args.rollout, args.eval_episodes = min(args.hidden, 16), 16, 16, 128
        args.min_delay, args.max_delay = 2, 6  # short episodes, so a 16-step rollout still crosses their ends
    if args.envs % args.minibatches:
        p.error(f"--envs ({args.envs}) must be a multiple of --minibatches ({args.minibatches})")
    task = Task(args.cues, args.min_delay, args.max_delay)
    cfg = Config(args.envs, args.rollout, args.ppo_epochs, args.minibatches, args.lr)
    cell = rx.gru(args.hidden) if args.cell == "gru" else rx.lstm(args.hidden)
    recurrent = recurrax_agent(cell, task, args.hidden)
    agents = [recurrent, flax_agent(args.cell, task, args.hidden, recurrent), mlp_agent(task, args.hidden)]
    print(
        f"[ppo_memory] recall one of {args.cues} cues after {args.min_delay}..{args.max_delay} blank steps; "
        f"{args.envs} envs x {args.rollout} steps per update, {args.cell} {args.hidden}; "
        f"memoryless expected return {2 / args.cues - 1:.2f}, perfect 1"
    )
    # Which backend rx.scan(resets=) trains on, for a minibatch: (T, envs per minibatch, H).
    batch = (args.rollout, args.envs // args.minibatches)
    backend = rx.backends.which(
        cell,
        cell.init(jax.random.key(0), args.hidden),
        jnp.zeros((*batch, args.hidden)),
        time_major=True,
        resets=jnp.zeros(batch, bool),
    )
    results, history = train_all(agents, task, cfg, args)
    same = same_actions_for(history["recurrax"], history["flax"])
    ratio = results["recurrax"]["ms_per_update"] / results["flax"]["ms_per_update"]
    print("| agent | return (last updates) | success | greedy return | greedy success | ms/update |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        g = r["greedy_eval"]
        print(
            f"| {name} | {r['return_last_updates']:.3f} | {r['success_last_updates']:.3f} | {g['return']:.3f} "
            f"| {g['success']:.3f} | {r['ms_per_update']:.1f} |"
        )
    print(
        f"[ppo_memory] recurrax ({backend}) / flax time per update: {ratio:.2f}; "
        f"same actions for the first {same} updates"
    )
    metrics = {
        "task": {"cues": args.cues, "min_delay": args.min_delay, "max_delay": args.max_delay},
        "memoryless_expected_return": 2 / args.cues - 1,
        "recurrax_backend": backend,
        "recurrax_over_flax_ms": ratio,
        "same_actions_updates": same,
        **results,
    }
    return _common.write_metrics(args.out, "ppo_memory", metrics, args)


if __name__ == "__main__":
    main()
