"""Algorithms and hyperparameters of ``coel train``.

The algorithm classes, the hyperparameter files and ``--hyperparams`` parsing,
their validation against the constructors, and the allowlists of activation
and optimizer names (never evaluated code).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from agents.train.runs import _plain

#: Algorithm names accepted by ``--algo``.
ALGOS = ("ppo", "a2c", "maskable_ppo", "dqn")
#: Hyperparameter keys that are not constructor arguments.
EXTRA_KEYS = ("n_envs", "normalize")
#: Constructor arguments set by ``coel train`` itself, not by hyperparameters.
RESERVED_KEYS = ("self", "env", "tensorboard_log", "verbose", "seed", "_init_setup_model")
#: Folder of the hyperparameter files.
HYPERPARAMS_DIR = Path(__file__).resolve().parents[2] / "experiments" / "hyperparams"
#: Hyperparameters that accept ``lin_<value>`` (a linear schedule to 0).
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")


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

        from agents.graph_policy import register

        register(MaskablePPO)  # policy: GraphPolicy (CoEL-Graph-v0)
        return MaskablePPO
    import stable_baselines3 as sb3

    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[algo]


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
    source = HYPERPARAMS_DIR / f"{algo}.yml"
    for key, value in hp.items():
        where = "--hyperparams" if key in (overrides or {}) else None
        check_hyperparam(key, value, where or f"{source}:")
    if algo in ("ppo", "maskable_ppo") and hp.get("normalize_advantage", True):
        bs = hp.get("batch_size", 64)
        if bs < 2:
            where = "--hyperparams" if "batch_size" in (overrides or {}) else f"{source}:"
            raise ValueError(
                f"{where} batch_size={bs!r} is not allowed; must be an integer >= 2 ({algo} "
                "normalises the advantages over each minibatch; or normalize_advantage=false)"
            )
    _model_kwargs(cls, hp)  # validate everything now
    _normalize_kwargs(hp["normalize"])
    return _plain(hp)


def _real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _train_freq(v: Any) -> bool:
    if isinstance(v, list | tuple):
        return len(v) == 2 and _int(v[0]) and v[0] >= 1 and v[1] in ("step", "episode")
    return _int(v) and v >= 1


#: Hyperparameter -> (test of a plain value, what is allowed). ``lin_<x>`` schedules of
#: :data:`SCHEDULE_KEYS` are tested on ``x``. Keys not listed are left to the constructor.
HYPERPARAM_RANGES: dict[str, tuple[Any, str]] = {
    "learning_rate": (lambda v: _real(v) and v > 0, "a number > 0 (or lin_<number > 0>)"),
    "gamma": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "gae_lambda": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "n_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "n_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "clip_range": (lambda v: _real(v) and v > 0, "a number > 0 (or lin_<number > 0>)"),
    "clip_range_vf": (lambda v: v is None or (_real(v) and v > 0), "null or a number > 0"),
    "ent_coef": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    "vf_coef": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    "max_grad_norm": (lambda v: _real(v) and v > 0, "a number > 0"),
    "target_kl": (lambda v: v is None or (_real(v) and v > 0), "null or a number > 0"),
    "rms_prop_eps": (lambda v: _real(v) and v > 0, "a number > 0"),
    "buffer_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "learning_starts": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "tau": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "train_freq": (_train_freq, "an integer >= 1, or [N, step] / [N, episode]"),
    "gradient_steps": (lambda v: _int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1"),
    "target_update_interval": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "exploration_fraction": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "exploration_initial_eps": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "exploration_final_eps": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "sde_sample_freq": (lambda v: _int(v) and v >= -1, "an integer >= -1"),
    "stats_window_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "n_envs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "normalize_advantage": (lambda v: isinstance(v, bool), "true or false"),
    "use_sde": (lambda v: isinstance(v, bool), "true or false"),
    "use_rms_prop": (lambda v: isinstance(v, bool), "true or false"),
    "optimize_memory_usage": (lambda v: isinstance(v, bool), "true or false"),
}


def check_hyperparam(key: str, value: Any, where: str = "--hyperparams") -> None:
    """Check ``value`` of hyperparameter ``key`` against :data:`HYPERPARAM_RANGES`.

    Args:
        key: the hyperparameter.
        value: its plain value (``lin_<x>`` for the keys of :data:`SCHEDULE_KEYS`).
        where: how the message names its source (``--hyperparams``, or a file).

    Raises:
        ValueError: ``{where} KEY=VALUE is not allowed; must be ...``.
    """
    if key not in HYPERPARAM_RANGES:
        return
    test, allowed = HYPERPARAM_RANGES[key]
    plain = value
    if isinstance(value, str) and key in SCHEDULE_KEYS and value.startswith("lin_"):
        try:
            plain = float(value[4:])
        except ValueError:
            raise ValueError(
                f"{where} {key}={value!r} is not allowed; expected lin_<number>, e.g. lin_3e-4"
            ) from None
    if not test(plain):
        raise ValueError(f"{where} {key}={value!r} is not allowed; must be {allowed}")


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
    from agents.policies import resolve_policy

    policy_cls = resolve_policy(cls, policy)
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
    from agents.policies import FUSED_POLICY, resolve_policy

    policy_cls = resolve_policy(cls, policy)  # raises for an unknown name
    if policy == FUSED_POLICY:  # not one of SB3's aliases: pass the class
        kw["policy"] = policy_cls
    kw["policy_kwargs"] = _policy_kwargs(cls, policy, kw.get("policy_kwargs"))
    if policy == "GraphPolicy":  # MaskablePPO's only (resolve_policy refuses it elsewhere)
        # the same minibatches with one copy instead of two (agents/buffers.py)
        from agents.buffers import TorchMaskableDictRolloutBuffer

        kw.setdefault("rollout_buffer_class", TorchMaskableDictRolloutBuffer)
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
