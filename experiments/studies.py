"""What the study scripts share: variants, their evaluation on the same instances, outputs.

A *variant* is a labelled policy on a scenario with its own overrides (a study
changes the policy, the scenario, or both). :func:`run_variants` runs every
variant for every seed through :mod:`agents.harness` (the baselines' loop and
metrics) and :func:`write_outputs` writes ``table.md``, ``table.csv``,
``episodes.csv``, ``config.yaml`` and ``command.txt`` into a new run folder
(:func:`new_out_dir`, never overwritten).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents import harness
from agents.baselines_cli import COLUMNS


@dataclass(frozen=True)
class Variant:
    """One row of a study.

    Attributes:
        label: the row's name in the table.
        make: builds a fresh :class:`~agents.base.Policy`.
        overrides: scenario overrides (dotted keys) on top of the study's.
        group: a column of the table (e.g. the swept value), '' for none.
        note: what the row removes or changes, in words.
    """

    label: str
    make: Callable[[], Any]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    group: str = ""
    note: str = ""


def new_out_dir(name: str, out_dir: Path | None) -> Path:
    """``out_dir`` if given and absent or empty, else a new ``runs/<name>-<time>``."""
    out = out_dir or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out-dir {str(out)!r} exists and is not empty; not overwritten")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_variants(
    variants: Sequence[Variant],
    scenario: str,
    seeds: Sequence[int],
    epochs: int,
    *,
    overrides: Mapping[str, Any] | None = None,
    reward_config: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> list[harness.EpisodeResult]:
    """Every variant on every seed (a fresh world per episode); results labelled."""
    from tqdm import tqdm

    from coel_env.envs import CoELEnv

    cfg = dict(reward_config or CoELEnv.default_config())
    out = []
    bar = tqdm(
        total=len(variants) * len(seeds),
        desc="study",
        unit="episode",
        disable=None if progress is None else not progress,
        leave=False,
    )
    with bar:
        for v in variants:
            bar.set_postfix_str(v.label)
            ov = {**(overrides or {}), **v.overrides}
            for seed in seeds:
                res = harness.run_episode(
                    v.make(), scenario, int(seed), epochs, overrides=ov or None, reward_config=cfg
                )
                res.policy = v.label
                out.append(res)
                bar.update(1)
    return out


def summary_rows(
    results: Sequence[harness.EpisodeResult], variants: Sequence[Variant], reference: str
) -> list[dict]:
    """:func:`agents.harness.summarize` rows with each variant's group and note; ``score``
    relative to the ``reference`` label."""
    rows = harness.summarize(results, reference=reference)
    by = {v.label: v for v in variants}
    for r in rows:
        v = by[r["policy"]]
        r["group"], r["note"] = v.group, v.note
    return rows


def markdown(rows: Sequence[dict], title: str, columns: Sequence[str] = COLUMNS) -> str:
    """A Markdown table: mean ± 95% CI half-width per metric, and the score."""
    grouped = any(r.get("group") for r in rows)
    head = (["group"] if grouped else []) + ["variant", "sees"] + list(columns) + ["score"]
    out = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ([str(r.get("group", ""))] if grouped else []) + [r["policy"], r["sees"]]
        cells += [f"{r[m + '_mean']:.4g} ± {r[m + '_ci95']:.2g}" for m in columns]
        cells.append("" if r["score"] is None else f"{r['score']:.3f}")
        out.append("| " + " | ".join(cells) + " |")
    notes = [f"- **{r['policy']}**: {r['note']}" for r in rows if r.get("note")]
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def _csv(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def resolve_budget(args, quick: Mapping[str, Any], full: Mapping[str, Any]) -> dict:
    """``quick`` or ``full`` (by ``args.quick``) with every key ``args`` sets (not None)."""
    budget = dict(quick if args.quick else full)
    for k in budget:
        if getattr(args, k, None) is not None:
            budget[k] = getattr(args, k)
    for k in ("seeds", "epochs"):
        if k in budget and budget[k] < 1:
            raise ValueError(f"--{k} {budget[k]!r} is not allowed; must be >= 1")
    if "seeds" in budget:
        harness.seed_list(budget["seeds"])  # at most harness.MAX_SEEDS, as every command
    return budget


def write_outputs(
    out: Path,
    rows: Sequence[dict],
    results: Sequence[harness.EpisodeResult],
    title: str,
    config: Mapping[str, Any],
    argv: Sequence[str] | None = None,
) -> None:
    """``table.md``, ``table.csv``, ``episodes.csv``, ``config.yaml``, ``command.txt``
    (the program from ``sys.argv[0]``, its arguments ``argv``, else ``sys.argv[1:]``)."""
    (out / "table.md").write_text(markdown(rows, title))
    _csv(out / "table.csv", rows)
    _csv(out / "episodes.csv", harness.episode_rows(results))
    (out / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    prog = Path(sys.argv[0])
    rest = list(argv if argv is not None else sys.argv[1:])
    if prog.parent.name == "experiments":  # no machine-specific paths
        cmd = ["python", f"experiments/{prog.name}", *rest]
    else:  # the console script or ``python -m coel_env.cli``
        cmd = ["coel", *rest]
    (out / "command.txt").write_text(" ".join(cmd) + "\n")


def bar_figure(rows: Sequence[dict], path: Path, metrics=("return", "slo_attainment")) -> None:
    """One bar chart per metric, a bar per row (with its 95% CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 0.45 * len(rows) + 1.5))
    labels = [r["policy"] for r in rows]
    for ax, m in zip(axes, metrics, strict=True):
        ax.barh(labels, [r[m + "_mean"] for r in rows], xerr=[r[m + "_ci95"] for r in rows])
        ax.set_xlabel(m)
        ax.invert_yaxis()
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "Variant",
    "resolve_budget",
    "new_out_dir",
    "run_variants",
    "summary_rows",
    "markdown",
    "write_outputs",
    "bar_figure",
]
