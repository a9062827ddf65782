"""Learning curves of a ``coel train`` run from its TensorBoard scalars, as one PNG.

    python experiments/tb_curve.py RUN_DIR OUT.png [--tags rollout/ep_rew_mean ...]

One panel per tag (default: SB3's mean training-episode return and length, and the
run's mean episode SLO attainment), x axis the training step. Reads every
``tb/run_*`` folder of the run (a resumed run appends one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TAGS = ("rollout/ep_rew_mean", "rollout/ep_len_mean", "coel/episode_slo_attainment")


def scalars(run: Path, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``tag`` over every ``tb/run_*`` folder of ``run``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pts: dict[int, float] = {}
    for d in sorted((run / "tb").glob("run_*")):
        acc = EventAccumulator(str(d))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            pts.update({s.step: s.value for s in acc.Scalars(tag)})
    steps = sorted(pts)
    return steps, [pts[s] for s in steps]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a coel train run folder (with tb/)")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--tags", nargs="+", default=list(TAGS))
    args = p.parse_args(argv)
    if not (args.run / "tb").is_dir():
        print(f"tb_curve: error: {args.run / 'tb'}: no such folder", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, MaxNLocator

    fig, axes = plt.subplots(1, len(args.tags), figsize=(4.2 * len(args.tags), 3.2))
    for ax, tag in zip(list(getattr(axes, "flat", [axes])), args.tags, strict=True):
        steps, vals = scalars(args.run, tag)
        if not steps:
            print(f"tb_curve: error: no scalar {tag!r} in {args.run / 'tb'}", file=sys.stderr)
            return 2
        ax.plot(steps, vals, lw=1.2)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, 1.5M: labels that fit
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.grid(alpha=0.3)
    fig.suptitle(args.run.name, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
