"""Do published policies' returns move with the fused action distribution?

    python experiments/fused_returns.py [RUN ...] [--seeds 3] [--epochs 20]
                                        [--out results/fused_returns.md]

For each run folder (default: every ``results/policies/maskable_ppo-*``), the model is
loaded twice: as saved (the stock ``MaskableActorCriticPolicy``, one torch
``Categorical`` per action field) and with the fused distribution
(``agents.train.load_policy(..., fused=True)``: the same weights). Each seed's episode
(the run's env config and scenario, as ``coel evaluate`` runs it) is then played three
ways:

* **coel evaluate**: :class:`agents.rl.RLPolicy` as ``coel evaluate`` runs it (its own
  masked argmax of the logits, no torch distribution);
* **stock predict**: ``model.predict(obs, deterministic=True, action_masks=mask)`` of
  the stock policy (the mode of sb3-contrib's masked distribution);
* **fused predict**: the same with the fused policy.

The stock-predict episode also computes, at every step, the fused policy's and
``coel evaluate``'s action for the same observation and counts the steps where they
differ from the stock one (so a difference is seen where it happens, not only in
the return). Deterministic actions need no random draws, so equal actions at every
step give equal returns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from agents import harness
from agents.evaluate_cli import load_rl_policy
from agents.rl import RLPolicy
from agents.train import load_policy
from experiments.benchutil import write_report

ROOT = Path(__file__).resolve().parents[1]


class _Predict(RLPolicy):
    """:class:`RLPolicy` deciding through ``model.predict`` (the distribution's mode)."""

    def _make_argmax(self):
        def predict(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
            a, _ = self.model.predict(x, deterministic=True, action_masks=mask)
            return np.asarray(a, np.int64)

        return predict


class _Lockstep(RLPolicy):
    """The stock policy's ``predict``, comparing every step with the fused policy's and
    with ``coel evaluate``'s direct argmax."""

    def __init__(self, *args, fused=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fused = fused
        self.steps = self.fused_differs = self.direct_differs = 0

    def _make_argmax(self):
        direct = super()._make_argmax()

        def predict(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
            a, _ = self.model.predict(x, deterministic=True, action_masks=mask)
            b, _ = self.fused.predict(x, deterministic=True, action_masks=mask)
            self.steps += 1
            self.fused_differs += not np.array_equal(a, b)
            self.direct_differs += not np.array_equal(a, direct(x, mask))
            return np.asarray(a, np.int64)

        return predict


def check(run: Path, seeds: list[int], epochs: int | None) -> list[dict]:
    """One row per seed: the three returns and the steps where the actions differ."""
    evaluate, config, steps = load_rl_policy(run)
    if not evaluate._masked:
        raise ValueError(f"{run}: not a MaskablePPO model ({type(evaluate.model).__name__})")
    fused_model, _, _ = load_policy(run, fused=True)
    args = (evaluate.env_id, evaluate.config, evaluate.vecnormalize)
    fused = _Predict(fused_model, *args, name="fused")
    epochs = epochs or steps
    scenario = config["scenario"]
    kw = {"overrides": config.get("overrides") or None, "reward_config": config}
    rows = []
    for seed in seeds:
        lock = _Lockstep(evaluate.model, *args, name="stock", fused=fused_model)
        ret = {
            name: harness.run_episode(p, scenario, seed, epochs, **kw).metrics["return"]
            for name, p in (("evaluate", evaluate), ("stock", lock), ("fused", fused))
        }
        rows.append({"run": run.name, "seed": seed, "epochs": epochs, **ret,
                     "steps": lock.steps, "fused_differs": lock.fused_differs,
                     "direct_differs": lock.direct_differs})  # fmt: skip
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Published policies with the fused action distribution",
        "",
        f"Command: `{command}`",
        "",
        "Returns of each seed's episode played by the model's deterministic action three",
        "ways (see `experiments/fused_returns.py`): `coel evaluate`'s direct argmax, the",
        "stock policy's `predict` and the fused policy's `predict` (the same weights);",
        "and the steps of the stock-predict episode where the fused policy's or",
        "`coel evaluate`'s action for the same observation differs.",
        "",
        "| run | seed | epochs | return (coel evaluate) | return (stock predict) "
        "| return (fused predict) | steps | fused action differs | evaluate's differs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['seed']} | {r['epochs']} | {r['evaluate']:.6f} "
            f"| {r['stock']:.6f} | {r['fused']:.6f} | {r['steps']} | {r['fused_differs']} "
            f"| {r['direct_differs']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN",
                   help="run folders (default: results/policies/maskable_ppo-*)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--epochs", type=int, default=None, help="default: the env's limit")
    p.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds {args.seeds} is not allowed; must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs {args.epochs} is not allowed; must be >= 1")
    runs = args.runs or sorted((ROOT / "results" / "policies").glob("maskable_ppo-*"))
    rows = []
    for run in runs:
        for r in check(run, list(range(args.seeds)), args.epochs):
            print(
                f"{r['run']:<36s} seed {r['seed']}  return: evaluate {r['evaluate']:.6f}  "
                f"stock {r['stock']:.6f}  fused {r['fused']:.6f}  steps {r['steps']}  "
                f"fused differs {r['fused_differs']}  evaluate differs {r['direct_differs']}",
                flush=True,
            )
            rows.append(r)
    write_report(args.out, "experiments/fused_returns.py", argv, lambda c: markdown(rows, c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
