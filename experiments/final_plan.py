"""What plan a trained policy ends its episodes with: homes and bit widths per model.

    python experiments/final_plan.py POLICY [--scenario default] [--seeds 3]
        [--first-seed 0] [--epochs 200] [--stochastic] [--out plans.csv]

``POLICY`` is a run folder or a ``model.zip`` as ``coel evaluate`` takes it (its env
config comes from the run folder). Each seed is one whole episode through the
evaluation harness (:func:`agents.harness.run_episode`), so the return is ``coel
evaluate``'s; printed per seed: the return, how many edits of each kind the policy
made over the episode, and, per model of the plan in force at the end, its home servers
and how many experts sit at each bit width. ``--out`` writes the same as CSV (one row
per seed and model).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import harness  # noqa: E402
from agents.cli_common import write_csv  # noqa: E402
from agents.evaluate_cli import load_rl_policy  # noqa: E402
from coel_env.core.world import World  # noqa: E402


def final_plans(policy_path, scenario: str, seeds, epochs: int, stochastic: bool = False):
    """One row per (seed, model of the final plan): seed, return, the episode's edits
    by kind (``bits:8 home_move:1``), model, homes (``0,1``) and bits (``4:1024``...)."""
    policy, config, _ = load_rl_policy(policy_path, stochastic=stochastic)
    world = World(scenario)
    act = policy.act
    kinds: Counter = Counter()

    def counted(w, obs):  # the edits of each decision (GraphRLPolicy.edits), by kind
        plan = act(w, obs)
        kinds.update(policy.layout.decode(a)[0] for a in policy.edits)
        return plan

    policy.act = counted
    rows = []
    for seed in seeds:
        kinds.clear()
        res = harness.run_episode(policy, scenario, seed, epochs, reward_config=config, world=world)
        edits = " ".join(f"{k}:{kinds[k]}" for k in sorted(kinds))
        for name, mp in world.plan.models.items():
            bits = Counter(int(b) for b in mp.bits.ravel())
            rows.append({
                "seed": seed,
                "return": res.metrics["return"],
                "edits": edits,
                "model": name,
                "homes": ",".join(str(h) for h in mp.home),
                "bits": " ".join(f"{b}:{bits[b]}" for b in sorted(bits)),
            })  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("policy", help="run folder or model.zip")
    p.add_argument("--scenario", default="default")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--stochastic", action="store_true", help="sample the policy")
    p.add_argument("--out", help="CSV of every (seed, model)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds={args.seeds} is not allowed; must be >= 1")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    try:
        rows = final_plans(args.policy, args.scenario, seeds, args.epochs, args.stochastic)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    for r in rows:
        print(f"seed {r['seed']:>4}  return {r['return']:8.2f}  {r['model']:<20} "
              f"homes {r['homes']:<12} bits {r['bits']:<12} edits {r['edits']}")  # fmt: skip
    if args.out:
        write_csv(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
