"""``coel train``: train an SB3 / sb3-contrib agent on a CoEL environment.

  coel train --algo {ppo,a2c,maskable_ppo,dqn} --env ID [--scenario NAME|FILE]
             [--set K=V ...] [--env-config K=V ...] [--timesteps N] [--seed S]
             [--n-envs K] [--vec {dummy,subproc}] [--normalize | --no-normalize]
             [--hyperparams KEY=VALUE ...] [--eval-freq N] [--eval-episodes N]
             [--eval-seeds S ...] [--checkpoint-freq N] [--torch-threads N]
             [--run-dir DIR | --runs-root DIR] [--progress | --no-progress]
  coel train --resume RUN_DIR [--timesteps N]

Algorithms: ``ppo`` and ``a2c`` (stable-baselines3), ``maskable_ppo``
(sb3-contrib MaskablePPO; the masks come from the env's ``action_masks()``,
through ``env_method("action_masks")`` of the vector env) and ``dqn``. DQN
needs a Discrete action space; the CoEL spaces are MultiDiscrete, so a
MultiDiscrete space is flattened into ``Discrete(prod(nvec))`` (the
:class:`FlattenMultiDiscrete` wrapper) only when that product is at most
``DQN_MAX_ACTIONS`` (4096); otherwise ``dqn`` raises a ValueError naming the
space (the registered envs with their default ``n_groups=4`` are all above it;
``--env-config n_groups=2`` brings CoEL-IntraDevice-v0 down to 450 actions).

Environments: ``CoEL-IntraDevice-v0``, ``CoEL-InterDevice-v0``/``-v1`` and
``CoEL-v0``/``-v1`` (also with the ``coel_env/`` prefix). ``--scenario`` replaces the env's
scenario, ``--set K=V`` adds a dotted scenario override (config
``overrides``; V parsed as YAML), ``--env-config K=V`` sets any other env
config key (``n_groups``, reward weights...).

``--imitate POLICY|FILE.npz`` (version-1 envs; not DQN) first clones a
baseline's plans into the policy (:mod:`agents.imitation`), with
``--imitate-episodes``, ``--imitate-epochs`` and ``--imitate-passes``.

Hyperparameters come from ``experiments/hyperparams/<algo>.yml``
(rl-baselines3-zoo style): the entry of the env id, else ``default``; then
``--hyperparams KEY=VALUE`` (VALUE parsed with ``yaml.safe_load``, e.g.
``--hyperparams n_steps=64 'policy_kwargs={net_arch: [32, 32], activation_fn:
tanh}'``). Keys are the algorithm constructor's arguments (an unknown key
raises, listing the valid ones) plus ``n_envs`` and ``normalize`` (``true``:
VecNormalize on observations only; a mapping such as ``{norm_reward: true}``
for VecNormalize's own arguments). ``policy_kwargs.activation_fn`` and
``optimizer_class`` are names from a small allowlist (``tanh``, ``relu``...;
``adam``...), never evaluated code; ``learning_rate``, ``clip_range`` and the
like accept ``lin_<value>`` for a linear decay to 0. ``--n-envs`` and
``--normalize`` win over the files.

Seeds: ``--seed`` seeds Python's ``random``, numpy and torch
(``set_random_seed``), the model and the training envs (env ``i`` gets
``seed + i``). Evaluation runs one episode per ``--eval-seeds`` seed (default
0..4; or 0..N-1 with ``--eval-episodes N``) on a separate env, the same seeds
at every evaluation, every ``--eval-freq`` steps and once at the end; it keeps
``best_model.zip``. With the same seed, algorithm and settings on one
``DummyVecEnv`` (CPU), two runs give identical parameters.

The run folder (never overwritten): ``--run-dir DIR`` (must not exist) or
``<runs-root>/<algo>-<env>-<YYYYmmdd-HHMMSS>-s<seed>`` (default root ``runs``).
It holds ``config.yml`` (the resolved env config with the ``id``),
``args.yml``, ``command.txt`` (the argv, one line per start or resume),
``seed``, ``versions.yml`` (python, numpy, torch, gymnasium, SB3,
sb3-contrib, coel-gym, git commit and dirty flag when available),
``hyperparams.yml`` (resolved), ``model.zip`` (final), ``vecnormalize.pkl``
(with normalisation), ``best_model.zip`` and ``vecnormalize_best.pkl``,
``evaluations.npz`` (EvalCallback's), ``checkpoints/model_<N>_steps.zip`` with
``checkpoints/model_vecnormalize_<N>_steps.pkl`` every ``--checkpoint-freq``
steps, and ``tb/`` (TensorBoard: SB3's scalars plus ``coel/slo_attainment``,
``coel/latency_p95_ms``, ``coel/quality_loss``, ``coel/migration_bytes``,
``coel/energy_j`` and ``coel/invalid_actions``, means over each rollout, and
``coel/episode_*`` means over finished episodes).

Ctrl-C during training saves ``model.zip`` (and the normaliser) and a
checkpoint, prints where, and exits with status 130. ``--resume RUN_DIR``
continues from the last checkpoint of that folder (model and normaliser, the
step count kept, TensorBoard appended, every other option taken from the
run's files) until the run's ``--timesteps`` (from its args.yml, or a new
``--timesteps``, which extends a finished run) is reached. A finished run
also leaves a checkpoint at its last step. DQN's replay buffer is not
checkpointed: a resumed DQN starts with an empty buffer.

Threads: the policies are small MLPs and the env dominates, so torch runs on
``--torch-threads 1`` by default (0: torch's default). More threads also
starve ``--vec subproc`` workers: torch's OpenMP threads spin-wait between
calls, which made a 2-core machine's subprocess evaluation 20x slower.

Python API: :func:`train`, :func:`resume`, :func:`load_policy`,
:func:`check_spaces`, :func:`make_env`.

Safety: model zips and ``.pkl`` normaliser files unpickle Python objects
(SB3's ``load`` reads the weights with ``torch.load(weights_only=True)`` but
other saved data with cloudpickle): load only files you trust.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import inspect
import pickle
import platform
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

#: Algorithm names accepted by ``--algo``.
ALGOS = ("ppo", "a2c", "maskable_ppo", "dqn")
#: DQN flattens a MultiDiscrete space into Discrete only up to this many joint actions.
DQN_MAX_ACTIONS = 4096
#: Hyperparameter keys that are not constructor arguments.
EXTRA_KEYS = ("n_envs", "normalize")
#: Constructor arguments set by ``coel train`` itself, not by hyperparameters.
RESERVED_KEYS = ("self", "env", "tensorboard_log", "verbose", "seed", "_init_setup_model")
#: Folder of the hyperparameter files.
HYPERPARAMS_DIR = Path(__file__).resolve().parents[1] / "experiments" / "hyperparams"
#: Default evaluation seeds.
DEFAULT_EVAL_SEEDS = (0, 1, 2, 3, 4)
#: Metrics read from ``info`` and logged to TensorBoard under ``coel/``.
INFO_METRICS = ("slo_attainment", "latency_p95_ms", "quality_loss", "migration_bytes", "energy_j")
#: Hyperparameters that accept ``lin_<value>`` (a linear schedule to 0).
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")

_CKPT = re.compile(r"^model_(\d+)_steps\.zip$")


def _activations() -> dict[str, Any]:
    from torch import nn

    return {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "sigmoid": nn.Sigmoid,
    }


def _optimizers() -> dict[str, Any]:
    import torch

    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}


@contextlib.contextmanager
def distribution_checks(on: bool = False):
    """torch's distribution argument checks switched ``on`` or off inside (the previous
    setting is restored after, also on errors).

    ``coel train`` and ``coel train-ma`` run with them off unless
    ``--distribution-checks`` is given. ``torch.distributions`` checks every
    distribution's parameters and samples when Python runs without ``-O``
    (``Distribution.set_default_validate_args``). SB3's multi-categorical policies
    build one ``Categorical`` per action field per step (sb3-contrib's masked ones
    twice), so on the CoEL envs' 28-184 fields these checks take a third to a half of
    the learner's time (``experiments/bench_training.py``). They only check: the
    numbers, random draws and so the trained model are the same without them (a test
    trains both ways and compares the weights). Non-finite logits still fail: sampling
    from them raises in ``torch.multinomial``.
    """
    from torch.distributions import Distribution

    before = Distribution._validate_args
    Distribution.set_default_validate_args(bool(on))
    try:
        yield
    finally:
        Distribution.set_default_validate_args(before)


def algo_class(algo: str) -> type:
    """The SB3 / sb3-contrib class of ``algo`` (one of :data:`ALGOS`)."""
    if algo not in ALGOS:
        raise ValueError(f"--algo {algo!r} is not allowed; known: {', '.join(ALGOS)}")
    if algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    import stable_baselines3 as sb3

    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[algo]


def canonical_env_id(env_id: str) -> str:
    """``env_id`` without the ``coel_env/`` or ``coel_env:`` prefix; raises if unknown."""
    import coel_env

    ids = [e[0] for e in coel_env.ENV_IDS]
    name = str(env_id)
    for prefix in (f"{coel_env.NAMESPACE}/", f"{coel_env.NAMESPACE}:"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if name not in ids:
        raise ValueError(f"--env {env_id!r} is not a CoEL environment; known: {', '.join(ids)}")
    return name


# ------------------------------------------------------------------ envs


class FlattenMultiDiscrete(gym.ActionWrapper):
    """``MultiDiscrete(nvec)`` as ``Discrete(prod(nvec))`` (C order), for DQN."""

    def __init__(self, env: gym.Env, max_actions: int = DQN_MAX_ACTIONS) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise ValueError(f"FlattenMultiDiscrete needs a MultiDiscrete space, not {space}")
        self.nvec = np.asarray(space.nvec, dtype=np.int64).ravel()
        n = int(np.prod(self.nvec))
        if n > max_actions:
            raise ValueError(
                f"{space} has {n} joint actions, above the cap of {max_actions} for flattening"
            )
        self.action_space = gym.spaces.Discrete(n)

    def action(self, action) -> np.ndarray:
        return np.asarray(np.unravel_index(int(action), self.nvec), dtype=np.int64)


def _dqn_wrapper_needed(algo: str, space: gym.Space, env_id: str) -> bool:
    if algo != "dqn" or isinstance(space, gym.spaces.Discrete):
        return False
    if isinstance(space, gym.spaces.MultiDiscrete):
        n = int(np.prod(np.asarray(space.nvec, dtype=np.int64)))
        if n <= DQN_MAX_ACTIONS:
            return True
        raise ValueError(
            f"--algo dqn needs a Discrete action space; {env_id} has {space} "
            f"({n} joint actions), above the cap of {DQN_MAX_ACTIONS} (DQN_MAX_ACTIONS) for "
            "flattening it into Discrete; use maskable_ppo, ppo or a2c, or shrink the space "
            "(fewer popularity groups, e.g. --env-config n_groups=2 on CoEL-IntraDevice-v0)"
        )
    raise ValueError(f"--algo dqn needs a Discrete action space; {env_id} has {space}")


def make_env(
    env_id: str, config: Mapping[str, Any] | None = None, algo: str | None = None, **kwargs
) -> gym.Env:
    """``gym.make`` of a CoEL id with ``config``, wrapped as training wraps it for ``algo``
    (DQN: :class:`FlattenMultiDiscrete`). ``config`` may be a run's ``config.yml``
    mapping (its ``id`` key is dropped)."""
    env_id = canonical_env_id(env_id)
    cfg = {k: v for k, v in (config or {}).items() if k != "id"}
    env = gym.make(f"coel_env:{env_id}", config=cfg, **kwargs)
    if algo is not None and _dqn_wrapper_needed(algo, env.action_space, env_id):
        env = FlattenMultiDiscrete(env)
    return env


def _probe_env(env_id: str, config: Mapping[str, Any]) -> tuple[dict[str, Any], gym.Space]:
    """Build one env: its resolved config and action space (bad config raises here)."""
    try:
        env = gym.make(f"coel_env:{env_id}", config=dict(config))
    except FileNotFoundError as exc:
        what = f"{exc.filename!s} does not exist" if exc.filename is not None else str(exc)
        raise ValueError(f"{what} (a path given by --scenario, --set or --env-config)") from None
    try:
        resolved = _plain(dict(env.unwrapped.config))
        return resolved, env.action_space
    finally:
        env.close()


def _make_vec(
    env_id: str,
    config: Mapping[str, Any],
    n_envs: int,
    vec: str,
    seed: int | None,
    algo: str,
    dqn_wrap: bool,
):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    kw: dict[str, Any] = {}
    if vec == "subproc":
        kw = {"vec_env_cls": SubprocVecEnv, "vec_env_kwargs": {"start_method": "spawn"}}
    else:
        kw = {"vec_env_cls": DummyVecEnv}
    return make_vec_env(
        f"coel_env:{env_id}",
        n_envs=n_envs,
        seed=seed,
        env_kwargs={"config": {k: v for k, v in config.items() if k != "id"}},
        wrapper_class=FlattenMultiDiscrete if dqn_wrap else None,
        **kw,
    )


# ------------------------------------------------------------------ hyperparameters


def _valid_keys(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    keys = [
        k
        for k in params
        if k not in RESERVED_KEYS
        and params[k].kind.name != "VAR_KEYWORD"
        and not k.endswith("_class")  # classes cannot be named safely from YAML
    ]
    return sorted({*keys, *EXTRA_KEYS})


def load_hyperparams(algo: str, env_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """The entry of ``env_id`` in ``experiments/hyperparams/<algo>.yml``, else ``default``."""
    algo_class(algo)
    path = Path(path) if path is not None else HYPERPARAMS_DIR / f"{algo}.yml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of env id -> hyperparameters")
    entry = data.get(env_id, data.get("default", {})) or {}
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: the entry for {env_id!r} must be a mapping")
    return dict(entry)


def parse_kv(items: Sequence[str], flag: str = "--hyperparams") -> dict[str, Any]:
    """``["n_steps=64", "policy_kwargs={net_arch: [32]}"]`` -> a dict (values parsed with
    ``yaml.safe_load``, never evaluated)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = str(item).partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"{flag} {item!r} is not allowed; expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            msg = " ".join(str(exc).split())
            raise ValueError(f"{flag} {item!r}: the value is not valid YAML ({msg})") from None
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        out[key] = value
    return out


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_hyperparams(items: Sequence[str]) -> dict[str, Any]:
    """``--hyperparams KEY=VALUE ...`` as a dict."""
    return parse_kv(items, "--hyperparams")


def resolve_hyperparams(
    algo: str, env_id: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """File entry + overrides, checked against the algorithm's constructor (plain data)."""
    cls = algo_class(algo)
    hp = {**load_hyperparams(algo, env_id), **dict(overrides or {})}
    valid = _valid_keys(cls)
    for key in hp:
        if key not in valid:
            raise ValueError(
                f"unknown hyperparameter {key!r} for {algo}; valid: {', '.join(valid)}"
            )
    hp.setdefault("policy", "MlpPolicy")
    hp["n_envs"] = hp.get("n_envs", 1)
    hp["normalize"] = hp.get("normalize", False)
    _model_kwargs(cls, hp)  # validate everything now
    _normalize_kwargs(hp["normalize"])
    return _plain(hp)


def _schedule(key: str, value: Any) -> Any:
    if isinstance(value, str) and key in SCHEDULE_KEYS and value.startswith("lin_"):
        from stable_baselines3.common.utils import LinearSchedule

        try:
            start = float(value[4:])
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected lin_<number>, e.g. lin_3e-4") from None
        return LinearSchedule(start, 0.0, 1.0)
    if isinstance(value, str) and key in SCHEDULE_KEYS:
        raise ValueError(f"{key}={value!r} is not allowed; a number or lin_<number>")
    return value


def _policy_kwargs(cls: type, policy: str, pk: Any) -> dict[str, Any]:
    if pk is None:
        return {}
    if not isinstance(pk, dict):
        raise ValueError(f"policy_kwargs={pk!r} is not allowed; must be a mapping")
    policy_cls = cls.policy_aliases[policy]
    params = inspect.signature(policy_cls.__init__).parameters
    valid = sorted(k for k in params if k not in ("self", "observation_space", "action_space",
                                                   "lr_schedule"))  # fmt: skip
    out = dict(pk)
    for key, value in pk.items():
        if key not in valid:
            raise ValueError(
                f"unknown policy_kwargs key {key!r} for {policy}; valid: {', '.join(valid)}"
            )
        if key == "activation_fn":
            table = _activations()
            name = str(value).lower().removeprefix("torch.").removeprefix("nn.")
            name = {"leakyrelu": "leaky_relu"}.get(name, name)
            if name not in table:
                raise ValueError(
                    f"policy_kwargs.activation_fn={value!r} is not allowed; known: "
                    f"{', '.join(table)}"
                )
            out[key] = table[name]
        elif key == "optimizer_class":
            table = _optimizers()
            name = str(value).lower().removeprefix("torch.optim.")
            if name not in table:
                raise ValueError(
                    f"policy_kwargs.optimizer_class={value!r} is not allowed; known: "
                    f"{', '.join(table)}"
                )
            out[key] = table[name]
        elif key.endswith("_class"):
            raise ValueError(f"policy_kwargs.{key} cannot be set from a name; leave it out")
    return out


def _model_kwargs(cls: type, hp: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor kwargs of ``cls`` from plain hyperparameters."""
    kw = {k: v for k, v in hp.items() if k not in EXTRA_KEYS}
    policy = kw.get("policy", "MlpPolicy")
    if policy not in cls.policy_aliases:
        raise ValueError(
            f"policy={policy!r} is not allowed; known: {', '.join(sorted(cls.policy_aliases))}"
        )
    kw["policy_kwargs"] = _policy_kwargs(cls, policy, kw.get("policy_kwargs"))
    for key in list(kw):
        kw[key] = _schedule(key, kw[key])
    return kw


def _normalize_kwargs(value: Any) -> dict[str, Any] | None:
    """VecNormalize kwargs from the ``normalize`` hyperparameter (None: no normalisation)."""
    if value is None or value is False:
        return None
    if value is True:
        return {"norm_obs": True, "norm_reward": False}
    if isinstance(value, dict):
        from stable_baselines3.common.vec_env import VecNormalize

        params = inspect.signature(VecNormalize.__init__).parameters
        valid = sorted(k for k in params if k not in ("self", "venv", "training"))
        for key in value:
            if key not in valid:
                raise ValueError(f"unknown normalize key {key!r}; valid: {', '.join(valid)}")
        return {"norm_obs": True, "norm_reward": False, **value}
    raise ValueError(f"normalize={value!r} is not allowed; true, false or a mapping")


# ------------------------------------------------------------------ callbacks


def _callbacks_module():
    """Callback classes, defined lazily so that importing this module stays light."""
    global _CB
    if _CB is not None:
        return _CB
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class CoELMetricsCallback(BaseCallback):
        """Logs the env's ``info`` metrics: rollout means and finished-episode means."""

        def _on_training_start(self) -> None:
            n = self.training_env.num_envs
            self._ep_sums = [dict.fromkeys((*INFO_METRICS, "invalid_actions"), 0.0)
                             for _ in range(n)]  # fmt: skip
            self._ep_len = [0] * n
            self._reset()

        def _reset(self) -> None:
            self._sums = dict.fromkeys((*INFO_METRICS, "invalid_actions"), 0.0)
            self._counts = dict.fromkeys(self._sums, 0)

        def _on_rollout_start(self) -> None:
            self._reset()

        def _on_step(self) -> bool:
            infos = self.locals.get("infos") or []
            dones = self.locals.get("dones")
            for i, info in enumerate(infos):
                values = {k: info[k] for k in INFO_METRICS if k in info}
                if "invalid_action" in info:
                    values["invalid_actions"] = float(bool(info["invalid_action"]))
                for k, v in values.items():
                    self._sums[k] += float(v)
                    self._counts[k] += 1
                    self._ep_sums[i][k] += float(v)
                self._ep_len[i] += 1
                if dones is not None and bool(dones[i]):
                    for k, v in self._ep_sums[i].items():
                        if self._ep_len[i]:
                            self.logger.record_mean(f"coel/episode_{k}", v / self._ep_len[i])
                    self._ep_sums[i] = dict.fromkeys(self._ep_sums[i], 0.0)
                    self._ep_len[i] = 0
            return True

        def _on_rollout_end(self) -> None:
            for k, total in self._sums.items():
                if self._counts[k]:
                    self.logger.record(f"coel/{k}", total / self._counts[k])

    class TqdmCallback(BaseCallback):
        """A tqdm progress bar over the timesteps (SB3's needs rich)."""

        def _on_training_start(self) -> None:
            from tqdm.auto import tqdm

            total = int(self.locals["total_timesteps"])
            self.bar = tqdm(
                total=total, initial=self.model.num_timesteps, unit="step", file=sys.stderr
            )

        def _on_step(self) -> bool:
            self.bar.update(self.model.num_timesteps - self.bar.n)
            return True

        def _on_training_end(self) -> None:
            self.bar.update(self.model.num_timesteps - self.bar.n)
            self.bar.close()

    def _due(cb, every: int) -> bool:
        """True when the step count crossed a multiple of ``every`` (steps, not calls)."""
        n = cb.model.num_timesteps
        if n >= cb._next_due:
            cb._next_due = (n // every + 1) * every
            return True
        return False

    class StepCheckpointCallback(CheckpointCallback):
        """CheckpointCallback every ``every`` timesteps (aligned across resumes)."""

        def __init__(self, every: int, **kwargs) -> None:
            super().__init__(save_freq=1, **kwargs)
            self.every = every

        def _init_callback(self) -> None:
            super()._init_callback()
            self._next_due = (self.model.num_timesteps // self.every + 1) * self.every

        def _on_step(self) -> bool:
            return super()._on_step() if _due(self, self.every) else True

    class SaveVecNormalizeOnBest(BaseCallback):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

        def _on_step(self) -> bool:
            vn = self.model.get_vec_normalize_env()
            if vn is not None:
                vn.save(str(self.path))
            return True

    def seeded_eval(base: type) -> type:
        class SeededEval(base):
            """Evaluates on fixed seeds every ``every`` steps and once at the end; keeps the
            history of a resumed run's ``evaluations.npz``."""

            def __init__(
                self, *args, every: int, seeds: Sequence[int], at_start: bool = False, **kwargs
            ) -> None:
                super().__init__(*args, eval_freq=1, **kwargs)
                self.every = every
                self.seeds = [int(s) for s in seeds]
                self.at_start = at_start  # also before the first step (a cloned policy)
                self._last_eval = None

            def _on_training_start(self) -> None:
                super()._on_training_start()
                if self.at_start:
                    self.num_timesteps = self.model.num_timesteps
                    self._evaluate()

            def _init_callback(self) -> None:
                super()._init_callback()
                self._next_due = (self.model.num_timesteps // self.every + 1) * self.every
                old = Path(self.log_path + ".npz") if self.log_path else None
                if old is not None and old.is_file():
                    with np.load(old) as d:
                        self.evaluations_timesteps = [int(t) for t in d["timesteps"]]
                        self.evaluations_results = [list(r) for r in d["results"]]
                        self.evaluations_length = [list(r) for r in d["ep_lengths"]]
                    if self.evaluations_results:
                        means = [float(np.mean(r)) for r in self.evaluations_results]
                        self.best_mean_reward = max(means)

            def _evaluate(self) -> bool:
                venv = self.eval_env
                while isinstance(venv, VecEnvWrapper):
                    venv = venv.venv
                venv._seeds = list(self.seeds)
                self._last_eval = self.model.num_timesteps
                return super()._on_step()

            def _on_step(self) -> bool:
                return self._evaluate() if _due(self, self.every) else True

            def _on_training_end(self) -> None:
                self.num_timesteps = self.model.num_timesteps
                if self._last_eval != self.model.num_timesteps:
                    self._evaluate()
                super()._on_training_end()

        return SeededEval

    class _NS:
        pass

    ns = _NS()
    ns.CoELMetricsCallback = CoELMetricsCallback
    ns.TqdmCallback = TqdmCallback
    ns.StepCheckpointCallback = StepCheckpointCallback
    ns.SaveVecNormalizeOnBest = SaveVecNormalizeOnBest
    ns.seeded_eval = seeded_eval
    _CB = ns
    return ns


_CB = None


# ------------------------------------------------------------------ run folder


def _plain(x: Any) -> Any:
    """YAML-safe plain data (numpy scalars and arrays, tuples and paths converted)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def _write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(_plain(data), sort_keys=False), encoding="utf-8")


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path} could not be read ({exc})") from None


def versions() -> dict[str, Any]:
    """Versions of Python, the libraries and the repository (git commit, dirty flag)."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "coel-gym"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    root = Path(__file__).resolve().parents[1]
    out["git_commit"] = None
    out["git_dirty"] = None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        out["git_commit"] = head.stdout.strip() or None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        out["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _new_run_dir(run_dir: str | Path | None, runs_root: str | Path, name: str) -> Path:
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists():
            raise ValueError(
                f"--run-dir {str(path)!r} already exists; runs are never overwritten "
                "(choose a new folder, or --resume it)"
            )
        path.mkdir(parents=True)
        return path
    root = Path(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        path = root / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ValueError(f"could not create a new run folder under {str(root)!r}")


def _command_line(argv: Sequence[str] | None, what: str, kwargs: Mapping[str, Any]) -> str:
    if argv is not None:
        return shlex.join(str(a) for a in argv)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"python API: agents.train.{what}({args})"


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(steps, path)`` of the run's checkpoints, in step order."""
    folder = Path(run_dir) / "checkpoints"
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CKPT.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
    return sorted(out)


def _vecnormalize_for(model_path: Path) -> Path:
    name = model_path.name
    m = _CKPT.match(name)
    if m:
        return model_path.with_name(f"model_vecnormalize_{m.group(1)}_steps.pkl")
    if name == "best_model.zip":
        return model_path.with_name("vecnormalize_best.pkl")
    return model_path.with_name("vecnormalize.pkl")


# ------------------------------------------------------------------ training


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the model and a checkpoint were saved."""

    def __init__(self, run_dir: Path, steps: int) -> None:
        super().__init__(f"training interrupted at {steps} steps; saved in {run_dir}")
        self.run_dir = run_dir
        self.steps = steps


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} {value!r} is not allowed; must be an integer >= {minimum}")
    return int(value)


def _eval_seeds(eval_episodes: int | None, eval_seeds: Sequence[int] | None) -> list[int]:
    if eval_seeds is not None:
        seeds = [_check_int("--eval-seeds", s, 0) for s in eval_seeds]
        if not seeds:
            raise ValueError("--eval-seeds needs at least one seed")
        if eval_episodes is not None and eval_episodes != len(seeds):
            raise ValueError(
                f"--eval-episodes {eval_episodes} does not match the {len(seeds)} --eval-seeds "
                "(one episode per seed)"
            )
        return seeds
    if eval_episodes is None:
        return list(DEFAULT_EVAL_SEEDS)
    return list(range(_check_int("--eval-episodes", eval_episodes, 1)))


def train(
    algo: str,
    env_id: str,
    *,
    timesteps: int,
    seed: int = 0,
    run_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    scenario: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_config: Mapping[str, Any] | None = None,
    n_envs: int | None = None,
    vec: str = "dummy",
    normalize: bool | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    eval_freq: int = 10_000,
    eval_episodes: int | None = None,
    eval_seeds: Sequence[int] | None = None,
    checkpoint_freq: int = 10_000,
    torch_threads: int = 1,
    distribution_checks: bool = False,
    progress: bool = False,
    verbose: int = 0,
    callbacks: Sequence[Any] | None = None,
    argv: Sequence[str] | None = None,
    imitate: str | None = None,
    imitate_episodes: int = 8,
    imitate_epochs: int = 50,
    imitate_passes: int = 20,
    imitate_rounds: int = 0,
    imitate_demos: str | Path | None = None,
) -> Path:
    """Train ``algo`` on ``env_id`` into a new run folder and return it.

    ``imitate`` names a policy whose plans are cloned before RL
    (:mod:`agents.imitation`: ``imitate_episodes`` episodes of ``imitate_epochs``
    epochs, ``imitate_passes`` passes).

    ``overrides`` are dotted scenario overrides, ``env_config`` other env config
    keys, ``hyperparams`` override the file's entry (plain values, as parsed
    from YAML). ``eval_freq`` / ``checkpoint_freq`` are in timesteps (0: off).
    ``callbacks`` are extra SB3 callbacks. ``distribution_checks`` turns torch's
    distribution argument checks on (see :func:`distribution_checks`; slower, the
    same model). Ctrl-C raises
    :class:`TrainingInterrupted` after saving. See the module docstring.
    """
    cls = algo_class(algo)
    env_id = canonical_env_id(env_id)
    timesteps = _check_int("--timesteps", timesteps, 1)
    seed = _check_int("--seed", seed, 0)
    if vec not in ("dummy", "subproc"):
        raise ValueError(f"--vec {vec!r} is not allowed; known: dummy, subproc")
    eval_freq = _check_int("--eval-freq", eval_freq, 0)
    checkpoint_freq = _check_int("--checkpoint-freq", checkpoint_freq, 0)
    torch_threads = _check_int("--torch-threads", torch_threads, 0)
    seeds = _eval_seeds(eval_episodes, eval_seeds)
    if imitate is not None:
        from agents.imitation import _check_expert

        if algo == "dqn":
            raise ValueError("--imitate is not available with --algo dqn (no policy network "
                             "to clone into); use maskable_ppo, ppo or a2c")  # fmt: skip
        _check_expert(str(imitate))
        imitate_episodes = _check_int("--imitate-episodes", imitate_episodes, 1)
        imitate_epochs = _check_int("--imitate-epochs", imitate_epochs, 1)
        imitate_passes = _check_int("--imitate-passes", imitate_passes, 1)
        imitate_rounds = _check_int("--imitate-rounds", imitate_rounds, 0)
        if imitate_rounds and str(imitate).endswith(".npz"):
            raise ValueError("--imitate-rounds needs an expert policy to label states, not a file")
        if imitate_demos is not None:
            if str(imitate).endswith(".npz"):
                raise ValueError("--imitate-demos goes with an expert policy, not a file")
            _check_expert(str(imitate_demos))
    hp = resolve_hyperparams(algo, env_id, hyperparams)
    if n_envs is not None:
        hp["n_envs"] = n_envs
    if normalize is not None:
        hp["normalize"] = bool(normalize)
    hp["n_envs"] = _check_int("--n-envs", hp["n_envs"], 1)
    _normalize_kwargs(hp["normalize"])

    config: dict[str, Any] = dict(env_config or {})
    if "id" in config:
        raise ValueError("env config key 'id' is not allowed; use --env")
    if scenario is not None:
        config["scenario"] = str(scenario)
    if overrides:
        config["overrides"] = {**config.get("overrides", {}), **dict(overrides)}
    resolved, action_space = _probe_env(env_id, config)
    _dqn_wrapper_needed(algo, action_space, env_id)  # raises where DQN cannot run
    if imitate is not None:
        _check_encodable(env_id, config, str(imitate))
        if imitate_demos is not None:
            _check_encodable(env_id, config, str(imitate_demos))

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = _new_run_dir(run_dir, runs_root, f"{algo}-{env_id}-{stamp}-s{seed}")
    args = {
        "algo": algo,
        "env": env_id,
        "timesteps": timesteps,
        "seed": seed,
        "n_envs": hp["n_envs"],
        "vec": vec,
        "normalize": hp["normalize"],
        "scenario": scenario,
        "overrides": dict(overrides or {}),
        "env_config": dict(env_config or {}),
        "hyperparams": dict(hyperparams or {}),
        "eval_freq": eval_freq,
        "eval_seeds": seeds,
        "checkpoint_freq": checkpoint_freq,
        "torch_threads": torch_threads,
        "distribution_checks": bool(distribution_checks),
        "run_dir": str(path),
        "progress": bool(progress),
        "imitate": None
        if imitate is None
        else {
            "expert": str(imitate),
            "episodes": imitate_episodes,
            "epochs": imitate_epochs,
            "passes": imitate_passes,
            "rounds": imitate_rounds,
            "demos": None if imitate_demos is None else str(imitate_demos),
        },
    }
    call = {"algo": algo, "env_id": env_id, "timesteps": timesteps, "seed": seed}
    (path / "command.txt").write_text(_command_line(argv, "train", call) + "\n", encoding="utf-8")
    _write_yaml(path / "args.yml", args)
    _write_yaml(path / "config.yml", {"id": env_id, **resolved})
    _write_yaml(path / "hyperparams.yml", hp)
    _write_yaml(path / "versions.yml", versions())
    (path / "seed").write_text(f"{seed}\n", encoding="utf-8")
    return _run(cls, path, args, hp, resolved, start=None, progress=progress, verbose=verbose,
                callbacks=callbacks)  # fmt: skip


def _check_encodable(env_id: str, config: Mapping[str, Any], imitate: str) -> None:
    from agents.imitation import Demonstrations, require_encoding

    env = gym.make(f"coel_env:{env_id}", config=dict(config))
    try:
        require_encoding(env_id, env.unwrapped)
        if str(imitate).endswith(".npz"):  # checked before the run folder exists
            Demonstrations.load(imitate, int(env.observation_space.shape[0]), env.action_space.nvec)
    finally:
        env.close()


def _imitate(model, path: Path, args: Mapping[str, Any], config, progress: bool) -> None:
    """Clone the expert's plans into ``model`` before RL (:mod:`agents.imitation`)."""
    from agents import imitation

    spec = args["imitate"]
    start_file = spec["expert"] if spec["expert"].endswith(".npz") else spec.get("demos")
    if start_file:
        space = model.observation_space
        demos = imitation.Demonstrations.load(
            start_file, int(space.shape[0]), np.asarray(model.action_space.nvec)
        )
    else:
        demos = imitation.collect(
            args["env"],
            config,
            spec["expert"],
            episodes=int(spec["episodes"]),
            epochs=int(spec["epochs"]),
            gamma=float(getattr(model, "gamma", 0.99)),
            progress=progress,
        )
    env = make_env(args["env"], config)
    try:
        fields = env.unwrapped.action_type.fields()
        per_model = len(fields)
        has_update = hasattr(env.unwrapped.action_type, "REDEPLOY")  # [update] leads
    finally:
        env.close()
    n_fields = int(np.asarray(model.action_space.nvec).size)
    updates = list(range(0, n_fields, per_model)) if has_update else []
    stats = imitation.clone(
        model, demos, passes=int(spec["passes"]), seed=int(args["seed"]), update_fields=updates
    )
    rounds = int(spec.get("rounds", 0) or 0)
    masked = type(model).__name__.startswith("Maskable")

    def actor(obs, mask):
        kw = {"action_masks": mask} if masked else {}
        x = obs
        vn = model.get_vec_normalize_env()
        if vn is not None:
            x = vn.normalize_obs(obs[None])[0]
        return model.predict(x, deterministic=True, **kw)[0]

    clone_returns: list[float] = []
    for r in range(rounds):
        more = imitation.collect(
            args["env"], config, spec["expert"], episodes=int(spec["episodes"]),
            epochs=int(spec["epochs"]), gamma=float(getattr(model, "gamma", 0.99)),
            progress=progress, actor=actor,
            seed0=imitation.DEMO_SEED0 + (r + 1) * int(spec["episodes"]),
        )  # fmt: skip
        demos = imitation.concatenate([demos, more])
        stats = imitation.clone(model, demos, passes=int(spec["passes"]),
                                seed=int(args["seed"]) + r + 1, update_fields=updates)  # fmt: skip
        clone_returns.append(float(np.mean(more.episode_returns)))
    demos.save(path / "demonstrations.npz")
    if spec["expert"].endswith(".npz"):  # what the file holds, not the unused defaults
        spec = {**spec, "episodes": len(demos.episode_returns), "epochs": None}
    rec = {**spec, **stats}
    if rounds:
        rec["dagger_clone_return_mean"] = clone_returns  # the clone's episodes, per round
    _write_yaml(path / "imitation.yml", rec)


def resume(
    run_dir: str | Path,
    *,
    timesteps: int | None = None,
    progress: bool = False,
    verbose: int = 0,
    callbacks: Sequence[Any] | None = None,
    argv: Sequence[str] | None = None,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint up to its total timesteps
    (``timesteps`` replaces the recorded total when given)."""
    path = Path(run_dir)
    if not (path / "args.yml").is_file():
        raise ValueError(f"--resume {str(path)!r} is not a run folder of coel train (no args.yml)")
    args = _read_yaml(path / "args.yml")
    hp = _read_yaml(path / "hyperparams.yml") if (path / "hyperparams.yml").is_file() else None
    cfg = _read_yaml(path / "config.yml") if (path / "config.yml").is_file() else None
    if not isinstance(args, dict) or not isinstance(hp, dict) or not isinstance(cfg, dict):
        raise ValueError(
            f"--resume {str(path)!r} is not a complete run folder "
            "(args.yml, hyperparams.yml and config.yml are needed)"
        )
    ckpts = checkpoints(path)
    if not ckpts:
        raise ValueError(
            f"--resume {str(path)!r} has no checkpoint (checkpoints/model_<N>_steps.zip); "
            "nothing to resume from"
        )
    cls = algo_class(args["algo"])
    if timesteps is not None:
        args["timesteps"] = _check_int("--timesteps", timesteps, 1)
        _write_yaml(path / "args.yml", args)
    call = {"run_dir": str(path), "timesteps": timesteps}
    with (path / "command.txt").open("a", encoding="utf-8") as f:
        f.write(_command_line(argv, "resume", call) + "\n")
    steps, ckpt = ckpts[-1]
    final = _zip_num_timesteps(path / "model.zip") if (path / "model.zip").is_file() else None
    if final is not None and final >= int(args["timesteps"]) and final >= steps:
        print(f"{path}: already at {final} of {args['timesteps']} steps; nothing to do",
              file=sys.stderr)  # fmt: skip
        return path
    config = {k: v for k, v in cfg.items() if k != "id"}
    return _run(cls, path, args, hp, config, start=(steps, ckpt), progress=progress,
                verbose=verbose, callbacks=callbacks)  # fmt: skip


def _load_model(cls: type, path: Path, **kwargs):
    try:
        return cls.load(str(path), **kwargs)
    except ValueError as exc:
        if "space" in str(exc).lower():
            raise ValueError(f"model file {path}: {exc}") from None
        raise ValueError(f"model file {path} could not be loaded ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - corrupt zip, missing member, unpickling error
        raise ValueError(
            f"model file {path} could not be loaded ({type(exc).__name__}: {exc}); "
            f"is it a {cls.__name__} zip saved by coel train?"
        ) from None


def _load_vecnormalize(path: Path, venv=None):
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        if venv is not None:
            return VecNormalize.load(str(path), venv)
        with path.open("rb") as f:
            vn = pickle.load(f)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"normaliser file {path} could not be loaded ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(vn, VecNormalize):
        raise ValueError(f"normaliser file {path} does not hold VecNormalize statistics")
    return vn


def _run(cls: type, path: Path, args: Mapping[str, Any], *rest, **kwargs) -> Path:
    """:func:`_train_loop`, without torch's distribution checks unless the run asks for
    them (``distribution_checks`` in its args; runs made before the flag: off)."""
    with distribution_checks(args.get("distribution_checks", False)):
        return _train_loop(cls, path, args, *rest, **kwargs)


def _train_loop(
    cls: type,
    path: Path,
    args: Mapping[str, Any],
    hp: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    start: tuple[int, Path] | None,
    progress: bool,
    verbose: int,
    callbacks: Sequence[Any] | None,
) -> Path:
    import torch
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecNormalize

    cb = _callbacks_module()
    algo, env_id = args["algo"], args["env"]
    n_envs, vec, total = int(args["n_envs"]), args["vec"], int(args["timesteps"])
    norm = _normalize_kwargs(hp.get("normalize", False))
    dqn_wrap = _dqn_wrapper_needed(algo, _probe_env(env_id, config)[1], env_id)
    # A resumed run draws fresh episodes: its seed is shifted by the steps done.
    seed = int(args["seed"]) + (start[0] if start else 0)
    threads = int(args.get("torch_threads", 1))
    threads_before = torch.get_num_threads()
    venv = eval_venv = None
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        set_random_seed(seed)
        venv = _make_vec(env_id, config, n_envs, vec, seed, algo, dqn_wrap)
        if start is None:
            if norm is not None:
                venv = VecNormalize(venv, **norm)
            kwargs = _model_kwargs(cls, hp)
            kwargs.setdefault("device", "cpu")
            model = cls(env=venv, seed=seed, verbose=verbose, tensorboard_log=str(path / "tb"),
                        **kwargs)  # fmt: skip
            if args.get("imitate"):
                _imitate(model, path, args, config, progress)
        else:
            steps, ckpt = start
            if norm is not None:
                pkl = _vecnormalize_for(ckpt)
                if not pkl.is_file():
                    raise ValueError(
                        f"--resume: the normaliser {pkl} of checkpoint {ckpt} is missing"
                    )
                venv = _load_vecnormalize(pkl, venv)
                venv.training = True
            device = hp.get("device", "cpu")
            model = _load_model(cls, ckpt, env=venv, device=device)
            model.tensorboard_log = str(path / "tb")
            model.verbose = verbose
            model.set_random_seed(seed)
        done = model.num_timesteps
        if done >= total:
            print(f"{path}: already at {done} of {total} steps; nothing to do", file=sys.stderr)
            return path

        cbs: list[Any] = [cb.CoELMetricsCallback()]
        if int(args["checkpoint_freq"]) > 0:
            cbs.append(
                cb.StepCheckpointCallback(
                    int(args["checkpoint_freq"]),
                    save_path=str(path / "checkpoints"),
                    name_prefix="model",
                    save_vecnormalize=True,
                )
            )
        if int(args["eval_freq"]) > 0:
            seeds = list(args["eval_seeds"])
            eval_venv = _make_vec(env_id, config, len(seeds), vec, None, algo, dqn_wrap)
            if norm is not None:
                eval_venv = VecNormalize(
                    eval_venv, training=False, **{**norm, "norm_reward": False}
                )
            if algo == "maskable_ppo":
                from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback as Eval
            else:
                from stable_baselines3.common.callbacks import EvalCallback as Eval
            cbs.append(
                cb.seeded_eval(Eval)(
                    eval_venv,
                    every=int(args["eval_freq"]),
                    seeds=seeds,
                    n_eval_episodes=len(seeds),
                    log_path=str(path),
                    best_model_save_path=str(path),
                    callback_on_new_best=cb.SaveVecNormalizeOnBest(path / "vecnormalize_best.pkl"),
                    deterministic=True,
                    verbose=verbose,
                    warn=False,
                    at_start=start is None and bool(args.get("imitate")),
                )
            )
        if progress:
            cbs.append(cb.TqdmCallback())
        cbs.extend(callbacks or [])
        try:
            model.learn(
                total_timesteps=total - done,
                callback=CallbackList(cbs),
                tb_log_name="run",
                reset_num_timesteps=start is None,
            )
        except KeyboardInterrupt:
            for c in cbs:
                if isinstance(c, cb.TqdmCallback) and hasattr(c, "bar"):
                    c.bar.close()
            steps = model.num_timesteps
            ckpt = _save_checkpoint(model, path)
            _save_final(model, path)
            print(
                f"\ninterrupted at {steps} of {total} steps; saved {path / 'model.zip'} and "
                f"{ckpt}; continue with: coel train --resume {shlex.quote(str(path))}",
                file=sys.stderr,
            )
            raise TrainingInterrupted(path, steps) from None
        _save_checkpoint(model, path)  # so that --resume --timesteps M extends the run
        _save_final(model, path)
        return path
    finally:
        torch.set_num_threads(threads_before)
        for env in (venv, eval_venv):
            if env is not None:
                try:
                    env.close()
                except Exception:  # noqa: BLE001 - dead subprocess workers after Ctrl-C
                    pass


def _save_checkpoint(model, path: Path) -> Path:
    ckpt = path / "checkpoints" / f"model_{model.num_timesteps}_steps.zip"
    ckpt.parent.mkdir(exist_ok=True)
    model.save(str(ckpt))
    vn = model.get_vec_normalize_env()
    if vn is not None:
        vn.save(str(_vecnormalize_for(ckpt)))
    return ckpt


def _save_final(model, path: Path) -> None:
    model.save(str(path / "model.zip"))
    vn = model.get_vec_normalize_env()
    if vn is not None:
        vn.save(str(path / "vecnormalize.pkl"))


# ------------------------------------------------------------------ loading


def _zip_data(path: Path) -> dict[str, Any]:
    """The JSON ``data`` member of an SB3 zip (plain JSON: nothing is unpickled)."""
    import json

    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"model file {path} is not a model zip saved by SB3 ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"model file {path} is not a model zip saved by SB3")
    return data


def _zip_num_timesteps(path: Path) -> int | None:
    try:
        return int(_zip_data(path).get("num_timesteps"))
    except (ValueError, TypeError):
        return None


def _zip_policy_module(path: Path) -> str:
    """The module of the policy class recorded in an SB3 zip ('' when unknown)."""
    pc = _zip_data(path).get("policy_class", {})
    return str(pc.get("__module__", "")) if isinstance(pc, dict) else ""


def _guess_algo(path: Path) -> str:
    module = _zip_policy_module(path)
    if "maskable" in module:
        return "maskable_ppo"
    if "dqn" in module:
        return "dqn"
    return "ppo"  # ActorCriticPolicy: PPO and A2C policies predict alike


def check_spaces(model: Any, env: Any) -> None:
    """Raise ValueError unless ``model``'s observation and action spaces match ``env``'s
    (a gym.Env or a VecEnv)."""
    pairs = (
        ("observation", model.observation_space, env.observation_space),
        ("action", model.action_space, env.action_space),
    )
    for what, mine, theirs in pairs:
        same = type(mine) is type(theirs)
        if same and isinstance(mine, gym.spaces.Box):
            same = (
                mine.shape == theirs.shape
                and mine.dtype == theirs.dtype
                and np.array_equal(mine.low, theirs.low)
                and np.array_equal(mine.high, theirs.high)
            )
        elif same and isinstance(mine, gym.spaces.MultiDiscrete):
            same = np.array_equal(mine.nvec, theirs.nvec)
        elif same and isinstance(mine, gym.spaces.Discrete):
            same = mine.n == theirs.n and mine.start == theirs.start
        elif same:
            same = mine == theirs
        if not same:
            raise ValueError(
                f"the policy's {what} space {mine} does not match the env's {theirs} "
                "(trained on another env, scenario or config?)"
            )


def load_policy(
    run_dir_or_zip: str | Path,
    env: Any = None,
    *,
    best: bool = False,
    algo: str | None = None,
    device: str = "cpu",
) -> tuple[Any, Any, dict[str, Any]]:
    """Load a trained model: ``(model, vecnormalize or None, meta)``.

    ``run_dir_or_zip``: a run folder (its ``model.zip``, or ``best_model.zip``
    with ``best=True`` or when there is no final model) or a model zip (a run's
    model, best model or checkpoint). The normaliser stats beside it are loaded
    with ``training=False`` and ``norm_reward=False``; use
    ``vecnormalize.normalize_obs(obs)``. With ``env`` (a gym.Env or VecEnv) the
    spaces are checked (:func:`check_spaces`), and a VecEnv is attached to the
    normaliser. ``meta``: ``model_path``, ``vecnormalize_path``, ``run_dir``,
    ``algo``, ``env_id``, ``config``, ``hyperparams``, ``args``,
    ``num_timesteps``. Loading unpickles data: trusted files only.
    """
    from stable_baselines3.common.vec_env import VecEnv

    p = Path(run_dir_or_zip)
    if p.is_dir():
        names = ("best_model.zip", "model.zip") if best else ("model.zip", "best_model.zip")
        found = [p / n for n in names if (p / n).is_file()]
        if not found:
            have = sorted(x.name for x in p.iterdir())[:20]
            raise ValueError(
                f"{str(p)!r} has no model.zip or best_model.zip (it has: {', '.join(have)})"
            )
        zip_path, run = found[0], p
    elif p.is_file():
        zip_path = p
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    else:
        raise ValueError(f"{str(p)!r} does not exist (expected a run folder or a model zip)")
    meta: dict[str, Any] = {"model_path": zip_path, "run_dir": None, "args": None,
                            "config": None, "hyperparams": None, "env_id": None}  # fmt: skip
    if (run / "args.yml").is_file():
        meta["run_dir"] = run
        meta["args"] = _read_yaml(run / "args.yml")
        if (run / "config.yml").is_file():
            meta["config"] = _read_yaml(run / "config.yml")
        if (run / "hyperparams.yml").is_file():
            meta["hyperparams"] = _read_yaml(run / "hyperparams.yml")
    args = meta["args"] if isinstance(meta["args"], dict) else {}
    meta["env_id"] = args.get("env")
    algo = algo or args.get("algo") or _guess_algo(zip_path)
    cls = algo_class(algo)
    meta["algo"] = algo
    _zip_policy_module(zip_path)  # a clear error for a file that is not a zip at all
    model = _load_model(cls, zip_path, device=device)
    meta["num_timesteps"] = int(model.num_timesteps)
    if env is not None:
        check_spaces(model, env)
    vn_path = _vecnormalize_for(zip_path)
    vn = None
    if vn_path.is_file():
        vn = _load_vecnormalize(vn_path)
        vn.training = False
        vn.norm_reward = False
        if isinstance(env, VecEnv):
            vn.set_venv(env)
    meta["vecnormalize_path"] = vn_path if vn is not None else None
    return model, vn, meta


# ------------------------------------------------------------------ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", choices=ALGOS, default=None, help="the algorithm")
    p.add_argument("--env", default=None, metavar="ID", help="CoEL environment id")
    p.add_argument("--scenario", default=None, metavar="NAME|FILE", help="the env's scenario")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted scenario override (repeatable; VALUE as YAML)")  # fmt: skip
    p.add_argument("--env-config", action="append", default=[], metavar="KEY=VALUE",
                   help="other env config key, e.g. n_groups=2 (repeatable)")  # fmt: skip
    p.add_argument("--timesteps", type=int, default=None, help="total timesteps (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: file, 1)")
    p.add_argument("--vec", choices=("dummy", "subproc"), default="dummy")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="VecNormalize observations (default: the hyperparameter file)")  # fmt: skip
    p.add_argument("--hyperparams", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="hyperparameter overrides (VALUE as YAML)")  # fmt: skip
    p.add_argument("--eval-freq", type=int, default=10_000, help="timesteps; 0: no evaluation")
    p.add_argument("--eval-episodes", type=int, default=None, help="seeds 0..N-1 (default 5)")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=None, metavar="S")
    p.add_argument("--checkpoint-freq", type=int, default=10_000, help="timesteps; 0: none")
    p.add_argument("--torch-threads", type=int, default=1, help="0: torch's default")
    p.add_argument("--distribution-checks", action="store_true",
                   help="turn torch's distribution checks on (slower; the same model)")  # fmt: skip
    p.add_argument("--imitate", default=None, metavar="POLICY",
                   help="clone this policy's plans before RL (version-1 envs), e.g. "
                        "milp-oracle or greedy")  # fmt: skip
    p.add_argument("--imitate-episodes", type=int, default=8, help="demonstration episodes")
    p.add_argument("--imitate-epochs", type=int, default=50, help="epochs per demonstration")
    p.add_argument("--imitate-passes", type=int, default=20, help="cloning passes over them")
    p.add_argument("--imitate-rounds", type=int, default=0,
                   help="DAgger rounds: the clone acts, the expert labels")  # fmt: skip
    p.add_argument(
        "--imitate-demos",
        default=None,
        metavar="FILE.npz",
        help="start from these demonstrations instead of the expert's episodes",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-dir", default=None, help="new run folder (must not exist)")
    where.add_argument("--runs-root", default="runs", help="parent of run folders")
    where.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar on stderr")  # fmt: skip
    p.add_argument("-v", "--verbose", action="count", default=0, help="SB3 log output")


def main(args: argparse.Namespace) -> int:
    argv = list(sys.argv)
    try:
        if args.resume is not None:
            path = resume(args.resume, timesteps=args.timesteps, progress=args.progress,
                          verbose=args.verbose, argv=argv)  # fmt: skip
        else:
            if args.algo is None or args.env is None:
                raise ValueError("--algo and --env are required (or --resume RUN_DIR)")
            path = train(
                args.algo,
                args.env,
                timesteps=args.timesteps if args.timesteps is not None else 100_000,
                seed=args.seed,
                run_dir=args.run_dir,
                runs_root=args.runs_root,
                scenario=args.scenario,
                overrides=parse_kv(args.overrides, "--set"),
                env_config=parse_kv(args.env_config, "--env-config"),
                n_envs=args.n_envs,
                vec=args.vec,
                normalize=args.normalize,
                hyperparams=parse_hyperparams(args.hyperparams),
                eval_freq=args.eval_freq,
                eval_episodes=args.eval_episodes,
                eval_seeds=args.eval_seeds,
                checkpoint_freq=args.checkpoint_freq,
                torch_threads=args.torch_threads,
                distribution_checks=args.distribution_checks,
                progress=args.progress,
                verbose=args.verbose,
                argv=argv,
                imitate=args.imitate,
                imitate_episodes=args.imitate_episodes,
                imitate_epochs=args.imitate_epochs,
                imitate_passes=args.imitate_passes,
                imitate_rounds=args.imitate_rounds,
                imitate_demos=args.imitate_demos,
            )
    except TrainingInterrupted:
        return 130
    print(path)
    return 0
