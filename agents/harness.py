"""One evaluation harness for every policy: same scenario instances, same loop, same metrics.

:func:`run_episode` resets a fresh :class:`~coel_env.core.world.World` with a
seed, asks the policy for a plan before each epoch (timing the decision),
steps the world and scores the epoch with the environments' own reward
function (:func:`coel_env.core.rewards.reward_terms`), so returns of RL agents
and baselines are comparable number for number. :func:`summarize` turns
episodes into a row per policy: mean and 95% confidence half-width (Student t
over seeds) of every metric, and the return relative to a reference policy
(``milp-oracle`` by default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from agents.base import Policy, observe
from coel_env.core.plan import InfeasibilityReport, reuse_unchanged
from coel_env.core.rewards import RewardConfig, reward_terms, total_reward
from coel_env.core.world import EpochReport, World

#: Metrics reported per episode (and summarised per policy).
METRICS = (
    "return",
    "slo_attainment",
    "latency_p50_ms",
    "latency_p95_ms",
    "quality_loss",
    "dropped_share",
    "migration_gb",
    "energy_kj",
    "decision_ms",
    "invalid_epochs",
)


@dataclass
class EpisodeResult:
    """One policy on one seeded scenario instance."""

    policy: str
    sees: str
    seed: int
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {"policy": self.policy, "sees": self.sees, "seed": self.seed,
                "epochs": self.epochs, **self.metrics}  # fmt: skip


def play(
    world: World, epochs: int, policy: Policy | None = None, controller: int = 0
) -> Iterator[tuple[EpochReport, bool, float]]:
    """The episode loop every runner shares: step ``world`` (already reset, and
    ``policy`` with it) ``epochs`` times, asking ``policy`` for the plan before each
    epoch with the observation it is entitled to.

    Yields ``(report, invalid, decide_ms)`` per epoch: ``invalid`` when the policy's
    decision decoded to no plan (:class:`InfeasibilityReport`) or the world refused its
    plan (the plan in force then ran the epoch), ``decide_ms`` the policy's wall time.
    ``policy=None`` runs the plan in force (the world's naive plan) throughout.
    """
    for _ in range(epochs):
        plan, refused, ms = None, False, 0.0
        if policy is not None:
            obs = observe(policy, world, controller)
            t0 = time.perf_counter()
            plan = policy.act(world, obs)
            ms = (time.perf_counter() - t0) * 1000.0
            refused = isinstance(plan, InfeasibilityReport)  # the action decodes to no plan
            if refused:
                plan = None
            elif plan is not None:
                plan = reuse_unchanged(plan, world.plan)  # same plan: keep the cached costs
                if plan is world.plan:
                    plan = None
        rep = world.step(plan)
        yield rep, refused or not rep.feasible, ms


def run_episode(
    policy: Policy,
    scenario: str,
    seed: int,
    epochs: int,
    *,
    overrides: Mapping | None = None,
    reward_config: Mapping | None = None,
    controller: int = 0,
    world: World | None = None,
) -> EpisodeResult:
    """Run ``policy`` for ``epochs`` epochs on ``scenario`` reset with ``seed``.

    Args:
        policy: a :class:`~agents.base.Policy`.
        scenario: preset name or YAML path (ignored when ``world`` is given).
        seed: the episode seed (``World.reset(seed)``).
        epochs: epochs to run (>= 1).
        overrides: scenario overrides.
        reward_config: reward weights and references (other keys are ignored; defaults:
            :class:`~coel_env.core.rewards.RewardConfig`).
        controller: the server whose broadcast view ``sees="view"`` policies get.
        world: an already built world to reuse (it is reset here).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is not allowed; must be an integer >= 1")
    cfg = RewardConfig.from_config(reward_config).as_dict()
    w = world if world is not None else World(scenario, dict(overrides) if overrides else None)
    w.reset(seed)
    policy.reset(w, seed)
    ret = 0.0
    arrived = served = dropped = slo_met = 0
    q_sum = mig = energy = 0.0
    decide_ms = []
    invalid = 0
    lat_parts = []
    for rep, bad, ms in play(w, epochs, policy, controller):
        decide_ms.append(ms)
        invalid += bad
        ret += total_reward(reward_terms(rep, w, cfg, bad), cfg)
        arrived += rep.requests_arrived
        served += rep.requests_served
        dropped += rep.requests_dropped
        slo_met += rep.slo_met
        q_sum += rep.quality_loss * rep.requests_served
        mig += rep.migration_bytes
        energy += rep.energy_j
        lat_parts.append(w.last_latency_ms)
    lat = np.concatenate(lat_parts) if lat_parts else np.zeros(0)
    p50, p95 = np.percentile(lat, (50, 95)) if lat.size else (0.0, 0.0)
    metrics = {
        "return": ret,
        "slo_attainment": slo_met / arrived if arrived else 1.0,
        "latency_p50_ms": float(p50),
        "latency_p95_ms": float(p95),
        "quality_loss": q_sum / served if served else 0.0,
        "dropped_share": dropped / arrived if arrived else 0.0,
        "migration_gb": mig / 1e9,
        "energy_kj": energy / 1e3,
        "decision_ms": float(np.mean(decide_ms)),
        "invalid_epochs": float(invalid),
    }
    extra = {}
    last = getattr(policy, "last", None)
    if last is not None and hasattr(last, "status"):
        extra = {"solver_status": str(last.status), "solver_gap": getattr(last, "gap", None)}
    return EpisodeResult(policy.name, policy.sees, seed, epochs, metrics, extra)


#: The most seeds one command runs (one episode per seed and policy): a larger ``--seeds``
#: is a typo far more often than a plan.
MAX_SEEDS = 100_000


def seed_list(n: int, first: int = 0) -> list[int]:
    """Seeds ``first .. first + n - 1`` of ``--seeds N --first-seed K`` (checked: ``n``
    from 1 to :data:`MAX_SEEDS`, ``first`` >= 0). Seeds from 100 on are not behind any
    committed result, so they serve to choose settings without looking at the seeds of
    ``results/``."""
    for flag, v, low in (("--seeds", n, 1), ("--first-seed", first, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{flag} {v!r} is not allowed; must be an integer >= {low}")
    if n > MAX_SEEDS:
        raise ValueError(
            f"--seeds {n!r} is not allowed; must be at most {MAX_SEEDS:,} "
            "(one episode per seed and policy)"
        )
    return list(range(first, first + n))


def seeds_label(n: int, first: int = 0) -> str:
    """``"20 seeds"``, or ``"20 seeds (100-119)"`` when they do not start at 0."""
    return f"{n} seeds" if first == 0 else f"{n} seeds ({first}-{first + n - 1})"


def evaluate(
    policies: Iterable[Policy],
    scenario: str,
    seeds: Sequence[int],
    epochs: int,
    progress: bool | None = None,
    **kwargs,
) -> list[EpisodeResult]:
    """Every policy on every seed (a fresh world per episode, same instances for all).

    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).

    Raises:
        EvaluationInterrupted: on Ctrl-C (a ``KeyboardInterrupt``), holding the episodes
            finished so far, so that a command can keep them.
    """
    from tqdm import tqdm

    policies = list(policies)
    out: list[EpisodeResult] = []
    total = len(policies) * len(seeds)
    bar = tqdm(total=total, desc="evaluate", unit="episode",
               disable=None if progress is None else not progress, leave=False)  # fmt: skip
    with bar:
        try:
            for policy in policies:
                bar.set_postfix_str(policy.name)
                for seed in seeds:
                    out.append(run_episode(policy, scenario, int(seed), epochs, **kwargs))
                    bar.update(1)
        except EvaluationInterrupted:
            raise
        except KeyboardInterrupt:  # Ctrl-C: hand the finished episodes to the caller
            raise EvaluationInterrupted(out, total) from None
    return out


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`evaluate`, with what it had finished.

    Attributes:
        results: the episodes that finished before the interruption, in run order.
        planned: how many episodes :func:`evaluate` was asked for.
    """

    def __init__(self, results: list[EpisodeResult], planned: int) -> None:
        super().__init__(f"interrupted after {len(results)} of {planned} episodes")
        self.results = list(results)
        self.planned = int(planned)


def mean_ci95(x: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t; 0 for one value)."""
    a = np.asarray(x, float)
    if a.size < 2:
        return float(a.mean()) if a.size else math.nan, 0.0
    half = stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), float(half)


def summarize(results: Sequence[EpisodeResult], reference: str = "milp-oracle") -> list[dict]:
    """One row per policy: ``<metric>_mean`` and ``<metric>_ci95`` of every metric, and
    ``score`` = mean return / the reference policy's mean return (None without a
    positive reference)."""
    order: list[str] = []
    by: dict[str, list[EpisodeResult]] = {}
    for r in results:
        if r.policy not in by:
            order.append(r.policy)
        by.setdefault(r.policy, []).append(r)
    rows = []
    for name in order:
        eps = by[name]
        row = {"policy": name, "sees": eps[0].sees, "seeds": len(eps), "epochs": eps[0].epochs}
        for m in METRICS:
            mean, half = mean_ci95([e.metrics[m] for e in eps])
            row[f"{m}_mean"], row[f"{m}_ci95"] = mean, half
        rows.append(row)
    ref = next((r for r in rows if r["policy"] == reference), None)
    for r in rows:
        ok = ref is not None and ref["return_mean"] > 0
        r["score"] = r["return_mean"] / ref["return_mean"] if ok else None
    return rows


def episode_rows(results: Sequence[EpisodeResult]) -> list[dict]:
    return [r.row() for r in results]


def paired(rows: Sequence[Mapping], policy: str, metric: str = "return") -> list[dict]:
    """Seed-by-seed differences ``policy - other`` of ``metric`` from episode rows
    (:func:`episode_rows`, or an ``episodes.csv`` read back), one row per other policy:
    ``mean``, ``ci95`` (Student t over the shared seeds), ``ahead`` (seeds where
    ``policy`` is higher) and ``seeds``. The policies ran on the same seeded instances,
    so the differences are free of what the seeds have in common (how loaded each
    instance is), which makes most of the spread of the per-policy intervals."""
    by: dict[str, dict[int, float]] = {}
    for r in rows:
        if metric not in r:
            raise ValueError(f"no column {metric!r}; columns: {', '.join(r)}")
        by.setdefault(str(r["policy"]), {})[int(r["seed"])] = float(r[metric])
    if policy not in by:
        raise ValueError(f"no policy {policy!r}; policies: {', '.join(by)}")
    mine = by[policy]
    out = []
    for other, vals in by.items():
        seeds = sorted(set(mine) & set(vals))
        if other == policy or not seeds:
            continue
        diff = [mine[s] - vals[s] for s in seeds]
        mean, ci = mean_ci95(diff)
        out.append({"other": other, "mean": mean, "ci95": ci,
                    "ahead": sum(d > 0 for d in diff), "seeds": len(seeds)})  # fmt: skip
    return out


def paired_markdown(rows: Sequence[Mapping], policy: str, metric: str = "return") -> str:
    """:func:`paired` as a markdown table."""
    lines = [f"| {policy} - other | mean {metric} difference | 95% CI | seeds ahead |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for r in paired(rows, policy, metric):
        lines.append(f"| {r['other']} | {r['mean']:+.3f} | ±{r['ci95']:.3f} "
                     f"| {r['ahead']}/{r['seeds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


__all__ = ["METRICS", "EpisodeResult", "EvaluationInterrupted", "run_episode", "evaluate",
           "summarize", "mean_ci95", "episode_rows", "paired", "paired_markdown"]  # fmt: skip
