"""How much the environment's speed limits training: SB3 ``learn()`` steps/s on a CoEL
env, and on a stand-in env with the same spaces that costs (almost) nothing to step.

    python experiments/bench_training.py [--ids CoEL-v0 CoEL-v2] [--algos maskable_ppo ppo]
                                         [--policies stock fused own] [--n-envs K]
                                         [--cartpole-envs 8] [--scenario NAME|FILE]
                                         [--timesteps N] [--repeats R] [--seed S]
                                         [--out results/training_benchmark.md]

For each (id, algorithm): the algorithm's hyperparameters for that id, resolved as
``coel train`` resolves them (``experiments/hyperparams/<algo>.yml``: ``n_envs``,
``n_steps``, batch size, epochs, network), the vectorised env built as ``coel train``
builds it (``DummyVecEnv``, one torch thread, CPU), one untimed rollout, then
``--repeats`` timed ``learn()`` calls of ``--timesteps`` each (rounded up to whole
rollouts; no evaluation or checkpoint callbacks; torch's distribution checks off, as
in ``coel train``). The same is then done with
:class:`NullEnv`: the id's observation and action spaces, ``action_masks()`` and
episode length, a fixed observation and zero reward, so its steps cost a few
microseconds and ``learn()`` runs as fast as the learner itself allows.

``--policies``: each (id, algorithm) is measured with the stock ``MlpPolicy`` (one
torch ``Categorical`` per action field) and with ``FusedMlpPolicy``
(:mod:`agents.policies`: all fields in one tensor op), the same hyperparameters
otherwise; a fused row also gives its training speed-up over the stock row. ``own``
keeps the hyperparameter files' policy (``GraphPolicy`` on ``CoEL-Graph-v0``, whose
``Dict`` observation and ``Discrete`` action the stock policies do not take). Torch's
distribution checks are timed for the stock rows only (the fused distribution builds no
torch distribution), so the other rows leave that column out. ``--n-envs K`` replaces the files'
``n_envs`` (e.g. 8, to compare with CartPole at the same number of envs).

CartPole row (``--cartpole-envs N``, default 8; 0: none): SB3 ``PPO`` with its own
defaults (``MlpPolicy`` 64x64, ``n_steps`` 2048, batch 64, 10 epochs) on
``CartPole-v1`` with N envs (``DummyVecEnv``), timed the same way (training steps/s
only: its env is nearly free). Every CoEL row gives its training rate as a fraction
of it (``vs CartPole``).

Reported per row (medians over the repeats):

* **training steps/s**: ``learn()`` on the CoEL env;
* **learner-only steps/s**: ``learn()`` on the null env (rollout bookkeeping, policy
  forward passes and gradient updates: what no env speed-up can remove), without
  torch's distribution checks as ``coel train`` runs
  (:func:`agents.train.distribution_checks`), and with them (SB3's default);
* **env share**: the part of training time the CoEL env takes, ``1 - t_null / t_env``;
* **env steps/s in training**: the CoEL env's own rate inside training,
  ``1 / (1/training - 1/learner)`` (its steps, ``action_masks()`` and info handling);
* **at the aim**: the training steps/s the same learner would reach if the env ran
  at the envs issue's aim for ``CoEL-v0`` (12k steps/s), ``1 / (1/learner + 1/12000)``,
  and its gain over training now.

Runs on one core, as the other benchmarks: OMP/MKL/OpenBLAS/NumExpr/Accelerate
threads are set to 1 before NumPy is imported, and torch to one thread.
"""

from __future__ import annotations

from experiments.benchutil import machine as _machine
from experiments.benchutil import single_thread, write_report

single_thread()  # before numpy is imported anywhere

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import coel_env  # noqa: E402  (registers the ids)
from agents import train as T  # noqa: E402

#: The envs issue's aim for ``CoEL-v0`` on its default scenario [env steps/s].
AIM_ENV_SPS = 12_000.0
#: Algorithms measured by default (those with a MultiDiscrete policy and no flattening).
DEFAULT_ALGOS = ("maskable_ppo", "ppo")
DEFAULT_IDS = ("CoEL-v0", "CoEL-v2")
#: ``--policies`` -> the hyperparameters' policy name (``own``: the files' own, e.g.
#: ``GraphPolicy`` on ``CoEL-Graph-v0``).
POLICIES = {"stock": "MlpPolicy", "fused": "FusedMlpPolicy", "own": None}


class NullEnv(gym.Env):
    """The spaces, masks and episode length of a CoEL env; stepping costs nothing.

    ``reset`` and ``step`` return one fixed observation (the CoEL env's first one, so
    the policy sees realistic inputs; a ``Dict`` observation as a dict of arrays),
    reward 0 and an empty info; ``action_masks`` allows every choice (of every field
    of a ``MultiDiscrete`` action, of a ``Discrete`` one). The episode is cut by
    ``TimeLimit`` at the CoEL id's ``max_episode_steps``, as the real env is (never, for
    an id without one, such as ``CoEL-Graph-v0``, which ends its own episodes).
    """

    def __init__(self, observation, action_space: gym.spaces.Space,
                 observation_space: gym.spaces.Space) -> None:  # fmt: skip
        self.observation_space = observation_space
        self.action_space = action_space
        if isinstance(observation_space, gym.spaces.Dict):
            self._obs = {k: _frozen(observation[k], sp.dtype)
                         for k, sp in observation_space.spaces.items()}  # fmt: skip
        else:
            self._obs = _frozen(observation, observation_space.dtype)
        if isinstance(action_space, gym.spaces.Discrete):
            n = int(action_space.n)
        else:
            n = int(np.sum(action_space.nvec))
        self._mask = np.ones(n, bool)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs, {}

    def step(self, action):
        return self._obs, 0.0, False, False, {}

    def action_masks(self) -> np.ndarray:
        return self._mask


def _frozen(a, dtype) -> np.ndarray:
    a = np.array(a, dtype)
    a.setflags(write=False)
    return a


def _null_vec(env_id: str, config: dict, n_envs: int, seed: int):
    """``n_envs`` :class:`NullEnv` copies of ``env_id``'s spaces, as ``coel train`` vectorises."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    probe = gym.make(f"coel_env:{env_id}", config=dict(config))
    obs, _ = probe.reset(seed=seed)
    spaces = (obs, probe.action_space, probe.observation_space)
    limit = probe.spec.max_episode_steps
    probe.close()

    def make() -> gym.Env:
        if limit is None:  # the env ends its own episodes (CoEL-Graph-v0): the null one never
            return NullEnv(*spaces)
        return gym.wrappers.TimeLimit(NullEnv(*spaces), max_episode_steps=limit)

    return make_vec_env(make, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)


def _learn_rates(cls, hp: dict, venv, seed: int, timesteps: int, repeats: int,
                 checked: bool = False) -> list[float]:  # fmt: skip
    """Steps/s of ``repeats`` timed ``learn()`` calls after one untimed rollout, without
    torch's distribution checks as ``coel train`` runs (with them when ``checked``)."""
    with T.distribution_checks(checked):
        return _timed_learn(cls, hp, venv, seed, timesteps, repeats)


def _timed_learn(cls, hp: dict, venv, seed: int, timesteps: int, repeats: int) -> list[float]:
    kwargs = T._model_kwargs(cls, hp)
    kwargs.setdefault("device", "cpu")
    model = cls(env=venv, seed=seed, verbose=0, **kwargs)
    rollout = int(hp.get("n_steps", 2048)) * int(hp["n_envs"])
    model.learn(rollout)
    rates = []
    for _ in range(repeats):
        before = model.num_timesteps
        t = time.perf_counter()
        model.learn(timesteps, reset_num_timesteps=False)
        rates.append((model.num_timesteps - before) / (time.perf_counter() - t))
    return rates


def bench_cartpole(n_envs: int, timesteps: int, repeats: int, seed: int) -> dict:
    """The CartPole row: SB3 ``PPO`` with its defaults on ``n_envs`` CartPole-v1 envs."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    venv = make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    hp = {"policy": "MlpPolicy", "n_envs": n_envs}
    try:
        rates = _learn_rates(PPO, hp, venv, seed, timesteps, repeats)
    finally:
        venv.close()
    return {
        "id": "CartPole-v1",
        "algo": "ppo",
        "policy": "stock",
        "scenario": "-",
        "n_envs": n_envs,
        "n_steps": 2048,
        "timesteps": timesteps,
        "repeats": repeats,
        "train_sps": statistics.median(rates),
    }


def bench(env_id: str, algo: str, scenario: str | None, timesteps: int, repeats: int,
          seed: int, policy: str = "stock", n_envs: int | None = None) -> dict:  # fmt: skip
    """One row: ``learn()`` steps/s on the CoEL env and on the null env (medians), with the
    ``policy`` of :data:`POLICIES` and ``n_envs`` (None: the hyperparameter file's)."""
    import torch

    torch.set_num_threads(1)
    cls = T.algo_class(algo)
    over = {} if POLICIES[policy] is None else {"policy": POLICIES[policy]}
    hp = T.resolve_hyperparams(algo, env_id, over)
    if n_envs is not None:
        hp["n_envs"] = n_envs
    n_envs = int(hp["n_envs"])
    if hp.get("normalize"):
        raise ValueError(f"{algo} on {env_id}: normalize=true is not benchmarked here")
    config = {} if scenario is None else {"scenario": scenario}
    real = T._make_vec(env_id, config, n_envs, "dummy", seed, algo, False)
    try:
        env_rates = _learn_rates(cls, hp, real, seed, timesteps, repeats)
    finally:
        real.close()
    null = _null_vec(env_id, config, n_envs, seed)
    try:
        null_rates = _learn_rates(cls, hp, null, seed, timesteps, repeats)
        checked_rates = (
            _learn_rates(cls, hp, null, seed, timesteps, repeats, checked=True)
            if policy == "stock"
            else None  # no torch distribution to check
        )
    finally:
        null.close()
    train_sps = statistics.median(env_rates)
    learner_sps = statistics.median(null_rates)
    env_s = 1.0 / train_sps - 1.0 / learner_sps  # the env's seconds per step in training
    at_aim = 1.0 / (1.0 / learner_sps + 1.0 / AIM_ENV_SPS)
    return {
        "id": env_id,
        "algo": algo,
        "policy": policy,
        "scenario": scenario or "own",
        "n_envs": n_envs,
        "n_steps": int(hp.get("n_steps", 2048)),
        "timesteps": timesteps,
        "repeats": repeats,
        "train_sps": train_sps,
        "learner_sps": learner_sps,
        "checked_sps": statistics.median(checked_rates) if checked_rates else None,
        "env_share": max(0.0, 1.0 - train_sps / learner_sps),
        "env_sps": (1.0 / env_s) if env_s > 0 else float("inf"),
        "at_aim_sps": at_aim,
        "gain_at_aim": at_aim / train_sps,
    }


def compare(rows: list[dict]) -> None:
    """Add each fused row's speed-up over its stock row (``x_stock``) and every CoEL row's
    training rate over CartPole's (``vs_cartpole``), where those rows were measured."""
    stock = {(r["id"], r["algo"], r["n_envs"]): r for r in rows if r["policy"] == "stock"}
    cart = next((r for r in rows if r["id"] == "CartPole-v1"), None)
    for r in rows:
        if r["id"] == "CartPole-v1":
            continue
        base = stock.get((r["id"], r["algo"], r["n_envs"]))
        if r["policy"] != "stock" and base is not None:
            r["x_stock"] = r["train_sps"] / base["train_sps"]
        if cart is not None:
            r["vs_cartpole"] = r["train_sps"] / cart["train_sps"]


def _f(value: float | None, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _vs(r: dict) -> str:
    v = r.get("vs_cartpole")
    return "-" if v is None else f"1/{1 / v:.1f}"


def format_row(r: dict) -> str:
    if r["id"] == "CartPole-v1":
        return (
            f"{r['id']:<10s} {r['algo']:<13s} {r['policy']:<6s} n_envs {r['n_envs']}  "
            f"training {r['train_sps']:8.1f} steps/s  (SB3 PPO defaults)"
        )
    return (
        f"{r['id']:<10s} {r['algo']:<13s} {r['policy']:<6s} {r['scenario']:<8s} "
        f"n_envs {r['n_envs']}  "
        f"training {r['train_sps']:8.1f} steps/s  learner only {r['learner_sps']:8.1f} "
        f"(with torch's checks {_f(r['checked_sps'], '.1f')})  "
        f"env share {r['env_share']:.0%}  env in training {r['env_sps']:8.1f} steps/s  "
        f"at the aim {r['at_aim_sps']:8.1f} (x{r['gain_at_aim']:.2f})  "
        f"x stock {_f(r.get('x_stock'), '.2f')}  vs CartPole {_vs(r)}"
    )


def markdown(rows: list[dict], info: dict[str, str], command: str) -> str:
    lines = [
        "# Training benchmark: how much the env's speed limits SB3 training",
        "",
        f"Command: `{command}`",
        "",
        "`learn()` steps/s (median over the repeats) on the CoEL env and on a null env",
        "with the same spaces, masks and episode length whose steps cost nothing (see",
        "`experiments/bench_training.py`), both without torch's distribution checks, as",
        "`coel train` runs; the learner is also timed with them (SB3's default when Python",
        "runs without `-O`). Env share: `1 - training / learner-only`.",
        "At the aim: the training rate if the env stepped at 12k steps/s (the envs",
        "issue's aim for `CoEL-v0`), `1 / (1/learner + 1/12000)`.",
        "Policy: `stock` is SB3's / sb3-contrib's `MlpPolicy` (one torch `Categorical` per",
        "action field), `fused` is `FusedMlpPolicy` (`agents.policies`), `own` the",
        "hyperparameter files' policy (e.g. `GraphPolicy`); x stock: a fused or own",
        "row's training rate over its stock row's. vs CartPole: the training rate as a",
        "fraction of SB3 PPO's (its defaults) on CartPole-v1 in the same run.",
        "",
        "| id | algo | policy | scenario | n_envs x n_steps | timesteps x repeats "
        "| training steps/s | learner-only steps/s | learner-only with torch's checks "
        "| env share | env steps/s in training | at the aim steps/s | gain at the aim "
        "| x stock | vs CartPole |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["id"] == "CartPole-v1":
            lines.append(
                f"| {r['id']} | {r['algo']} | {r['policy']} (SB3 defaults) | - "
                f"| {r['n_envs']} x {r['n_steps']} | {r['timesteps']} x {r['repeats']} "
                f"| {r['train_sps']:.1f} | - | - | - | - | - | - | - | 1 |"
            )
            continue
        lines.append(
            f"| {r['id']} | {r['algo']} | {r['policy']} | {r['scenario']} "
            f"| {r['n_envs']} x {r['n_steps']} "
            f"| {r['timesteps']} x {r['repeats']} | {r['train_sps']:.1f} "
            f"| {r['learner_sps']:.1f} | {_f(r['checked_sps'], '.1f')} "
            f"| {r['env_share']:.0%} | {r['env_sps']:.1f} "
            f"| {r['at_aim_sps']:.1f} | x{r['gain_at_aim']:.2f} "
            f"| {_f(r.get('x_stock'), '.2f')} | {_vs(r)} |"
        )
    lines += ["", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ids", nargs="+", default=list(DEFAULT_IDS), metavar="ID")
    p.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), metavar="ALGO",
                   choices=("maskable_ppo", "ppo", "a2c"))  # fmt: skip
    p.add_argument("--policies", nargs="+", default=["stock", "fused"], choices=tuple(POLICIES),
                   help="stock MlpPolicy, FusedMlpPolicy and/or own (the hyperparameter "
                        "files' policy, e.g. GraphPolicy; default: stock and fused)")  # fmt: skip
    p.add_argument("--n-envs", type=int, default=None, metavar="K",
                   help="envs per CoEL row (default: the hyperparameter files')")  # fmt: skip
    p.add_argument("--cartpole-envs", type=int, default=8, metavar="N",
                   help="envs of the CartPole-v1 PPO row (0: no such row)")  # fmt: skip
    p.add_argument("--scenario", default=None, metavar="NAME|FILE",
                   help="every id's scenario (default: each id's own)")  # fmt: skip
    p.add_argument("--timesteps", type=int, default=8192, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = p.parse_args(argv)
    if args.timesteps < 1 or args.repeats < 1:
        p.error("--timesteps and --repeats must be >= 1")
    if args.n_envs is not None and args.n_envs < 1:
        p.error(f"--n-envs {args.n_envs} is not allowed; must be >= 1")
    if args.cartpole_envs < 0:
        p.error(f"--cartpole-envs {args.cartpole_envs} is not allowed; must be >= 0")
    ids = [T.canonical_env_id(i) for i in args.ids]
    info = _machine(gymnasium=gym.__version__, coel_env=coel_env.__version__)
    for k, v in info.items():
        print(f"{k}: {v}")
    rows = []
    if args.cartpole_envs:
        r = bench_cartpole(args.cartpole_envs, args.timesteps, args.repeats, args.seed)
        print(format_row(r), flush=True)
        rows.append(r)
    for env_id in ids:
        for algo in args.algos:
            for policy in dict.fromkeys(args.policies):
                r = bench(env_id, algo, args.scenario, args.timesteps, args.repeats, args.seed,
                          policy, args.n_envs)  # fmt: skip
                compare(rows + [r])
                print(format_row(r), flush=True)
                rows.append(r)
    write_report(args.out, "experiments/bench_training.py", argv,
                 lambda cmd: markdown(rows, info, cmd))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
