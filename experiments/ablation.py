"""Ablation: what each CoEL aspect is worth (perceive, compress, update, collaborate).

    python experiments/ablation.py [--quick] [--scenario default] [--seeds N]
                                   [--epochs N] [--every K] [--out-dir DIR]
    coel study ablation [same options]

The decision maker is the strongest one that decides from the broadcast view:
the MILP re-solved every ``--every`` epochs (``milp-periodic``). Each row
removes one aspect and keeps everything else, on the same seeded instances:

* ``coel (full)``: broadcast views, per-group bit widths and token keep ratios,
  re-deployment every K epochs, experts and requests spread over servers;
* ``perfect perception``: the true state instead of the stale, lossy views
  (what staleness costs; the other direction of the broadcast ablation);
* ``no broadcasts``: the controller hears no broadcast: its observation keeps
  only its own server (every other server unknown, so taken as absent, as an
  unheard server is in any view) and it deploys there;
* ``no compression``: every expert at 16 bits, activations sent uncompressed;
* ``no updating``: the first plan (made once the view has heard from every
  server) is kept for the whole episode;
* ``no inter-device collaboration``: no expert is used from another server
  (``remote = never``) and each origin's requests go to its nearest server
  that can run the model (``home_near = 1``);
* ``naive``: the world's built-in plan, for scale.

Scores are relative to ``coel (full)``. Writes ``table.md``, ``table.csv``,
``episodes.csv``, ``bars.png``, ``config.yaml`` and ``command.txt`` into a new
``runs/ablation-<time>`` folder (or ``--out-dir``, which must be absent or empty).
``--quick`` is a minutes-long version (2 seeds x 10 epochs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUICK = dict(seeds=2, epochs=10)
FULL = dict(seeds=5, epochs=50)
FULL_LABEL = "coel (full)"


class LocalOnly:
    """``policy`` deciding without broadcasts: it sees only the controller's own server.

    Every other server's news is dropped from the broadcast view (age infinite, absent,
    no demand heard), as if no broadcast ever arrived.
    """

    def __init__(self, policy, name: str) -> None:
        self.policy = policy
        self.name = name
        self.sees = "view"

    def reset(self, world, seed: int) -> None:
        self.policy.reset(world, seed)

    def act(self, world, obs):
        import dataclasses

        import numpy as np

        own = np.zeros(len(obs.up), bool)
        own[CONTROLLER] = True
        local = dataclasses.replace(
            obs,
            up=obs.up & own,
            age_s=np.where(own, obs.age_s, np.inf),
            demand_per_s=np.where(own[:, None], obs.demand_per_s, 0.0),
        )
        return self.policy.act(world, local)


#: The server whose view the policies decide from (the harness's default controller).
CONTROLLER = 0


def variants(every: int) -> list:
    """The ablation's rows (see the module docstring)."""
    from agents import milp
    from agents.registry import make_policy
    from experiments.studies import Variant

    def periodic(name: str, sees: str = "view", **cfg):
        return lambda: milp.MilpPolicy(
            name=name, sees=sees, every=every, config=milp.MilpConfig(**cfg)
        )

    def static_view():
        return milp.StaticPolicy(name="no updating", sees="view")

    return [
        Variant(
            FULL_LABEL,
            periodic(FULL_LABEL),
            note=f"MILP on the broadcast view, re-solved every {every} epochs",
        ),
        Variant(
            "perfect perception",
            periodic("perfect perception", sees="oracle"),
            note="the same MILP on the true state instead of the broadcast view",
        ),
        Variant(
            "no broadcasts",
            lambda: LocalOnly(periodic("no broadcasts")(), "no broadcasts"),
            note="no broadcast heard: the controller knows only its own server",
        ),
        Variant(
            "no compression",
            periodic("no compression", bits=(16,), keep_ratios=(1.0,)),
            note="16-bit experts only, keep ratio 1 (no token pruning/fusion)",
        ),
        Variant("no updating", static_view, note="the first plan from the view, never re-deployed"),
        Variant(
            "no inter-device",
            periodic("no inter-device", remote="never", home_near=1),
            note="no remote experts; each origin served by its nearest capable server",
        ),
        Variant("naive", lambda: make_policy("naive"), note="the world's built-in plan"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv), argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="minutes-long version")
    p.add_argument("--scenario", default="default", help="preset or YAML file")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1")
    p.add_argument("--epochs", type=int, default=None, help="epochs per episode")
    p.add_argument(
        "--every",
        type=int,
        default=None,
        help="re-solve period in epochs (default: milp-periodic's)",
    )
    p.add_argument("--out-dir", type=Path, default=None)


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from agents.registry import PERIODIC_EVERY
    from experiments import studies

    budget = studies.resolve_budget(args, QUICK, FULL)
    every = args.every if args.every is not None else PERIODIC_EVERY
    if every < 1:
        raise ValueError(f"--every {every!r} is not allowed; must be >= 1")
    out = studies.new_out_dir("ablation", args.out_dir)
    vs = variants(every)
    seeds = list(range(budget["seeds"]))
    results = studies.run_variants(vs, args.scenario, seeds, budget["epochs"])
    rows = studies.summary_rows(results, vs, reference=FULL_LABEL)
    title = (
        f"Ablation of the CoEL aspects on `{args.scenario}`: {budget['seeds']} seeds x "
        f"{budget['epochs']} epochs (mean ± 95% CI half-width; score vs {FULL_LABEL})"
    )
    config = {
        "study": "ablation",
        "scenario": args.scenario,
        **budget,
        "every": every,
        "variants": {v.label: {"overrides": dict(v.overrides), "note": v.note} for v in vs},
    }
    studies.write_outputs(out, rows, results, title, config, argv)
    studies.bar_figure(rows, out / "bars.png")
    print(studies.markdown(rows, title))
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
