"""Loading what ``coel train`` saved: model zips, normalisers, space checks.

Loading unpickles data (see :mod:`agents.train`): trusted files only.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.train.algos import algo_class
from agents.train.runs import _read_yaml, _vecnormalize_for


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


def _read(read: Callable[[], Any], kind: type, failed: str, wrong: str) -> Any:
    """What ``read()`` returns; ValueError ``failed`` (with the cause) when it raises,
    ``wrong`` when it is not a ``kind``."""
    try:
        out = read()
    except Exception as exc:  # noqa: BLE001 - whatever a bad file makes the reader raise
        raise ValueError(f"{failed} ({type(exc).__name__}: {exc})") from None
    if not isinstance(out, kind):
        raise ValueError(wrong)
    return out


def _load_vecnormalize(path: Path, venv=None):
    from stable_baselines3.common.vec_env import VecNormalize

    def read():
        if venv is not None:
            return VecNormalize.load(str(path), venv)
        with path.open("rb") as f:
            return pickle.load(f)

    what = f"normaliser file {path}"
    failed, wrong = f"{what} could not be loaded", f"{what} does not hold VecNormalize statistics"
    return _read(read, VecNormalize, failed, wrong)


def _zip_data(path: Path) -> dict[str, Any]:
    """The JSON ``data`` member of an SB3 zip (plain JSON: nothing is unpickled)."""
    import json

    def read():
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("data"))

    problem = f"model file {path} is not a model zip saved by SB3"
    return _read(read, dict, problem, problem)


def _zip_num_timesteps(path: Path) -> int | None:
    try:
        return int(_zip_data(path).get("num_timesteps"))
    except (ValueError, TypeError):
        return None


def _zip_policy_module(path: Path) -> str:
    """The module of the policy class recorded in an SB3 zip ('' when unknown)."""
    pc = _zip_data(path).get("policy_class", {})
    return str(pc.get("__module__", "")) if isinstance(pc, dict) else ""


def _zip_policy_name(path: Path) -> str:
    """The name of the policy class recorded in an SB3 zip ('' when unknown), read from
    its pickle's opcodes (nothing is unpickled)."""
    import base64
    import pickletools

    pc = _zip_data(path).get("policy_class", {})
    try:
        ops = pickletools.genops(base64.b64decode(pc[":serialized:"]))
        names = [arg for _, arg, _ in ops if isinstance(arg, str)]
    except Exception:  # noqa: BLE001 - not a mapping, no pickle, a malformed one
        return ""
    return names[-1] if names else ""


def _guess_algo(path: Path) -> str:
    module = _zip_policy_module(path)
    # agents.policies' fused policies: the class name says which algorithm's;
    # agents.graph_policy's GraphPolicy is MaskablePPO's
    if "maskable" in module or "graph_policy" in module or "Maskable" in _zip_policy_name(path):
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
    fused: bool = False,
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
    ``num_timesteps``. ``fused=True`` gives a stock ``MlpPolicy`` the fused action
    distribution (:func:`agents.policies.to_fused`: the same weights; a policy trained
    as ``FusedMlpPolicy`` has it already). Loading unpickles data: trusted files only.
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
    if fused:
        from agents.policies import to_fused

        to_fused(model)
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
