"""Training: :func:`train` a new run, :func:`resume` one, the loop they share, and the
imitation step before RL."""

from __future__ import annotations

import datetime as _dt
import inspect
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.train.algos import (
    _model_kwargs,
    _normalize_kwargs,
    algo_class,
    distribution_checks,
    resolve_hyperparams,
)
from agents.train.callbacks import _callbacks_module
from agents.train.envs import (
    _dqn_wrapper_needed,
    _make_vec,
    _probe_env,
    canonical_env_id,
    make_env,
)
from agents.train.loading import _load_model, _load_vecnormalize, _zip_num_timesteps
from agents.train.runs import (
    _command_line,
    _new_run_dir,
    _read_yaml,
    _vecnormalize_for,
    _write_yaml,
    check_run_dir,
    checkpoints,
    versions,
)

#: Default evaluation seeds.
DEFAULT_EVAL_SEEDS = (0, 1, 2, 3, 4)
#: The most episodes one evaluation during training runs (``--eval-episodes``).
MAX_EVAL_EPISODES = 100_000


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


def _check_rollout(algo: str, hp: Mapping[str, Any]) -> None:
    """PPO (and A2C with ``normalize_advantage``) normalise the advantages of a rollout of
    ``n_steps x n_envs`` steps: one step gives NaN, which SB3 asserts against."""
    normalizes = hp.get("normalize_advantage", algo != "a2c")
    if algo == "dqn" or not normalizes:
        return
    n_steps = hp.get("n_steps", 5 if algo == "a2c" else 2048)
    if n_steps * hp["n_envs"] < 2:
        raise ValueError(
            f"--hyperparams n_steps={n_steps!r} with --n-envs {hp['n_envs']} is not allowed: "
            f"{algo} normalises the advantages over n_steps x n_envs steps, which must be "
            ">= 2 (or normalize_advantage=false)"
        )


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
    n = _check_int("--eval-episodes", eval_episodes, 1)
    if n > MAX_EVAL_EPISODES:  # run at every evaluation: a typo, not a plan
        raise ValueError(
            f"--eval-episodes {n!r} is not allowed; must be at most {MAX_EVAL_EPISODES:,}"
        )
    return list(range(n))


def _check_shaping_gamma(config: Mapping[str, Any], cls: type, hp: Mapping[str, Any]) -> None:
    """``CoEL-Graph-v0``'s shaping keeps the best policy only when its discount is the
    learner's (``coel_env.envs.shaping``; ``cls``'s own default where ``hp`` sets none):
    refuse a run where they differ."""
    if not config.get("shaping_epochs"):
        return
    gamma = float(hp.get("gamma", inspect.signature(cls).parameters["gamma"].default))
    if float(config["shaping_gamma"]) != gamma:
        raise ValueError(
            f"shaping_gamma={config['shaping_gamma']!r} differs from the learner's "
            f"gamma={gamma!r}: potential-based shaping changes the best policy unless they "
            "are equal; set --env-config shaping_gamma to the same value"
        )


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
    check_run_dir(run_dir, runs_root)
    eval_freq = _check_int("--eval-freq", eval_freq, 0)
    checkpoint_freq = _check_int("--checkpoint-freq", checkpoint_freq, 0)
    torch_threads = _check_int("--torch-threads", torch_threads, 0)
    seeds = _eval_seeds(eval_episodes, eval_seeds)
    if imitate is None and (imitate_demos is not None or imitate_rounds):
        flag = "--imitate-demos" if imitate_demos is not None else "--imitate-rounds"
        raise ValueError(f"{flag} goes with --imitate POLICY (the expert); it was not given")
    if imitate is not None:
        from agents.imitation import _check_demos_file, _check_expert

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
            _check_demos_file(str(imitate_demos), "--imitate-demos")
    hp = resolve_hyperparams(algo, env_id, hyperparams)
    if n_envs is not None:
        hp["n_envs"] = n_envs
    if normalize is not None:
        hp["normalize"] = bool(normalize)
    hp["n_envs"] = _check_int("--n-envs", hp["n_envs"], 1)
    _normalize_kwargs(hp["normalize"])
    _check_rollout(algo, hp)

    config: dict[str, Any] = dict(env_config or {})
    if "id" in config:
        raise ValueError("env config key 'id' is not allowed; use --env")
    if scenario is not None:
        config["scenario"] = str(scenario)
    if overrides:
        config["overrides"] = {**config.get("overrides", {}), **dict(overrides)}
    resolved, action_space = _probe_env(env_id, config)
    _dqn_wrapper_needed(algo, action_space, env_id)  # raises where DQN cannot run
    _check_shaping_gamma(resolved, cls, hp)
    if imitate is not None:
        _check_encodable(env_id, config, str(imitate))
        if imitate_demos is not None:
            _check_encodable(env_id, config, str(imitate_demos), "--imitate-demos")

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
    try:
        return _run(cls, path, args, hp, resolved, start=None, progress=progress,
                    verbose=verbose, callbacks=callbacks)  # fmt: skip
    except BaseException:
        _remove_if_no_model(path)
        raise


def _remove_if_no_model(path: Path) -> None:
    """Remove the new run folder ``path`` when the run failed before saving any model
    (a run folder without one only trips up ``coel compare --runs runs/*`` later);
    say so on stderr. A folder with a model, checkpoint or best model is kept."""
    import shutil

    models = [path / "model.zip", path / "best_model.zip", *(p for _, p in checkpoints(path))]
    if any(p.is_file() for p in models):
        return
    shutil.rmtree(path, ignore_errors=True)
    print(f"coel train: the run failed before saving a model; removed {path}", file=sys.stderr)


def _check_encodable(
    env_id: str, config: Mapping[str, Any], imitate: str, flag: str = "--imitate"
) -> None:
    from agents.imitation import Demonstrations, require_encoding

    env = gym.make(f"coel_env:{env_id}", config=dict(config))
    try:
        require_encoding(env_id, env.unwrapped)
        if str(imitate).endswith(".npz"):  # checked before the run folder exists
            space = env.observation_space
            Demonstrations.load(imitate, int(space.shape[0]), env.action_space.nvec, flag)
    finally:
        env.close()


def _imitate(model, path: Path, args: Mapping[str, Any], config, progress: bool) -> None:
    """Clone the expert's plans into ``model`` before RL (:mod:`agents.imitation`)."""
    from agents import imitation

    spec = args["imitate"]
    start_file = spec["expert"] if spec["expert"].endswith(".npz") else spec.get("demos")
    if start_file:
        space = model.observation_space
        flag = "--imitate" if start_file == spec["expert"] else "--imitate-demos"
        demos = imitation.Demonstrations.load(
            start_file, int(space.shape[0]), np.asarray(model.action_space.nvec), flag
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
            try:
                model = cls(env=venv, seed=seed, verbose=verbose,
                            tensorboard_log=str(path / "tb"), **kwargs)  # fmt: skip
            except (AssertionError, ValueError) as exc:  # a check of SB3's or torch's
                raise ValueError(
                    f"{cls.__name__} refused the hyperparameters ({path / 'hyperparams.yml'}, "
                    f"from the file and --hyperparams): {exc}"
                ) from None
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
