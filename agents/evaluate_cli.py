"""``coel evaluate``: run a saved policy through the same harness as the baselines.

  coel evaluate RUN_DIR_OR_ZIP [--env ID] [--scenario NAME|FILE] [--trace F]
                [--topology F] [--set K=V ...] [--seeds N | --episodes N]
                [--first-seed K] [--epochs N] [--best] [--stochastic] [--json]
                [--torch-threads N] [--runs-root DIR | --out FILE.csv [--force]]

Loads the model (``model.zip``, or ``best_model.zip`` with ``--best``) with
its ``VecNormalize`` statistics, and runs it deterministically (its mode; a
``CoEL-Graph-v0`` policy with ``--stochastic``: draws from it, seeded by each
episode's seed, so an episode is reproducible) for one episode
per seed (``--seeds N``: seeds 0..N-1; ``--episodes N`` is the same;
``--first-seed K``: seeds K..K+N-1; ``--torch-threads N``: torch threads, 1 by
default as in ``coel train``, 0 for torch's default) through
``agents.harness``, printing and writing the same metrics as
``coel baselines`` (``--json``: the same JSON list, so rows compare one to
one). The env id and config come from the run folder; ``--env``,
``--scenario``, ``--trace``, ``--topology`` and ``--set`` evaluate it on
another scenario, trace or topology of the same shape (the number of servers
and models must match, else a clear error); a ``CoEL-Graph-v0`` policy
(:class:`agents.graph_rl.GraphRLPolicy`) runs on any of them up to the maxima it was
trained with.

Outputs, as in ``coel baselines``: a new run folder
``<runs-root>/evaluate-<env>-<scenario>-<YYYYmmdd-HHMMSS>`` (default root
``runs``; never reused) with ``episodes.csv``, ``summary.json``, ``command.txt``
and ``args.yml``, its path printed last (on stderr under ``--json``); or only the
per-episode rows to ``--out FILE.csv``, never overwritten without ``--force``.
Ctrl-C keeps the finished episodes as ``coel baselines`` does (exit status 130).

``--best`` without a ``best_model.zip`` (a run trained with ``--eval-freq 0``) uses
``model.zip`` and says so on stderr. A run folder without its ``config.yml`` is an
error (the env's defaults would score the policy with other reward weights); a model
zip outside any run folder is evaluated with the env's default config (``--env``),
with a notice.

Model files unpickle data: load only files you trust. Loading uses SB3's
``load`` (``torch.load`` with ``weights_only`` for the parameters).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents import harness
from agents.baselines_cli import add_first_seed, add_out_arguments, env_defaults, evaluate_and_save
from agents.cli_common import build_overrides, check_count, check_destination


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, metavar="RUN_DIR_OR_ZIP")
    p.add_argument("--env", default=None, help="env id (default: the run's)")
    p.add_argument("--scenario", default=None, help="preset or YAML (default: the run's)")
    p.add_argument("--trace", type=Path, default=None, help="request trace CSV")
    p.add_argument("--topology", type=Path, default=None, help=".graphml or EUA .csv")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5)")
    p.add_argument("--episodes", type=int, default=None, help="same as --seeds")
    add_first_seed(p)
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per episode (default: the env's limit)"
    )
    p.add_argument("--best", action="store_true", help="use best_model.zip")
    p.add_argument(
        "--stochastic",
        action="store_true",
        help="CoEL-Graph-v0 policies: sample each edit from the policy (seeded by the "
        "episode seed) instead of taking its mode",
    )
    p.add_argument("--name", default=None, help="policy name in the table (default: the run's)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for the policy's network (default 1, as coel train; 0: torch's "
        "default; the networks are small, and more threads mostly spin)",
    )
    add_out_arguments(p)


def load_rl_policy(
    path: Path, env_id: str | None = None, best: bool = False, name=None,
    stochastic: bool = False,
):  # fmt: skip
    """(RLPolicy, its env config over the id's defaults, the id's episode length) for a
    run folder or model zip (``stochastic``: a ``CoEL-Graph-v0`` policy that samples)."""
    return _load_rl_policy(path, env_id, best, name, stochastic)[:3]


def _load_rl_policy(path: Path, env_id: str | None, best: bool, name, stochastic: bool = False):
    """:func:`load_rl_policy`'s triple and the env id it resolved.

    Raises:
        ValueError: ``stochastic`` for a policy of another env than ``CoEL-Graph-v0``.
    """
    from agents.rl import RLPolicy
    from agents.train import load_policy

    model, vecnorm, meta = load_policy(path, best=best)
    used = Path(meta["model_path"])
    if best and used.name != "best_model.zip":
        why = (
            f"{str(path)!r} is a model file"
            if Path(path).is_file()
            else f"{str(path)!r} has no best_model.zip (the run kept none: --eval-freq 0?)"
        )
        print(f"notice: --best: {why}; using {used}", file=sys.stderr)
    env_id = env_id or meta.get("env_id")
    if env_id is None:
        raise ValueError(f"{str(path)!r}: the env id is unknown; pass --env")
    env_cfg, steps = env_defaults(env_id)
    run = meta.get("run_dir")
    if run is not None and not isinstance(meta.get("config"), dict):
        raise ValueError(
            f"{str(Path(run) / 'config.yml')!r} is missing or not a mapping: the run's env "
            "config (scenario, reward weights, n_groups...) is unknown, and the env's "
            "defaults would score it on other terms; coel train writes it at the start of "
            "every run: restore it"
        )
    if run is None:
        print(
            f"notice: {str(path)!r} is not in a coel train run folder (no args.yml and "
            f"config.yml beside it): evaluating with {env_id}'s default config",
            file=sys.stderr,
        )
    config = dict(meta.get("config") or {})
    run_name = Path(meta.get("run_dir") or path).name
    if "placement" in (getattr(model.observation_space, "spaces", None) or {}):
        from agents.graph_rl import GraphRLPolicy  # CoEL-Graph-v0: edits until commit

        policy = GraphRLPolicy(model, config, name=name or f"rl:{run_name}", stochastic=stochastic)
    elif stochastic:
        raise ValueError(
            f"--stochastic is for CoEL-Graph-v0 policies; {str(path)!r} is a {env_id} policy "
            "(evaluated by its mode)"
        )
    else:
        policy = RLPolicy(model, env_id, config, vecnorm, name=name or f"rl:{run_name}")
    return policy, {**env_cfg, **config}, steps, env_id


def main(args: argparse.Namespace) -> int:
    if args.seeds is not None and args.episodes is not None and args.seeds != args.episodes:
        raise ValueError(f"--seeds {args.seeds} and --episodes {args.episodes} disagree")
    n = next((v for v in (args.seeds, args.episodes) if v is not None), 5)
    flag = "--seeds" if args.seeds is not None or args.episodes is None else "--episodes"
    check_count(flag, n, high=harness.MAX_SEEDS)
    seeds = harness.seed_list(n, args.first_seed)
    if args.epochs is not None:
        check_count("--epochs", args.epochs)
    check_count("--torch-threads", args.torch_threads, low=0)
    check_destination(args)
    import torch

    threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        return _evaluate(args, n, seeds)
    finally:
        torch.set_num_threads(threads)


def _evaluate(args: argparse.Namespace, n: int, seeds: list[int]) -> int:
    policy, config, steps, env_id = _load_rl_policy(
        args.run, args.env, args.best, args.name, args.stochastic
    )
    scenario = args.scenario or config["scenario"]
    overrides = {**(config.get("overrides") or {}), **build_overrides(args)}
    epochs = args.epochs if args.epochs is not None else steps
    label = harness.seeds_label(n, args.first_seed)
    title = f"{policy.name} on {scenario}: {label} x {epochs} epochs"
    return evaluate_and_save(
        "evaluate", env_id, args, title, [policy], scenario, seeds, epochs,
        overrides=overrides, reward_config=config,
    )  # fmt: skip
