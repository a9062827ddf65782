"""``coel train-ma``: parameter-shared PPO on multi-agent CoEL, and its policy for the harness.

  coel train-ma [--scenario NAME|FILE] [--set K=V ...] [--env-config K=V ...]
                [--timesteps N] [--seed S] [--n-envs K] [--hyperparams K=V ...]
                [--eval-freq N] [--eval-seeds S ...] [--eval-epochs N]
                [--torch-threads N] [--run-dir DIR | --runs-root DIR]

Every edge server of :func:`coel_env.parallel_env` is an agent; all agents
share one SB3 PPO policy (their observation and action spaces are the same by
construction). The PettingZoo env becomes an SB3 vector env through SuperSuit's
standard conversion, ``pettingzoo_env_to_vec_env_v1`` (one vector slot per
agent) then ``concat_vec_envs_v1`` (``--n-envs`` copies, in this process), so a
rollout of ``n_steps`` holds ``n_steps x agents x n_envs`` transitions and
``--timesteps`` counts agent steps. Two small adaptations: SuperSuit's
concatenated env has no ``seed()`` (SB3 calls it), so the seed is kept and
passed to the next ``reset(seed=...)``; and ``VecMonitor`` records each agent's
episode return for SB3's logs.

Hyperparameters: :data:`MA_HYPERPARAMS`, then ``--hyperparams KEY=VALUE`` (PPO's
constructor arguments plus ``n_envs``; checked like ``coel train``'s: unknown
keys raise). ``normalize`` is refused: the observations are already in [0, 1].

The run folder (never overwritten; ``--run-dir DIR`` or
``<runs-root>/ma_ppo-<scenario>-<YYYYmmdd-HHMMSS>-s<seed>``) holds ``args.yml``
(with ``kind: multiagent``), ``config.yml`` (the resolved multi-agent env
config), ``hyperparams.yml``, ``command.txt``, ``seed``, ``versions.yml``,
``model.zip``, ``evaluations.npz`` (team return of the harness on the
``--eval-seeds`` every ``--eval-freq`` steps and at the end, in SB3's
EvalCallback layout, so ``coel compare`` draws its learning curve) and ``tb/``.

The trained policy is a :class:`MAPolicy`: before each epoch every agent
observes its own broadcast view, the shared model picks each agent's action
(deterministically) and :func:`coel_env.envs.multiagent.combine` turns them into the
plan, exactly as in the env. It runs through :mod:`agents.harness` like every
baseline: ``coel compare --runs RUN_DIR`` (a multi-agent run folder is
recognised by its ``args.yml``) or ``--policies ma:RUN_DIR``.

Model files unpickle data: load only files you trust.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Observation
from coel_env.core.plan import Plan
from coel_env.core.world import World

#: ``args.yml`` kind of a multi-agent run folder.
KIND = "multiagent"
#: The algorithm name recorded for the parameter-shared PPO.
ALGO = "ma_ppo"
#: Env "id" recorded in ``config.yml`` (the env is made by ``coel_env.parallel_env``).
ENV_ID = "coel_env.parallel_env"
#: Default PPO hyperparameters (those of ``maskable_ppo.yml``'s CoEL-v0 entry, with
#: shorter rollouts: each step gives one transition per agent).
MA_HYPERPARAMS: dict[str, Any] = {
    "policy": "MlpPolicy",
    "n_envs": 1,
    "n_steps": 64,
    "batch_size": 64,
    "n_epochs": 5,
    "learning_rate": 3.0e-4,
    "gamma": 0.95,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "policy_kwargs": {"net_arch": [128, 128], "activation_fn": "tanh"},
}
DEFAULT_EVAL_SEEDS = (0, 1, 2, 3, 4)


# ---------------------------------------------------------------------------- policy


class MAPolicy:
    """A parameter-shared model as a harness policy: every edge server acts on its own
    broadcast view, the actions combine into one plan (as in the env).

    Args:
        model: an SB3 model trained on :func:`coel_env.parallel_env` (its ``predict``
            takes a batch of agent observations).
        config: the multi-agent env config it was trained with (``n_groups``,
            ``max_cycles``).
        name: the name results are reported under.
    """

    sees = "view"

    def __init__(self, model: Any, config: Mapping[str, Any], name: str = "ma") -> None:
        from coel_env.envs.multiagent import resolve_config

        self.model = model
        self.config = resolve_config(config)
        self.name = name
        self._lead: dict[str, int] = {}

    def reset(self, world: World, seed: int) -> None:
        from coel_env.envs.multiagent import ServerActions, ServerObservation

        c = self.config
        self.obs_type = ServerObservation(world, c["n_groups"], c["max_cycles"])
        need_obs = self.obs_type.space().shape
        have = getattr(self.model.observation_space, "shape", None)
        if have != need_obs:
            raise ValueError(
                f"policy {self.name!r} was trained on observations of shape {have}; this "
                f"world gives {need_obs} (another number of servers or models)"
            )
        need = ServerActions(world, c["n_groups"]).space_nvec()
        nvec = np.asarray(getattr(self.model.action_space, "nvec", []))
        if not np.array_equal(nvec, need):
            raise ValueError(
                f"policy {self.name!r} was trained on actions {nvec.tolist()}; this world "
                f"needs {need.tolist()}"
            )
        self._lead = {}

    def act(self, world: World, obs: Observation) -> Plan | None:
        from agents import train as tr
        from coel_env.envs.multiagent import agent_views, combine, popularity_estimate

        pop = popularity_estimate(world)
        views = agent_views(world)  # each agent's own view (None: all know the truth)
        by_server = self.obs_type.observe_all(pop, self._lead, views)
        servers = sorted(by_server)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny MLP: more threads only spin (10x slower on 2 cores)
        try:
            with tr.distribution_checks(False):
                actions, _ = self.model.predict(np.stack([by_server[s] for s in servers]),
                                                deterministic=True)  # fmt: skip
        finally:
            torch.set_num_threads(threads)
        actions = np.asarray(actions, np.int64).reshape(len(servers), -1)
        comb = combine(world, dict(zip(servers, actions, strict=True)),
                       self.config["n_groups"], pop, views)  # fmt: skip
        self._lead = comb.lead
        return comb.plan


def is_multiagent_run(path: str | Path) -> bool:
    """Whether ``path`` is a run folder (or its model zip) written by ``coel train-ma``."""
    from agents.train import _read_yaml

    p = Path(path)
    run = p if p.is_dir() else p.parent
    f = run / "args.yml"
    if not f.is_file():
        return False
    args = _read_yaml(f)
    return isinstance(args, dict) and args.get("kind") == KIND


def load_ma_policy(path: str | Path, name: str | None = None) -> MAPolicy:
    """The :class:`MAPolicy` of a ``coel train-ma`` run folder (or its ``model.zip``)."""
    from agents.train import _load_model, _read_yaml, algo_class

    p = Path(path)
    run = p if p.is_dir() else p.parent
    zip_path = p if p.is_file() else run / "model.zip"
    if not p.exists():
        raise ValueError(f"{str(p)!r} does not exist (expected a coel train-ma run folder)")
    if not is_multiagent_run(run):
        raise ValueError(f"{str(run)!r} is not a run folder of coel train-ma (no args.yml with "
                         f"kind: {KIND})")  # fmt: skip
    if not zip_path.is_file():
        raise ValueError(f"{str(run)!r} has no model.zip")
    cfg = _read_yaml(run / "config.yml") if (run / "config.yml").is_file() else None
    if not isinstance(cfg, dict):  # the defaults would score it on other terms
        raise ValueError(
            f"{str(run / 'config.yml')!r} is missing or not a mapping: the run's env config "
            "(scenario, reward weights...) is unknown; coel train-ma writes it at the start "
            "of every run: restore it"
        )
    config = {k: v for k, v in cfg.items() if k != "id"}
    model = _load_model(algo_class("ppo"), zip_path, device="cpu")
    return MAPolicy(model, config, name=name or f"ma:{run.name}")


# ---------------------------------------------------------------------------- training


def make_vec_env(
    config: Mapping[str, Any], n_envs: int, seed: int | None, version: int | None = None
):
    """The parallel env (``version``: None for the current one) as an SB3 VecEnv
    (SuperSuit; one slot per agent and copy)."""
    import supersuit as ss
    from stable_baselines3.common.vec_env import VecMonitor
    from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper

    from coel_env.envs.multiagent import CURRENT_VERSION, parallel_env

    class SeededSB3VecEnv(SB3VecEnvWrapper):
        """SuperSuit's SB3 wrapper; ``seed(s)`` applies at the next reset (SB3's rule)."""

        _pending: int | None = None

        def seed(self, seed: int | None = None):
            self._pending = seed
            return [None if seed is None else seed + i for i in range(self.num_envs)]

        def reset(self, seed=None, options=None):
            seed = self._pending if seed is None else seed
            self._pending = None
            obs, self.reset_infos = self.venv.reset(seed=seed, options=options)
            return obs

    version = CURRENT_VERSION if version is None else version
    vec = ss.pettingzoo_env_to_vec_env_v1(parallel_env(config=dict(config), version=version))
    concat = ss.concat_vec_envs_v1(vec, n_envs, num_cpus=0, base_class="stable_baselines3")
    venv = SeededSB3VecEnv(concat.venv)
    venv.seed(seed)
    with warnings.catch_warnings():  # SuperSuit's concatenated env has no get_attr: benign
        warnings.filterwarnings("ignore", message="The `render_mode` attribute is not defined")
        return VecMonitor(venv)


def evaluate_model(
    model: Any,
    config: Mapping[str, Any],
    seeds: Sequence[int],
    epochs: int | None = None,
    name: str = "ma",
) -> list:
    """Harness episodes of ``model`` as an :class:`MAPolicy` on ``config``'s scenario."""
    from agents import harness
    from coel_env.envs.multiagent import build_world, resolve_config

    cfg = resolve_config(config)
    policy = MAPolicy(model, cfg, name=name)
    out = []
    for s in seeds:
        world = build_world(cfg)
        out.append(harness.run_episode(policy, cfg["scenario"], int(s),
                                       int(epochs or cfg["max_cycles"]), reward_config=cfg,
                                       world=world))  # fmt: skip
    return out


def _eval_callback(path: Path, config, seeds, epochs, every: int):
    from stable_baselines3.common.callbacks import BaseCallback

    class HarnessEval(BaseCallback):
        """Team return on fixed seeds every ``every`` steps and at the end
        (``evaluations.npz`` in EvalCallback's layout)."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[int, list[float], list[int]]] = []
            self._next = every

        def evaluate(self) -> None:
            eps = evaluate_model(self.model, config, seeds, epochs)
            self.rows.append((self.num_timesteps, [e.metrics["return"] for e in eps],
                              [e.epochs for e in eps]))  # fmt: skip
            self.logger.record("eval/team_return", float(np.mean(self.rows[-1][1])))
            np.savez(path / "evaluations.npz",
                     timesteps=np.array([r[0] for r in self.rows]),
                     results=np.array([r[1] for r in self.rows]),
                     ep_lengths=np.array([r[2] for r in self.rows]))  # fmt: skip

        def _on_step(self) -> bool:
            if every > 0 and self.num_timesteps >= self._next:
                self._next += every
                self.evaluate()
            return True

    return HarnessEval()


def train_ma(
    *,
    timesteps: int,
    seed: int = 0,
    run_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    scenario: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_config: Mapping[str, Any] | None = None,
    n_envs: int | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    eval_freq: int = 0,
    eval_seeds: Sequence[int] | None = None,
    eval_epochs: int | None = None,
    torch_threads: int = 1,
    distribution_checks: bool = False,
    progress: bool = False,
    verbose: int = 0,
    argv: Sequence[str] | None = None,
    env_version: int | None = None,
) -> Path:
    """Train a parameter-shared PPO on the multi-agent env into a new run folder.

    ``timesteps`` counts agent steps; ``eval_freq`` too (0: evaluate at the end only).
    ``eval_epochs``: epochs per evaluation episode (default ``max_cycles``). With the
    same arguments on one CPU, two runs give identical parameters. Returns the folder.
    Trains without torch's distribution checks unless ``distribution_checks`` (as
    :func:`agents.train.distribution_checks`: the same model, faster). ``env_version``:
    the multi-agent env's version (None: the current one; 0 reproduces runs made
    before v1, whose ``args.yml`` has no ``env_version``).
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.utils import set_random_seed

    from agents import train as tr
    from coel_env.envs.multiagent import CURRENT_VERSION, VERSIONS, resolve_config

    timesteps = tr._check_int("--timesteps", timesteps, 1)
    env_version = CURRENT_VERSION if env_version is None else env_version
    if isinstance(env_version, bool) or env_version not in VERSIONS:
        raise ValueError(
            f"--env-version {env_version!r} is not allowed; versions: {list(VERSIONS)}"
        )
    seed = tr._check_int("--seed", seed, 0)
    eval_freq = tr._check_int("--eval-freq", eval_freq, 0)
    torch_threads = tr._check_int("--torch-threads", torch_threads, 0)
    seeds = [tr._check_int("--eval-seeds", s, 0) for s in (eval_seeds or DEFAULT_EVAL_SEEDS)]
    if eval_epochs is not None:
        tr._check_int("--eval-epochs", eval_epochs, 1)
    hp = {**MA_HYPERPARAMS, **dict(hyperparams or {})}
    if n_envs is not None:
        hp["n_envs"] = n_envs
    if hp.get("normalize"):
        raise ValueError("normalize is not supported by coel train-ma (observations are in "
                         "[0, 1] already); leave it out")  # fmt: skip
    hp.pop("normalize", None)
    hp = tr.resolve_hyperparams("ppo", ENV_ID, hp)
    hp.pop("normalize", None)
    hp["n_envs"] = tr._check_int("--n-envs", hp["n_envs"], 1)
    cfg: dict[str, Any] = dict(env_config or {})
    if scenario is not None:
        cfg["scenario"] = str(scenario)
    if overrides:
        cfg["overrides"] = {**cfg.get("overrides", {}), **dict(overrides)}
    resolved = resolve_config(cfg)

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    scen = Path(str(resolved["scenario"])).stem
    path = tr._new_run_dir(run_dir, runs_root, f"{ALGO}-{scen}-{stamp}-s{seed}")
    args = {
        "kind": KIND, "algo": ALGO, "env": ENV_ID, "env_version": env_version,
        "timesteps": timesteps, "seed": seed,
        "n_envs": hp["n_envs"], "scenario": scenario, "overrides": dict(overrides or {}),
        "env_config": dict(env_config or {}), "hyperparams": dict(hyperparams or {}),
        "eval_freq": eval_freq, "eval_seeds": seeds, "eval_epochs": eval_epochs,
        "torch_threads": torch_threads, "distribution_checks": bool(distribution_checks),
        "run_dir": str(path),
    }  # fmt: skip
    call = {"timesteps": timesteps, "seed": seed}
    (path / "command.txt").write_text(tr._command_line(argv, "train_ma", call) + "\n",
                                      encoding="utf-8")  # fmt: skip
    tr._write_yaml(path / "args.yml", args)
    tr._write_yaml(path / "config.yml", {"id": ENV_ID, **resolved})
    tr._write_yaml(path / "hyperparams.yml", hp)
    tr._write_yaml(path / "versions.yml", tr.versions())
    (path / "seed").write_text(f"{seed}\n", encoding="utf-8")

    threads_before = torch.get_num_threads()
    venv = None
    checks = contextlib.ExitStack()
    checks.enter_context(tr.distribution_checks(distribution_checks))
    try:
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        set_random_seed(seed)
        venv = make_vec_env(resolved, hp["n_envs"], seed, env_version)
        kwargs = tr._model_kwargs(PPO, hp)
        kwargs.setdefault("device", "cpu")
        model = PPO(env=venv, seed=seed, verbose=verbose, tensorboard_log=str(path / "tb"),
                    **kwargs)  # fmt: skip
        ev = _eval_callback(path, resolved, seeds, eval_epochs, eval_freq)
        cbs: list[Any] = [ev]
        if progress:
            cbs.append(tr._callbacks_module().TqdmCallback())
        try:
            model.learn(total_timesteps=timesteps, callback=CallbackList(cbs), tb_log_name="run")
        except KeyboardInterrupt:
            model.save(str(path / "model.zip"))
            print(f"\ninterrupted at {model.num_timesteps} steps; saved {path / 'model.zip'}",
                  file=sys.stderr)  # fmt: skip
            raise tr.TrainingInterrupted(path, model.num_timesteps) from None
        model.save(str(path / "model.zip"))
        if not ev.rows or ev.rows[-1][0] != model.num_timesteps:
            ev.evaluate()
        return path
    finally:
        checks.close()
        torch.set_num_threads(threads_before)
        if venv is not None:
            venv.close()


# ---------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default=None, metavar="NAME|FILE", help="scenario (default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted scenario override (repeatable; VALUE as YAML)")  # fmt: skip
    p.add_argument("--env-config", action="append", default=[], metavar="KEY=VALUE",
                   help="multi-agent env config key, e.g. max_cycles=100 (repeatable)")  # fmt: skip
    p.add_argument("--timesteps", type=int, default=100_000, help="agent steps in total")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=None, help="env copies (default 1)")
    p.add_argument("--hyperparams", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="PPO hyperparameter overrides (VALUE as YAML)")  # fmt: skip
    p.add_argument("--eval-freq", type=int, default=0, help="agent steps; 0: at the end only")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=None, metavar="S",
                   help="evaluation seeds (default 0..4)")  # fmt: skip
    p.add_argument("--eval-epochs", type=int, default=None, help="default: max_cycles")
    p.add_argument("--torch-threads", type=int, default=1, help="0: torch's default")
    p.add_argument("--distribution-checks", action="store_true",
                   help="turn torch's distribution checks on (slower; the same model)")  # fmt: skip
    p.add_argument("--env-version", type=int, default=None, metavar="V",
                   help="multi-agent env version (default: the current, 1; 0: as the "
                        "published policy was trained)")  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-dir", default=None, help="new run folder (must not exist)")
    where.add_argument("--runs-root", default="runs", help="parent of run folders")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar on stderr")  # fmt: skip
    p.add_argument("-v", "--verbose", action="count", default=0, help="SB3 log output")


def main(args: argparse.Namespace) -> int:
    from agents.train import TrainingInterrupted, parse_hyperparams, parse_kv

    try:
        path = train_ma(
            timesteps=args.timesteps, seed=args.seed, run_dir=args.run_dir,
            runs_root=args.runs_root, scenario=args.scenario,
            overrides=parse_kv(args.overrides, "--set"),
            env_config=parse_kv(args.env_config, "--env-config"), n_envs=args.n_envs,
            hyperparams=parse_hyperparams(args.hyperparams), eval_freq=args.eval_freq,
            eval_seeds=args.eval_seeds, eval_epochs=args.eval_epochs,
            torch_threads=args.torch_threads, distribution_checks=args.distribution_checks,
            progress=args.progress, verbose=args.verbose,
            argv=list(sys.argv), env_version=args.env_version,
        )  # fmt: skip
    except TrainingInterrupted:
        return 130
    print(path)
    return 0
