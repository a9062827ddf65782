"""The ``coel train`` command line: :func:`add_arguments` and :func:`main`."""

from __future__ import annotations

import argparse
import sys

from agents.train.algos import ALGOS, parse_hyperparams, parse_kv
from agents.train.loop import TrainingInterrupted, resume, train

#: The flags that reach :func:`~agents.train.loop.train` as given, under their own names.
PASSED = (
    "seed run_dir runs_root scenario n_envs vec normalize eval_freq eval_episodes eval_seeds "
    "checkpoint_freq torch_threads distribution_checks progress verbose imitate "
    "imitate_episodes imitate_epochs imitate_passes imitate_rounds imitate_demos"
).split()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", choices=ALGOS, default=None, help="the algorithm")
    p.add_argument("--env", default=None, metavar="ID",
                   help="CoEL environment id, e.g. CoEL-v2 (the current one)")  # fmt: skip
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
    p.add_argument("--imitate", default=None, metavar="POLICY|FILE.npz",
                   help="clone this policy's plans (or a run's demonstrations.npz) before RL "
                        "(CoEL-v2, -v1, InterDevice-v1), e.g. static-homes or greedy")  # fmt: skip
    p.add_argument("--imitate-episodes", type=int, default=8, help="demonstration episodes")
    p.add_argument("--imitate-epochs", type=int, default=50, help="epochs per demonstration")
    p.add_argument("--imitate-passes", type=int, default=20, help="cloning passes over them")
    p.add_argument("--imitate-rounds", type=int, default=0,
                   help="DAgger rounds: the clone acts, POLICY labels")  # fmt: skip
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
                overrides=parse_kv(args.overrides, "--set"),
                env_config=parse_kv(args.env_config, "--env-config"),
                hyperparams=parse_hyperparams(args.hyperparams),
                argv=argv,
                **{name: getattr(args, name) for name in PASSED},
            )
    except TrainingInterrupted:
        return 130
    print(path)
    return 0
