"""Pick a training run's checkpoint on validation episodes, never on a results table's seeds.

    python experiments/select_checkpoint.py RUN_DIR [--evals default large Abilene]
        [--seeds 3] [--first-seed 0] [--epochs 50] [--stochastic] [--from-steps N]
        [--out selection.csv]

Every checkpoint of ``RUN_DIR/checkpoints`` (``model_<steps>_steps.zip``) and the run's
final ``model.zip`` is played deterministically through the harness (as ``coel
evaluate``) on each evaluation: a preset scenario name, or the name of a Topology Zoo
graph under ``$COEL_DATA/topologies/topology_zoo`` (``Abilene`` is ``Abilene.graphml``)
on ``default``'s settings. ``naive`` and ``greedy`` play the same episodes once. A
checkpoint's score on an evaluation is ``(rl - naive) / (greedy - naive)`` of the mean
returns (the graph issue's transfer ratio); its validation score is the mean over the
evaluations, and the checkpoint with the highest one is printed last. The default seeds
(0-2) are the tuning seeds of the graph env's results, which use seeds 100-119.
``--stochastic`` plays the checkpoints' sampled policies (``coel evaluate --stochastic``);
``--from-steps N`` scores only the checkpoints of at least N steps.

``--out`` writes every episode (one row per checkpoint, evaluation and seed, baselines
with ``checkpoint_steps`` -1) as CSV.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import harness  # noqa: E402
from agents.cli_common import write_csv  # noqa: E402

_STEPS = re.compile(r"model_(\d+)_steps\.zip$")


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(steps, zip) of the run's checkpoints and its final model (unless a checkpoint
    has its steps), by steps."""
    out = []
    for p in sorted((run / "checkpoints").glob("model_*_steps.zip")):
        m = _STEPS.search(p.name)
        if m:
            out.append((int(m.group(1)), p))
    final = run / "model.zip"
    if final.is_file():
        steps = _final_steps(final)
        if steps not in {s for s, _ in out}:  # coel train also saves the last one as a checkpoint
            out.append((steps, final))
    if not out:
        raise ValueError(f"{str(run)!r} holds no checkpoints/model_<steps>_steps.zip nor model.zip")
    return sorted(out)


def _final_steps(final: Path) -> int:
    from sb3_contrib import MaskablePPO

    import agents.graph_policy  # noqa: F401  (registers GraphPolicy for loading)

    model = MaskablePPO.load(final, device="cpu")
    return int(model.num_timesteps)


def evaluation(name: str) -> tuple[str, dict]:
    """(scenario, overrides) of an evaluation name (a preset or a Topology Zoo graph)."""
    from coel_env.core.scenario import PRESETS, data_root, scenario_overrides

    if name in PRESETS:
        return name, {}
    path = data_root() / "topologies" / "topology_zoo" / f"{name}.graphml"
    if not path.is_file():
        raise ValueError(
            f"--evals {name!r}: neither a preset {PRESETS} nor a Topology Zoo graph ({path} "
            "does not exist)"
        )
    return "default", scenario_overrides(topology=path)


def play(policy, scenario: str, over: dict, seeds: list[int], epochs: int, reward) -> list:
    return [
        harness.run_episode(policy, scenario, s, epochs, overrides=over, reward_config=reward)
        for s in seeds
    ]


def main(argv: list[str] | None = None) -> int:
    import warnings

    import torch

    from agents.evaluate_cli import load_rl_policy
    from agents.registry import make_policy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--evals", nargs="+", default=["default", "large", "Abilene"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--stochastic", action="store_true", help="sample the policies' edits")
    p.add_argument("--from-steps", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.seeds < 1 or a.epochs < 1 or a.first_seed < 0:
        p.error(f"--seeds {a.seeds} and --epochs {a.epochs} must be >= 1, --first-seed >= 0")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # Topology Zoo graphs warn about missing link data
    seeds = harness.seed_list(a.seeds, a.first_seed)
    evals = {name: evaluation(name) for name in a.evals}
    ckpts = [(n, path) for n, path in checkpoints(a.run) if n >= a.from_steps]
    if not ckpts:
        p.error(f"--from-steps {a.from_steps}: {str(a.run)!r} has no checkpoint that late")
    reward = load_rl_policy(ckpts[-1][1])[1]
    rows: list[dict] = []
    base: dict[tuple[str, str], float] = {}
    for name, (sc, over) in evals.items():
        for pol in ("naive", "greedy"):
            res = play(make_policy(pol), sc, over, seeds, a.epochs, reward)
            base[(name, pol)] = float(np.mean([r.metrics["return"] for r in res]))
            rows += [{"checkpoint_steps": -1, "evaluation": name, **r.row()} for r in res]
    print("evaluation: naive / greedy = " + "; ".join(
        f"{n} {base[(n, 'naive')]:.2f} / {base[(n, 'greedy')]:.2f}" for n in evals
    ), flush=True)  # fmt: skip
    best = None
    for steps, path in ckpts:
        policy = load_rl_policy(path, name=f"rl@{steps}", stochastic=a.stochastic)[0]
        scores = {}
        for name, (sc, over) in evals.items():
            res = play(policy, sc, over, seeds, a.epochs, reward)
            rows += [{"checkpoint_steps": steps, "evaluation": name, **r.row()} for r in res]
            ret = float(np.mean([r.metrics["return"] for r in res]))
            gap = base[(name, "greedy")] - base[(name, "naive")]
            scores[name] = (ret - base[(name, "naive")]) / gap if gap else float("nan")
        mean = float(np.mean(list(scores.values())))
        print(f"{steps:>9} steps: " + ", ".join(f"{n} {v:.3f}" for n, v in scores.items())
              + f"; mean {mean:.3f}", flush=True)  # fmt: skip
        if best is None or mean > best[0]:
            best = (mean, steps, path)
        if a.out is not None:
            write_csv(a.out, rows)
    print(f"best: {best[2]} ({best[1]} steps, validation score {best[0]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
