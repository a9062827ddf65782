"""Train the reference multi-agent policy (parameter-shared PPO on ``coel_env.parallel_env``).

    python experiments/multiagent.py [--timesteps N] [--seed S] [--scenario NAME]
                                     [--policy-dir DIR] [--runs-root DIR]

Trains with ``coel train-ma`` (every edge server of the scenario an agent, one
shared PPO) into a new run folder under ``--runs-root``, then copies what
evaluation needs (model, config, arguments, hyperparameters, versions,
evaluations, seed, command; no TensorBoard logs) to ``--policy-dir`` (default
``results/policies/ma_ppo-<scenario>``; an existing folder is refused), which
``coel compare --runs DIR`` and ``coel baselines --policies ma:DIR`` take.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

KEEP_FILES = ("model.zip", "config.yml", "args.yml", "hyperparams.yml", "versions.yml",
              "evaluations.npz", "seed", "command.txt")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timesteps", type=int, default=50_000, help="agent steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", default="default")
    p.add_argument("--eval-epochs", type=int, default=50, help="epochs per evaluation episode")
    p.add_argument("--policy-dir", type=Path, default=None)
    p.add_argument("--runs-root", type=Path, default=Path("runs"))
    # the published policy (results/policies/ma_ppo-default) was trained on version 0 of
    # the multi-agent env; the default reproduces it
    p.add_argument("--env-version", type=int, default=0, help="multi-agent env version")
    args = p.parse_args(argv)
    dest = args.policy_dir or Path("results") / "policies" / f"ma_ppo-{args.scenario}"
    if dest.exists():
        print(f"multiagent: error: {dest} exists; not overwritten", file=sys.stderr)
        return 2
    from agents.multiagent import train_ma

    run = train_ma(timesteps=args.timesteps, seed=args.seed, scenario=args.scenario,
                   runs_root=args.runs_root, eval_freq=max(args.timesteps // 4, 1),
                   eval_epochs=args.eval_epochs, progress=sys.stderr.isatty(),
                   argv=sys.argv, env_version=args.env_version)  # fmt: skip
    dest.mkdir(parents=True)
    for name in KEEP_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
    print(f"run: {run}\npolicy: {dest}\ncompare it: coel compare --runs {dest} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
