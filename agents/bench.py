"""The CoEL benchmark suite: scenarios where adapting pays, scored as RL research scores
benchmarks.

The suite (:data:`SUITE`) is four scenario presets, each built around one dynamic of
the world (``coel_env/data/scenarios/<name>.yaml`` documents what it tests and where
every number comes from), each with its episode length and its *reference* policy.
Every policy runs one whole episode per seed on every scenario, on the same seeded
instances (:mod:`agents.harness`), and its return is normalised per scenario:

    ``score = (return - naive) / (reference - naive)``

with ``naive`` and ``reference`` the mean returns of the world's naive plan and of the
scenario's reference policy over the same seeds (so 0 is the naive plan and 1 the
reference; both always run). Across the suite the scores are aggregated the way
Agarwal et al. (NeurIPS 2021) recommend and ``rliable`` implements: the interquartile
mean (IQM) and the mean over all (seed, scenario) runs, with stratified bootstrap 95%
intervals (seeds resampled within each scenario; a fixed bootstrap seed, so a table
is reproducible), the probability that one policy beats another on a scenario (with
its interval), and the performance profile (the share of runs above each score).

Policies are baselines by name (:func:`agents.registry.make_policy`), saved RL runs
(``run:PATH`` or a ``coel train`` run folder) or a multi-agent run (``ma:PATH``). A
policy whose observation or action shape does not fit a scenario (an RL policy trained
on another number of servers or models) is skipped there, with the reason in the
table; the aggregates then cover only the policies that ran on every scenario.

The MILP policies (``static``, ``static-homes``, ``milp-periodic``, ``milp-oracle``)
stop each solve at a deterministic limit (:attr:`MilpLimits.node_limit` branch-and-bound
nodes), so their rows do not depend on machine load; the wall-clock limit
(:attr:`MilpLimits.time_limit_s`) stays as a backstop, and a row in which it bound is
flagged in the table (rerun such rows and report their spread). They do depend on the
CPU: numpy picks its ``exp``/``log``/``power`` kernels by instruction set (AVX-512 or
not), and last-bit differences in the MILP's coefficients steer the branch and bound to
another incumbent, so on another kind of CPU a MILP episode moves as a rerun with
another seed would (docs/benchmark.md, "Reproducibility").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents import harness
from agents.base import Policy

#: The anchor of the normalised score (0): the world's own plan, deployed once.
ANCHOR = "naive"


@dataclass(frozen=True)
class SuiteTask:
    """One scenario of the suite.

    Attributes:
        scenario: the preset's name (``coel_env/data/scenarios/<scenario>.yaml``).
        epochs: the episode length [epochs]: every episode is a whole one.
        reference: the policy that scores 1: ``milp-oracle``, or the best baseline of the
            committed run where the MILP (stopped at its node limit, re-planning every
            epoch from what it sees) is not the best; ``results/suite/README.md`` says
            which, with the returns.
        tests: what the scenario tests, in a line.
    """

    scenario: str
    epochs: int
    reference: str
    tests: str


#: The suite. Episode lengths: 50 epochs of 10 s (the committed headline tables' length),
#: long enough for each dynamic to play out several times (the presets scale their rates
#: to it), short enough for the MILP rows on 20 seeds.
SUITE: tuple[SuiteTask, ...] = (
    SuiteTask("mobility", 50, "static-homes",
              "demand hot spots that move between areas of Melbourne's CBD (EUA sites "
              "and users): capacity has to follow the crowd"),
    SuiteTask("churn", 50, "greedy-oracle",
              "edge servers that leave and return and links that fail and recover: "
              "homes and experts lost with a server have to be replaced"),
    SuiteTask("diurnal", 50, "milp-periodic",
              "a day of load (trough to peak) with a task mix that moves which "
              "DeepSeek-V2-Lite experts are hot (ESFT routing)"),
    SuiteTask("tight-memory", 50, "milp-periodic",
              "a large MoE on edge GPUs: bit widths and GPU/host residency decide "
              "whether it fits and how fast it serves, as the load moves"),
)  # fmt: skip

#: The baselines of a suite run unless ``--policies`` says otherwise: every policy of
#: :func:`agents.registry.policy_names` that decides differently (the ``-oracle``
#: variants of the simple rules decide as their view versions on these scenarios
#: except greedy's).
DEFAULT_POLICIES = (
    "random", "naive", "lru", "fiddler", "greedy", "greedy-oracle", "static",
    "static-homes", "milp-periodic", "milp-oracle",
)  # fmt: skip

#: The MILP policies (their solves take :class:`MilpLimits`).
MILP_NAMES = ("static", "static-homes", "milp-periodic", "milp-oracle")


@dataclass(frozen=True)
class MilpLimits:
    """How long the MILP policies' solves may run.

    Attributes:
        node_limit: HiGHS branch-and-bound nodes per solve (deterministic on one kind of
            CPU: the plan does not depend on the machine's load or speed, but last-bit
            differences between CPUs' numpy kernels can change it); None: the
            wall-clock limit alone (the policies' own behaviour, 5 s per solve).
        time_limit_s: the wall-clock limit per solve [s], a backstop under a node limit.
    """

    node_limit: int | None = 100
    time_limit_s: float = 120.0

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`agents.registry.make_policy` for a MILP policy."""
        from agents.milp import MilpConfig

        if self.node_limit is None:
            return {"time_limit_s": float(self.time_limit_s)}
        return {"config": MilpConfig(node_limit=int(self.node_limit)),
                "time_limit_s": float(self.time_limit_s)}  # fmt: skip

    def label(self) -> str:
        if self.node_limit is None:
            return f"wall-clock limit {self.time_limit_s:g} s per solve (not reproducible)"
        return (f"{self.node_limit} branch-and-bound nodes per solve (deterministic per CPU kind), "
                f"wall-clock backstop {self.time_limit_s:g} s")  # fmt: skip


def suite_tasks(names: Sequence[str] | None = None) -> list[SuiteTask]:
    """The suite's tasks, all or those named (in the suite's order).

    Raises:
        ValueError: a name that is not a suite scenario (naming ``--scenarios``, the
            value and the allowed names), or an empty list.
    """
    known = {t.scenario: t for t in SUITE}
    if names is None:
        return list(SUITE)
    names = [n for n in names]
    if not names:
        raise ValueError(f"--scenarios is empty; allowed: {', '.join(known)}")
    for n in names:
        if n not in known:
            raise ValueError(
                f"--scenarios {n!r} is not a suite scenario; allowed: {', '.join(known)}"
            )
    return [t for t in SUITE if t.scenario in names]


# ------------------------------------------------------------------ policies


@dataclass
class PolicySpec:
    """A policy of the command line: a baseline name, ``run:PATH`` (or a run folder),
    ``sample:PATH`` (a ``CoEL-Graph-v0`` run whose edits are drawn from the masked policy,
    seeded by each episode's seed, as ``coel evaluate --stochastic``) or ``ma:PATH``.

    Attributes:
        text: as given.
        kind: ``"baseline"``, ``"rl"`` or ``"ma"``.
        name: the name its rows carry (a run by ``rl:<folder>``, as ``coel compare``;
            a sampled one by ``rl:<folder>:sampled``).
        path: the run folder or model zip (RL and multi-agent runs).
    """

    text: str
    kind: str
    name: str
    path: Path | None = None
    _loaded: object = field(default=None, repr=False)


def parse_policies(text: str | Sequence[str]) -> list[PolicySpec]:
    """Policy specs from ``--policies`` (comma-separated, or a list).

    Raises:
        ValueError: an empty list, a name that is neither a known baseline nor a run
            (naming the known ones and the run forms), a run path that does not exist, or
            a policy given twice.
    """
    from agents.registry import policy_names

    items = text.split(",") if isinstance(text, str) else list(text)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ValueError("--policies is empty; name baselines and/or runs (run:PATH)")
    known = policy_names()
    out: list[PolicySpec] = []
    for s in items:
        if s.startswith("ma:"):
            path = Path(s[3:])
            _need_path(s, path)
            out.append(PolicySpec(s, "ma", f"ma:{path.name}", path))
        elif s.startswith(("run:", "sample:")) or (s not in known and Path(s).is_dir()):
            form, _, rest = s.partition(":") if s.startswith(("run:", "sample:")) else ("", "", s)
            path = Path(rest)
            _need_path(s, path)
            name = f"rl:{(path.parent if path.is_file() else path).name}"
            out.append(PolicySpec(s, "rl", name + (":sampled" if form == "sample" else ""), path))
        elif s in known:
            out.append(PolicySpec(s, "baseline", s))
        else:
            raise ValueError(
                f"--policies {s!r} is not a known policy or run; known policies: "
                f"{', '.join(known)}; a saved RL run: run:PATH (a coel train run folder or "
                "model zip), a CoEL-Graph-v0 run drawing its edits: sample:PATH, a "
                "multi-agent run: ma:PATH"
            )
    names = [p.name for p in out]
    for n in names:
        if names.count(n) > 1:
            raise ValueError(f"--policies names {n!r} twice")
    return out


def _need_path(text: str, path: Path) -> None:
    if not path.exists():
        raise ValueError(f"--policies {text!r}: {str(path)!r} does not exist")


def _rl_policy(spec: PolicySpec):
    if spec._loaded is None:
        if spec.kind == "ma":
            from agents.multiagent import load_ma_policy

            spec._loaded = load_ma_policy(spec.path)
        else:
            from agents.evaluate_cli import load_rl_policy

            sampled = spec.text.startswith("sample:")
            spec._loaded = load_rl_policy(spec.path, None, False, spec.name, sampled)[0]
    return spec._loaded


def policy_for(spec: PolicySpec, world, limits: MilpLimits) -> tuple[Policy | None, str]:
    """``(policy, "")`` ready to run on ``world``'s scenario, or ``(None, why)`` when its
    shape does not fit it (an RL policy trained on another number of servers or models)."""
    from agents.registry import make_policy

    if spec.kind == "baseline":
        kw = limits.kwargs() if spec.name in MILP_NAMES else {}
        return make_policy(spec.name, **kw), ""
    pol = _rl_policy(spec)
    try:
        world.reset(0)
        pol.reset(world, 0)  # checks the observation and action shapes against the world
    except ValueError as exc:
        return None, str(exc)
    return pol, ""


# ------------------------------------------------------------------ running


@dataclass
class SuiteRun:
    """What a suite run produced.

    Attributes:
        episodes: one row per (scenario, policy, seed) with every metric of
            :data:`agents.harness.METRICS`, and ``solves`` (the MILP's solve statuses).
        skipped: ``(scenario, policy, why)`` for every policy that did not fit.
        tasks: the scenarios run.
        policies: the policy names, in order (anchor and references first when not
            asked for).
        seeds: the seeds.
        limits: the MILP limits.
        fingerprints: ``"<scenario> | <policy>"``: its :func:`fingerprint`.
        ran: episodes run (the others were reused; -1: not said).
    """

    episodes: list[dict]
    skipped: list[tuple[str, str, str]]
    tasks: list[SuiteTask]
    policies: list[str]
    seeds: list[int]
    limits: MilpLimits
    fingerprints: dict[str, str] = field(default_factory=dict)
    ran: int = -1


def run_suite(
    specs: Sequence[PolicySpec],
    tasks: Sequence[SuiteTask],
    seeds: Sequence[int],
    *,
    limits: MilpLimits | None = None,
    progress: bool | None = None,
    epochs: int | None = None,
    jobs: int = 1,
    reuse: Sequence[Path] = (),
) -> SuiteRun:
    """Every policy on every scenario and seed (the anchor and each scenario's reference
    are added when missing: the scores need them; a reference added so runs only on the
    scenarios it is the reference of, and is skipped on the others with that reason).

    Args:
        specs: from :func:`parse_policies`.
        tasks: from :func:`suite_tasks`.
        seeds: episode seeds.
        limits: MILP limits (default :class:`MilpLimits`).
        progress: a tqdm bar on stderr (None: only on a terminal).
        epochs: every episode's length instead of the suite's (for quick checks; scores
            of such a run are not the suite's).
        jobs: worker processes; the episodes are independent and seeded, so the rows
            are the same (and in the same order) for any number.
        reuse: folders of earlier suite runs: an episode they hold of the same scenario,
            policy, seed, episode length and MILP limits (same :func:`fingerprint`) is
            taken from there, not run again (:func:`reusable_rows`).

    Raises:
        harness.EvaluationInterrupted: on Ctrl-C, with the finished episodes' rows
            (:func:`episode_row`; with ``jobs`` > 1 those of the finished chunks).
        ValueError: a scenario that cannot be built (its data files missing: set
            ``COEL_DATA``).
    """
    from tqdm import tqdm

    from coel_env.core.world import World

    limits = limits or MilpLimits()
    specs = list(specs)
    given = {s.name for s in specs}
    extra = [ANCHOR] + [t.reference for t in tasks]
    for name in dict.fromkeys(extra):
        if name not in given:
            specs.append(PolicySpec(name, "baseline", name))
    # a reference not asked for runs only where it is the reference (the anchor everywhere)
    only = {n: {t.scenario for t in tasks if t.reference == n}
            for n in dict.fromkeys(extra) if n not in given and n != ANCHOR}  # fmt: skip
    worlds = {t.scenario: _world(World, t.scenario) for t in tasks}
    plan: list[tuple[SuiteTask, PolicySpec, Policy]] = []
    skipped: list[tuple[str, str, str]] = []
    for t in tasks:
        for spec in specs:
            if spec.name in only and t.scenario not in only[spec.name]:
                why = "not asked for: runs only as the reference of "
                skipped.append((t.scenario, spec.name, why + ", ".join(sorted(only[spec.name]))))
                continue
            pol, why = policy_for(spec, worlds[t.scenario], limits)
            if pol is None:
                skipped.append((t.scenario, spec.name, why))
            else:
                plan.append((t, spec, pol))
    prints = {(t.scenario, spec.name): fingerprint(t, spec, limits, epochs)
              for t, spec, _ in plan}  # fmt: skip
    reuse = reusable_rows(reuse, prints)
    todo = [(t, spec, pol, [int(x) for x in seeds if (t.scenario, spec.name, int(x)) not in reuse])
            for t, spec, pol in plan]  # fmt: skip
    todo = [u for u in todo if u[3]]
    total = sum(len(u[3]) for u in todo)
    bar = tqdm(total=total, desc="bench", unit="episode",
               disable=None if progress is None else not progress)  # fmt: skip
    new: list[dict] = []
    with bar:
        try:
            if jobs > 1:
                new = _run_parallel(todo, limits, epochs, jobs, bar)
            else:
                for t, spec, pol, mine in todo:
                    bar.set_postfix_str(f"{t.scenario} {spec.name}")
                    n = t.epochs if epochs is None else epochs
                    for seed in mine:
                        res = harness.run_episode(pol, t.scenario, int(seed), n,
                                                  world=worlds[t.scenario])  # fmt: skip
                        new.append(episode_row(t.scenario, spec.name, res, pol))
                        bar.update(1)
        except _Interrupted as stop:
            raise harness.EvaluationInterrupted(stop.rows, total) from None
        except KeyboardInterrupt:
            raise harness.EvaluationInterrupted(new, total) from None
    ran = {(r["scenario"], r["policy"], int(r["seed"])): r for r in new}
    keys = [(t.scenario, spec.name, int(x)) for t, spec, _ in plan for x in seeds]
    rows = [ran.get(k) or reuse[k] for k in keys]
    return SuiteRun(rows, skipped, list(tasks), [s.name for s in specs], list(seeds), limits,
                    {f"{k[0]} | {k[1]}": v for k, v in prints.items()}, len(new))  # fmt: skip


#: The file of a suite run that says what its episodes are of (``--reuse``).
FINGERPRINTS = "fingerprints.yml"


def fingerprint(task: SuiteTask, spec: PolicySpec, limits: MilpLimits, epochs: int | None) -> str:
    """What an episode of ``spec`` on ``task`` depends on besides its seed and the code:
    SHA-256 of the scenario's resolved config (data paths relative to ``$COEL_DATA``), the
    episode length, the policy's name, the MILP limits (MILP policies) and the bytes of
    a saved run's files (RL and multi-agent runs)."""
    import hashlib

    import yaml

    from coel_env.core.scenario import data_root, load_scenario, scenario_dict

    text = yaml.safe_dump(scenario_dict(load_scenario(task.scenario)), sort_keys=True)
    try:
        text = text.replace(str(data_root()), "${COEL_DATA}")
    except ValueError:  # no data set in use
        pass
    h = hashlib.sha256(text.encode())
    n = task.epochs if epochs is None else epochs
    h.update(f"|epochs={n}|{spec.kind}:{spec.name}".encode())
    if spec.kind == "baseline" and spec.name in MILP_NAMES:
        h.update(f"|nodes={limits.node_limit}|clock={limits.time_limit_s!r}".encode())
    if spec.path is not None:
        root = Path(spec.path)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            h.update(f"|{f.relative_to(root) if f != root else f.name}|".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _cell(text: str):
    """A CSV cell of ``episodes.csv`` back to the value :func:`episode_row` gave it."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def reusable_rows(
    folders: Sequence[Path], prints: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str, int], dict]:
    """The episodes of earlier suite runs in ``folders`` whose (scenario, policy) has the
    fingerprint ``prints`` gives, by (scenario, policy, seed); the first folder that
    holds an episode wins.

    Raises:
        ValueError: a folder that is not a finished suite run (no ``episodes.csv``,
            ``timing.csv`` or ``fingerprints.yml``), naming ``--reuse`` and the file.
    """
    import csv

    import yaml

    out: dict[tuple[str, str, int], dict] = {}
    for folder in folders:
        folder = Path(folder)
        need = [folder / n for n in ("episodes.csv", "timing.csv", FINGERPRINTS)]
        for f in need:
            if not f.is_file():
                raise ValueError(
                    f"--reuse {str(folder)!r}: {f.name} is missing; a finished coel bench "
                    f"run folder holds it (runs made before {FINGERPRINTS} existed cannot "
                    "be reused: nothing says which scenarios and policies they ran)"
                )
        theirs = yaml.safe_load(need[2].read_text()) or {}
        with need[1].open(newline="", encoding="utf-8") as f:
            times = {(r["scenario"], r["policy"], int(r["seed"])): float(r["decision_ms"])
                     for r in csv.DictReader(f)}  # fmt: skip
        with need[0].open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                key = (r["scenario"], r["policy"], int(r["seed"]))
                want = prints.get(key[:2])
                if key in out or want is None or theirs.get(f"{key[0]} | {key[1]}") != want:
                    continue
                row = {k: _cell(v) for k, v in r.items() if v != ""}
                row["decision_ms"] = times[key]
                out[key] = row
    return out


#: Seeds per unit of work of a parallel run.
CHUNK = 5


class _Interrupted(KeyboardInterrupt):
    def __init__(self, rows: list[dict]) -> None:
        super().__init__("interrupted")
        self.rows = rows


def _run_parallel(todo, limits, epochs, jobs, bar) -> list[dict]:
    """The episodes of ``todo`` ((task, spec, policy, seeds) each) in ``jobs`` processes,
    in chunks of :data:`CHUNK` seeds; the rows in the serial order."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    units = []
    for i, (t, spec, _, seeds) in enumerate(todo):
        n = t.epochs if epochs is None else epochs
        for k in range(0, len(seeds), CHUNK):
            part = [int(s) for s in seeds[k : k + CHUNK]]
            units.append(((i, k), t.scenario, n, (spec.text, spec.kind, spec.name, spec.path),
                          limits, part))  # fmt: skip
    done: dict[tuple[int, int], list[dict]] = {}
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"))
    try:
        futures = {pool.submit(_unit, *u[1:]): u[0] for u in units}
        for f in as_completed(futures):
            done[futures[f]] = f.result()
            bar.update(len(done[futures[f]]))
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise _Interrupted([r for key in sorted(done) for r in done[key]]) from None
    pool.shutdown()
    return [r for key in sorted(done) for r in done[key]]


def _unit(scenario: str, epochs: int, spec: tuple, limits: MilpLimits, seeds: list[int]):
    """A worker's chunk: one policy on one scenario for a few seeds (its rows)."""
    from coel_env.core.world import World

    world = World(scenario)
    ps = PolicySpec(*spec)
    pol, why = policy_for(ps, world, limits)
    if pol is None:  # checked before the run; a worker sees the same shapes
        raise ValueError(why)
    out = []
    for seed in seeds:
        res = harness.run_episode(pol, scenario, seed, epochs, world=world)
        out.append(episode_row(scenario, ps.name, res, pol))
    return out


def _world(world_cls, scenario: str):
    try:
        return world_cls(scenario)
    except ValueError as exc:
        from coel_env.core.scenario import DATA_VAR, uses_data

        if uses_data(scenario):
            raise ValueError(
                f"scenario {scenario!r} reads public data sets that are not there ({exc}); "
                f"set {DATA_VAR} to the folder holding them (docs/data.md says where to get them) "
                "or leave the scenario out with --scenarios"
            ) from None
        raise


def episode_row(scenario: str, name: str, res: harness.EpisodeResult, policy) -> dict:
    """One episode as a row: scenario, policy, seed, epochs, every metric and, for MILP
    policies, how many solves stopped at the optimum, the node limit and the clock."""
    row = {"scenario": scenario, "policy": name, "seed": res.seed, "epochs": res.epochs,
           **res.metrics}  # fmt: skip
    hist = getattr(policy, "history", None)
    if hist is not None:
        st = [h.status for h in hist]
        row["solves_optimal"] = st.count("optimal")
        row["solves_node_limit"] = st.count("node_limit")
        row["solves_time_limit"] = st.count("time_limit")
    return row


# ------------------------------------------------------------------ scores


def normalised_scores(
    episodes: Sequence[Mapping], tasks: Sequence[SuiteTask]
) -> tuple[dict[str, dict[str, dict[int, float]]], dict[str, str]]:
    """``({scenario: {policy: {seed: score}}}, {scenario: why undefined})`` with
    ``score = (return - naive) / (reference - naive)`` (the anchors: mean returns over
    the scenario's seeds). A scenario whose reference is not above the anchor (a quick
    run with a few epochs, say) has no score: NaN, with the reason in the second dict.

    Raises:
        ValueError: a scenario without the anchor's or the reference's episodes.
    """
    out: dict[str, dict[str, dict[int, float]]] = {}
    undefined: dict[str, str] = {}
    for t in tasks:
        rows = [r for r in episodes if r["scenario"] == t.scenario]
        by: dict[str, dict[int, float]] = {}
        for r in rows:
            by.setdefault(str(r["policy"]), {})[int(r["seed"])] = float(r["return"])
        for need in (ANCHOR, t.reference):
            if need not in by:
                raise ValueError(f"scenario {t.scenario!r}: no episodes of {need!r}")
        lo = float(np.mean(list(by[ANCHOR].values())))
        hi = float(np.mean(list(by[t.reference].values())))
        if not hi > lo:
            undefined[t.scenario] = (
                f"the reference {t.reference!r} ({hi:.3f}) is not above {ANCHOR!r} "
                f"({lo:.3f}): no normalised score"
            )
            out[t.scenario] = {p: dict.fromkeys(d, math.nan) for p, d in by.items()}
            continue
        out[t.scenario] = {p: {s: (v - lo) / (hi - lo) for s, v in d.items()}
                           for p, d in by.items()}  # fmt: skip
    return out, undefined


def score_matrices(
    scores: Mapping[str, Mapping[str, Mapping[int, float]]], tasks: Sequence[SuiteTask]
) -> dict[str, np.ndarray]:
    """``{policy: [n_seeds, n_scenarios]}`` for the policies that ran on every scenario
    with the same seeds (rliable's layout: runs x tasks)."""
    names = None
    for t in tasks:
        here = set(scores[t.scenario])
        names = here if names is None else names & here
    out = {}
    for p in sorted(names or ()):
        seeds = [sorted(scores[t.scenario][p]) for t in tasks]
        if any(s != seeds[0] for s in seeds):
            continue
        out[p] = np.array([[scores[t.scenario][p][s] for t in tasks] for s in seeds[0]])
    return out


#: Bootstrap resamples of the interval estimates, and their fixed seed.
REPS = 2000
BOOTSTRAP_SEED = 0


def stratified_bootstrap(
    data: Mapping[str, tuple[np.ndarray, ...]], func, reps: int = REPS, seed: int = BOOTSTRAP_SEED
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Point estimates and percentile 95% intervals of ``func(*arrays)`` for each entry
    of ``data`` (arrays ``[runs, tasks]``), resampling the runs within each task (the
    stratified bootstrap of Agarwal et al. 2021, as ``rliable.library``'s
    ``StratifiedBootstrap``). Done here rather than through ``rliable.library``, whose
    seed goes through ``arch``, which takes it under another name from arch 8 on: a
    seeded generator makes the intervals the same on every run.

    Returns:
        ``({key: point}, {key: [low, high]})`` (``[2, ...]`` for a vector ``func``).
    """
    rng = np.random.default_rng(seed)
    point, ci = {}, {}
    for key, arrays in data.items():
        arrays = tuple(np.asarray(a, float) for a in arrays)
        point[key] = np.asarray(func(*arrays))
        n, k = arrays[0].shape
        samples = []
        for _ in range(reps):
            idx = rng.integers(n, size=(n, k))  # a resample of the runs of each task
            cols = np.arange(k)[None, :]
            samples.append(func(*(a[idx, cols] for a in arrays)))
        ci[key] = np.percentile(np.asarray(samples), [2.5, 97.5], axis=0)
    return point, ci


def aggregates(matrices: Mapping[str, np.ndarray], reps: int = REPS) -> dict[str, dict]:
    """IQM and mean of each policy's scores with stratified bootstrap 95% intervals
    (the statistics are ``rliable.metrics``'): ``{policy: {"iqm": (point, low, high),
    "mean": (...)}}``."""
    from rliable import metrics

    def func(x):
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    point, ci = stratified_bootstrap({p: (m,) for p, m in matrices.items()}, func, reps)
    return {p: {"iqm": (float(point[p][0]), float(ci[p][0, 0]), float(ci[p][1, 0])),
                "mean": (float(point[p][1]), float(ci[p][0, 1]), float(ci[p][1, 1]))}
            for p in matrices}  # fmt: skip


def improvement(
    matrices: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]], reps: int = REPS
) -> dict[tuple[str, str], tuple[float, float, float]]:
    """P(X > Y) for each pair (the probability that X's score beats Y's on a scenario,
    ties counting half, averaged over the scenarios: ``rliable.metrics``'
    ``probability_of_improvement``) with a stratified bootstrap 95% interval."""
    from rliable import metrics

    if not pairs:
        return {}
    data = {f"{x},{y}": (matrices[x], matrices[y]) for x, y in pairs}
    point, ci = stratified_bootstrap(data, metrics.probability_of_improvement, reps)
    return {(x, y): (float(point[f"{x},{y}"]), float(ci[f"{x},{y}"][0]),
                     float(ci[f"{x},{y}"][1])) for x, y in pairs}  # fmt: skip


def performance_profile(
    matrices: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = REPS // 4
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The share of runs whose score exceeds each ``tau`` (the run-score distribution's
    tail, as ``rliable.library.create_performance_profile``) with stratified bootstrap
    95% bands."""

    def func(x):
        return np.array([(x > t).mean() for t in taus])

    return stratified_bootstrap({p: (m,) for p, m in matrices.items()}, func, reps)


#: Score thresholds of the performance profile.
TAUS = np.linspace(-1.0, 1.5, 51)


def plots(matrices: Mapping[str, np.ndarray], agg: Mapping[str, dict],
          prob: Mapping[tuple[str, str], tuple], folder: Path) -> list[str]:  # fmt: skip
    """``performance_profile.png``, ``aggregates.png`` and (with pairs)
    ``improvement.png`` in ``folder``; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    written = []
    names = sorted(matrices, key=lambda p: -agg[p]["iqm"][0])
    prof, prof_ci = performance_profile({p: matrices[p] for p in names}, TAUS)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    plot_utils.plot_performance_profiles(
        prof, TAUS, performance_profile_cis=prof_ci, ax=ax,
        colors=dict(zip(names, plt.cm.tab10.colors * 3, strict=False)),
        xlabel=r"normalised score $\tau$", ylabel=r"share of runs with score $> \tau$",
    )  # fmt: skip
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=7, loc="upper right")  # the lines carry the names
    fig.tight_layout()
    fig.savefig(folder / "performance_profile.png")
    plt.close(fig)
    written.append("performance_profile.png")
    point = {p: np.array([agg[p]["iqm"][0], agg[p]["mean"][0]]) for p in names}
    ci = {p: np.array([[agg[p]["iqm"][1], agg[p]["mean"][1]],
                       [agg[p]["iqm"][2], agg[p]["mean"][2]]]) for p in names}  # fmt: skip
    fig, _ = plot_utils.plot_interval_estimates(
        point, ci, metric_names=["IQM", "mean"], algorithms=names[::-1],
        xlabel_y_coordinate=-0.3 / max(1.0, len(names) / 4),
        colors=dict(zip(names, plt.cm.tab10.colors * 3, strict=False)),
        xlabel="normalised score",
    )  # fmt: skip
    fig.savefig(folder / "aggregates.png", bbox_inches="tight", dpi=90)
    plt.close(fig)
    written.append("aggregates.png")
    if prob:
        est = {f"{x},{y}": v[0] for (x, y), v in prob.items()}
        cis = {f"{x},{y}": np.array([v[1], v[2]]) for (x, y), v in prob.items()}
        ax = plot_utils.plot_probability_of_improvement(est, cis, figsize=(5, 0.4 * len(est) + 1))
        ax.figure.savefig(folder / "improvement.png", bbox_inches="tight", dpi=90)
        plt.close(ax.figure)
        written.append("improvement.png")
    return written


# ------------------------------------------------------------------ tables


def _fmt_ci(mean: float, half: float) -> str:
    return f"{mean:.2f} ± {half:.2f}"


def table_markdown(
    run: SuiteRun,
    scores,
    matrices,
    agg,
    prob,
    command: str,
    undefined: Mapping[str, str] | None = None,
) -> str:
    """The suite table: per-scenario returns and scores, the aggregates, the probability
    of improvement, skipped policies and the MILP solves. Holds no timings, so a rerun
    reproduces it byte for byte where no solve hit the wall clock."""
    tasks = run.tasks
    names = [p for p in run.policies if any(p in scores[t.scenario] for t in tasks)]
    lines = [
        "# CoEL benchmark suite",
        "",
        f"Command: `{command}`",
        "",
        f"{len(run.seeds)} seeds ({run.seeds[0]}-{run.seeds[-1]}), one whole episode per "
        "seed, policy and scenario, on the same seeded instances. Score per scenario: "
        f"`(return - {ANCHOR}) / (reference - {ANCHOR})` with the anchors' mean returns "
        "over these seeds. MILP limits: " + run.limits.label() + ".",
        "",
        "| scenario | epochs | reference | what it tests |",
        "|---|---:|---|---|",
    ]
    ran = {r["scenario"]: int(r["epochs"]) for r in run.episodes}
    lines += [f"| `{t.scenario}` | {ran.get(t.scenario, t.epochs)} | `{t.reference}` | {t.tests} |"
              for t in tasks]  # fmt: skip
    lines += ["", "## Returns (mean ± 95% CI half-width over seeds)", ""]
    head = "| policy | " + " | ".join(f"`{t.scenario}`" for t in tasks) + " |"
    lines += [head, "|---|" + "---:|" * len(tasks)]
    rets = _returns(run.episodes)
    for p in names:
        cells = []
        for t in tasks:
            v = rets.get((t.scenario, p))
            cells.append("skipped" if v is None else _fmt_ci(*harness.mean_ci95(v)))
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += ["", "## Normalised scores (mean over seeds)", ""]
    lines += [head, "|---|" + "---:|" * len(tasks)]
    for p in names:
        cells = []
        for t in tasks:
            d = scores[t.scenario].get(p)
            if d is None:
                cells.append("skipped")
            else:
                v = float(np.mean(list(d.values())))
                cells.append(f"{v:.3f}" if math.isfinite(v) else "n/a")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    for sc, why in (undefined or {}).items():
        lines += ["", f"`{sc}`: {why}; left out of the aggregates."]
    lines += ["", "## Across the suite (stratified bootstrap 95% intervals, "
              f"{REPS} resamples, seed {BOOTSTRAP_SEED})", ""]  # fmt: skip
    if agg:
        lines += ["| policy | IQM | 95% CI | mean | 95% CI |", "|---|---:|---|---:|---|"]
        for p in sorted(agg, key=lambda q: -agg[q]["iqm"][0]):
            i, m = agg[p]["iqm"], agg[p]["mean"]
            lines.append(f"| {p} | {i[0]:.3f} | [{i[1]:.3f}, {i[2]:.3f}] | {m[0]:.3f} "
                         f"| [{m[1]:.3f}, {m[2]:.3f}] |")  # fmt: skip
        missing = [p for p in names if p not in agg]
        if missing:
            lines += ["", "Not aggregated (skipped on a scenario): " + ", ".join(missing) + "."]
    else:
        lines.append("No policy ran on every scenario: no aggregate.")
    if prob:
        lines += ["", "## Probability of improvement P(X > Y) (95% CI)", "",
                  "| X | Y | P(X > Y) | 95% CI |", "|---|---|---:|---|"]  # fmt: skip
        for (x, y), v in prob.items():
            lines.append(f"| {x} | {y} | {v[0]:.3f} | [{v[1]:.3f}, {v[2]:.3f}] |")
    if run.skipped:
        lines += ["", "## Skipped", "", "| scenario | policy | why |", "|---|---|---|"]
        for s, p, why in run.skipped:
            lines.append(f"| `{s}` | {p} | {' '.join(why.split())} |")
    solves = _solves(run.episodes)
    if solves:
        lines += ["", "## MILP solves (optimal / stopped at the node limit / at the clock)", "",
                  "| scenario | policy | optimal | node limit | clock |",
                  "|---|---|---:|---:|---:|"]  # fmt: skip
        for (s, p), (o, n, c) in solves.items():
            flag = " (clock-bound: rerun and report the spread)" if c else ""
            lines.append(f"| `{s}` | {p} | {o} | {n} | {c}{flag} |")
    return "\n".join(lines) + "\n"


def _returns(episodes) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for r in episodes:
        out.setdefault((r["scenario"], r["policy"]), []).append(float(r["return"]))
    return out


def _solves(episodes) -> dict[tuple[str, str], tuple[int, int, int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for r in episodes:
        if "solves_optimal" in r and r.get("solves_optimal") not in (None, ""):
            acc = out.setdefault((r["scenario"], r["policy"]), [0, 0, 0])
            acc[0] += int(r["solves_optimal"])
            acc[1] += int(r["solves_node_limit"])
            acc[2] += int(r["solves_time_limit"])
    return {k: tuple(v) for k, v in out.items()}


def score_rows(run: SuiteRun, scores) -> list[dict]:
    """``scores.csv``: scenario, policy, seed, return and normalised score."""
    out = []
    for r in run.episodes:
        s = scores[r["scenario"]][r["policy"]][int(r["seed"])]
        out.append({"scenario": r["scenario"], "policy": r["policy"], "seed": r["seed"],
                    "epochs": r["epochs"], "return": r["return"], "score": s})  # fmt: skip
    return out


def improvement_pairs(agg: Mapping[str, dict]) -> list[tuple[str, str]]:
    """The pairs whose probability of improvement is reported: the top policy by IQM
    against every other aggregated policy."""
    if len(agg) < 2:
        return []
    order = sorted(agg, key=lambda p: -agg[p]["iqm"][0])
    return [(order[0], q) for q in order[1:]]


# ------------------------------------------------------------------ headroom

#: The headroom a suite scenario must leave (issue 18): the never-updated ``static``
#: plan at most 85% of the best policy, the naive plan at most 70%, and the best policy
#: at least 5% above ``greedy``.
HEADROOM = {"static": 0.85, "naive": 0.70, "greedy": 1 / 1.05}
#: The floor of the ratios when a return is not positive: ``random``.
FLOOR = "random"


@dataclass(frozen=True)
class Headroom:
    """How much room a scenario leaves above its simple policies.

    Attributes:
        scenario: the scenario.
        best: the policy with the highest mean return.
        basis: ``"return"`` (ratios of mean returns, all positive) or ``"random"``
            (ratios of ``(return - random) / (best - random)``: some return is not
            positive, where a ratio of returns means nothing).
        ratios: ``{"static": x, "naive": x, "greedy": x}``, each policy's share of the
            best's (on ``basis``).
        means: every policy's mean return.
        seeds: the seeds behind the means.
    """

    scenario: str
    best: str
    basis: str
    ratios: dict[str, float]
    means: dict[str, float]
    seeds: int

    @property
    def met(self) -> dict[str, bool]:
        """Which of :data:`HEADROOM` hold."""
        return {k: self.ratios[k] <= HEADROOM[k] for k in HEADROOM}


def headroom(episodes: Sequence[Mapping], scenario: str) -> Headroom:
    """The :class:`Headroom` of ``scenario`` from episode rows (``episodes.csv`` of a
    ``coel bench`` run, or :attr:`SuiteRun.episodes`), over every policy in them.

    Raises:
        ValueError: rows without ``static``, ``naive`` or ``greedy`` on the scenario, or
            with a non-positive return and no ``random`` to anchor the ratios.
    """
    by: dict[str, list[float]] = {}
    for r in episodes:
        if r["scenario"] == scenario:
            by.setdefault(str(r["policy"]), []).append(float(r["return"]))
    for need in HEADROOM:
        if need not in by:
            raise ValueError(f"scenario {scenario!r}: no episodes of {need!r}")
    means = {p: float(np.mean(v)) for p, v in by.items()}
    best = max(means, key=means.get)
    look = [means[p] for p in (*HEADROOM, best)]
    if min(look) > 0:
        basis, lo = "return", 0.0
    else:
        if FLOOR not in means:
            raise ValueError(
                f"scenario {scenario!r}: a return is not positive, and the ratios need "
                f"{FLOOR!r} as their floor; run it too"
            )
        basis, lo = FLOOR, means[FLOOR]
    span = means[best] - lo
    ratios = {p: (means[p] - lo) / span if span > 0 else 1.0 for p in HEADROOM}
    n = len(by[best])
    return Headroom(scenario, best, basis, ratios, means, n)


def headroom_markdown(rooms: Sequence[Headroom], source: str) -> str:
    """The headroom table (``results/suite/headroom.md``)."""
    lines = [
        "# Headroom of the suite scenarios",
        "",
        f"From `{source}`. For each scenario, the share of the best policy's mean return "
        "that `static` (the first MILP plan, never updated), `naive` (the world's plan) "
        "and `greedy` keep; the bar: static <= 0.85, naive <= 0.70, greedy <= 1/1.05 = "
        "0.952 (the best >= 5% above greedy). Where a return is not positive the shares "
        "are of `(return - random) / (best - random)` (basis `random`).",
        "",
        "| scenario | seeds | best | basis | static | naive | greedy | met |",
        "|---|---:|---|---|---:|---:|---:|---|",
    ]
    for h in rooms:
        r, m = h.ratios, h.met
        cells = [f"{r[k]:.3f}{'' if m[k] else ' (missed)'}" for k in ("static", "naive", "greedy")]
        met = "yes" if all(m.values()) else "no"
        lines.append(f"| `{h.scenario}` | {h.seeds} | {h.best} ({h.means[h.best]:.2f}) | "
                     f"{h.basis} | " + " | ".join(cells) + f" | {met} |")  # fmt: skip
    return "\n".join(lines) + "\n"
