"""Equivalence harness: does a candidate world path give the outputs of today's path?

    python experiments/equivalence.py [--candidate-constants world.POP_TOLERANCE=0.4 ...]
        [--candidate-overrides KEY=VALUE ...] [--candidate-class MODULE:CLASS]
        [--scenarios default large PATH.graphml ...] [--plans 1000] [--plan-epochs 5]
        [--episode-epochs 50] [--seed 0] [--out results/equivalence_NAME.md]

The training issue lets a faster world (a compiled epoch, fewer costed snapshots)
change outputs only where this harness shows the change is small. Per scenario it runs
the reference (``World`` as it is) and the candidate side by side from the same seeds:
episodes of ``--episode-epochs`` epochs in which a new random plan is committed every
``--plan-epochs`` epochs, until ``--plans`` plans have run. Each plan is drawn from the
reference world's state by ``CoEL-Graph-v0``'s editor: 1-16 random edits, each allowed
by its exact mask (home adds, drops and moves, expert moves, replicas and drops, bit
widths, keep ratios, host policies), so every plan is one the world accepts. Both
worlds get the same plan at the same epoch; with durable migrations the plans overlap
the copies of earlier ones, as in training.

The candidate is the reference with any of:

- ``--candidate-constants MODULE.NAME=VALUE``: module attributes of ``coel_env.core``
  set while the candidate steps (and restored after each step), e.g.
  ``world.POP_TOLERANCE=0.4`` or ``world.COST_REFRESH_EPOCHS=10``;
- ``--candidate-overrides KEY=VALUE``: scenario overrides (dotted keys, YAML values);
- ``--candidate-class MODULE:CLASS``: another ``World`` class (same constructor).

Criteria (the training issue's), over every epoch of every plan, paired by epoch:

- **p95 latency**: mean absolute deviation of the per-epoch p95 latency, relative to the
  reference's mean p95: ``mean|cand - ref| / mean(ref)`` <= 1%;
- **SLO attainment**: the run's SLO attainment (``sum slo_met / sum arrived``) within
  0.5 percentage points of the reference's, and the per-epoch attainment's mean
  absolute difference reported beside it;
- **conservation, exact**: in every epoch of both worlds ``served + dropped ==
  arrived`` and ``dropped_no_model + dropped_overload == dropped``, and both worlds see
  the same arrivals.

The report also gives the deviation of other outputs (energy, quality loss, migration
bytes) and each world's mean step time. The exit status is 0 when every scenario
passes, 1 otherwise.
"""

from __future__ import annotations

from experiments import benchutil

benchutil.single_thread()  # before numpy is imported anywhere

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from coel_env.core.plan import reuse_unchanged  # noqa: E402
from coel_env.core.world import World  # noqa: E402

#: The training issue's bounds.
MAX_P95_MAD = 0.01  # mean |cand - ref| / mean ref of the per-epoch p95 latency
MAX_SLO_PP = 0.5  # percentage points of the run's SLO attainment
#: Most random edits of one plan.
MAX_EDITS = 16
#: Expert groups per layer the plan editor addresses (CoEL-Graph-v0's default).
N_GROUPS = 4


def parse_assignments(items: Sequence[str], flag: str) -> dict[str, object]:
    """``["a.b=1", ...]`` -> ``{"a.b": 1}`` (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve_constants(assign: Mapping[str, object]) -> list[tuple[object, str, object]]:
    """``{"world.POP_TOLERANCE": 0.4}`` -> ``[(module coel_env.core.world, name, value)]``;
    a module or attribute that does not exist is refused, naming it."""
    out = []
    for key, value in assign.items():
        mod_name, _, attr = key.rpartition(".")
        if not mod_name:
            raise ValueError(
                f"--candidate-constants {key!r}: give MODULE.NAME, a module of coel_env.core "
                "(e.g. world.POP_TOLERANCE)"
            )
        try:
            mod = importlib.import_module(f"coel_env.core.{mod_name}")
        except ModuleNotFoundError:
            raise ValueError(
                f"--candidate-constants {key!r}: coel_env.core.{mod_name} is not a module"
            ) from None
        if not hasattr(mod, attr):
            raise ValueError(
                f"--candidate-constants {key!r}: coel_env.core.{mod_name} has no {attr!r}"
            )
        old = getattr(mod, attr)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if type(old) in (int, float) and not number:
            raise ValueError(
                f"--candidate-constants {key}={value!r}: must be a number like {old!r}"
            )
        out.append((mod, attr, value))
    return out


def resolve_class(spec: str | None) -> type:
    """``MODULE:CLASS`` -> the class (``World`` when None)."""
    if spec is None:
        return World
    mod_name, sep, name = spec.partition(":")
    if not sep:
        raise ValueError(f"--candidate-class {spec!r} is not MODULE:CLASS")
    try:
        cls = getattr(importlib.import_module(mod_name), name)
    except (ModuleNotFoundError, AttributeError) as e:
        raise ValueError(f"--candidate-class {spec!r}: {e}") from None
    if not isinstance(cls, type):
        raise ValueError(f"--candidate-class {spec!r} is not a class")
    return cls


@contextlib.contextmanager
def patched(constants: Sequence[tuple[object, str, object]]) -> Iterator[None]:
    """Set the module attributes while the block runs, then restore them."""
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in constants]
    try:
        for mod, attr, value in constants:
            setattr(mod, attr, value)
        yield
    finally:
        for mod, attr, value in saved:
            setattr(mod, attr, value)


@dataclass
class Candidate:
    """How the candidate differs from the reference."""

    constants: list = field(default_factory=list)  # resolve_constants
    overrides: dict = field(default_factory=dict)
    cls: type = World


def scenario_args(scenario: str) -> tuple[str, dict]:
    """A preset name or YAML path, or a Topology Zoo ``.graphml`` / EUA ``.csv``
    (on ``default``) -> ``(scenario, overrides)``."""
    if scenario.endswith((".graphml", ".csv")):
        from coel_env.core.scenario import topology_overrides

        path = Path(scenario)
        if not path.is_file():
            raise ValueError(f"--scenarios {scenario!r}: no such file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Topology Zoo files warn about missing link data
            return "default", topology_overrides(path)
    return scenario, {}


def random_plan(world: World, rng: np.random.Generator):
    """1-:data:`MAX_EDITS` random allowed edits of the world's plan by CoEL-Graph-v0's
    editor (its mask is exact: the world accepts the result)."""
    from coel_env.envs.graph_edits import EditLayout, PlanEditor

    layout = EditLayout(max(world.n, 1), len(world.models), N_GROUPS, True)
    ed = PlanEditor(world, layout)
    ed.begin()
    for _ in range(int(rng.integers(1, MAX_EDITS + 1))):
        allowed = np.flatnonzero(ed.mask(True))[1:]  # not commit
        if not len(allowed):
            break
        ed.apply(*layout.decode(int(rng.choice(allowed))))
    return ed.draft


def _conserves(r) -> bool:
    return (
        r.requests_served + r.requests_dropped == r.requests_arrived
        and r.dropped_no_model + r.dropped_overload == r.requests_dropped
    )


def _timed(world: World, plan, constants) -> tuple:
    """``(world.step(plan), seconds)``, with ``constants`` set while it steps."""
    with patched(constants):
        t = time.perf_counter()
        report = world.step(plan)
        return report, time.perf_counter() - t


def compare(scenario: str, cand: Candidate, plans: int, plan_epochs: int,
            episode_epochs: int, seed: int) -> dict:  # fmt: skip
    """Run the reference and the candidate side by side (module doc); the row of one
    scenario."""
    name, over = scenario_args(scenario)
    ref = World(name, over or None)
    alt = cand.cls(name, {**over, **cand.overrides} or None)
    rng = np.random.default_rng(seed)
    rows = []  # per epoch: (ref p95, cand p95, ref slo, cand slo, ...)
    counts = np.zeros(4)  # ref slo_met, ref arrived, cand slo_met, cand arrived
    conserved = same_arrivals = True
    t_ref = t_alt = 0.0
    done = episode = 0
    while done < plans:
        s = seed * 1_000_003 + episode
        ref.reset(s)
        alt.reset(s)
        episode += 1
        for epoch in range(episode_epochs):
            plan = twin = None
            if epoch % plan_epochs == 0 and done < plans:
                plan = random_plan(ref, rng)
                # each world gets the draft as the graph env hands it over: its own
                # objects (a plan keeps what a world computed of it), the model plans
                # that did not change being those in force (their costs are kept)
                plan = reuse_unchanged(plan, ref.plan)
                twin = reuse_unchanged(copy.deepcopy(plan), alt.plan)
                done += 1
            if len(rows) % 2:  # alternate which steps first (memory caches)
                a, dt_ref = _timed(ref, plan, ())
                b, dt_alt = _timed(alt, twin, cand.constants)
            else:
                b, dt_alt = _timed(alt, twin, cand.constants)
                a, dt_ref = _timed(ref, plan, ())
            t_ref += dt_ref
            t_alt += dt_alt
            conserved &= _conserves(a) and _conserves(b)
            same_arrivals &= a.requests_arrived == b.requests_arrived
            counts += (a.slo_met, a.requests_arrived, b.slo_met, b.requests_arrived)
            rows.append((
                a.latency_p95_ms, b.latency_p95_ms, a.slo_attainment, b.slo_attainment,
                a.energy_j, b.energy_j, a.quality_loss, b.quality_loss,
                a.migration_bytes, b.migration_bytes,
            ))  # fmt: skip
            if done >= plans and epoch % plan_epochs == plan_epochs - 1:
                break
    x = np.array(rows)
    n_ep = len(x)

    def rel_mad(i: int) -> float:
        level = float(np.abs(x[:, i]).mean())
        dev = float(np.abs(x[:, i + 1] - x[:, i]).mean())
        return dev / level if level > 0 else (0.0 if dev == 0 else float("inf"))

    slo_ref = counts[0] / max(counts[1], 1)
    slo_alt = counts[2] / max(counts[3], 1)
    p95_mad = rel_mad(0)
    slo_pp = abs(slo_alt - slo_ref) * 100.0
    return {
        "scenario": scenario,
        "servers": ref.n,
        "plans": done,
        "epochs": n_ep,
        "p95_mad": p95_mad,
        "p95_ok": p95_mad <= MAX_P95_MAD,
        "slo_ref": slo_ref,
        "slo_cand": slo_alt,
        "slo_pp": slo_pp,
        "slo_epoch_pp": float(np.abs(x[:, 3] - x[:, 2]).mean()) * 100.0,
        "slo_ok": slo_pp <= MAX_SLO_PP,
        "conserved": bool(conserved and same_arrivals),
        "energy_mad": rel_mad(4),
        "quality_mad": rel_mad(6),
        "migration_mad": rel_mad(8),
        "identical": bool(np.array_equal(x[:, 0::2], x[:, 1::2])),
        "ref_ms": t_ref / max(n_ep, 1) * 1e3,
        "cand_ms": t_alt / max(n_ep, 1) * 1e3,
    }


def passes(row: Mapping) -> bool:
    return bool(row["p95_ok"] and row["slo_ok"] and row["conserved"])


def _yes(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def markdown(rows: Sequence[Mapping], cand_text: str, info: Mapping[str, str], command: str) -> str:
    head = (
        "| scenario | servers | plans | epochs | p95 MAD (<= 1%) | SLO ref | SLO cand | "
        "SLO diff pp (<= 0.5) | per-epoch SLO pp | conserved | energy MAD | quality MAD | "
        "migration MAD | identical | ref ms/epoch | cand ms/epoch | speed-up | passes |"
    )
    lines = [
        f"Candidate: {cand_text}.",
        "",
        "MAD: mean absolute deviation of the per-epoch value, relative to the reference's "
        "mean. SLO: the run's attainment (slo_met / arrived over every epoch). Conserved: "
        "served + dropped == arrived and the drop split in every epoch of both worlds, "
        "and the same arrivals. Identical: every compared output equal bit for bit.",
        "",
        head,
        "|---|" + "---:|" * 16 + "---|",
    ]
    for r in rows:
        lines.append(
            f"| {Path(r['scenario']).stem} | {r['servers']} | {r['plans']} | {r['epochs']} | "
            f"{r['p95_mad']:.3%} | {r['slo_ref']:.4f} | {r['slo_cand']:.4f} | "
            f"{r['slo_pp']:.3f} | {r['slo_epoch_pp']:.3f} | {_yes(r['conserved'])} | "
            f"{r['energy_mad']:.3%} | {r['quality_mad']:.3%} | {r['migration_mad']:.3%} | "
            f"{'yes' if r['identical'] else 'no'} | {r['ref_ms']:.2f} | {r['cand_ms']:.2f} | "
            f"x{r['ref_ms'] / max(r['cand_ms'], 1e-9):.2f} | {_yes(passes(r))} |"
        )
    return benchutil.markdown_report("Equivalence harness", command, lines, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidate-constants", nargs="*", default=[], metavar="MODULE.NAME=V")
    p.add_argument("--candidate-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--candidate-class", default=None, metavar="MODULE:CLASS")
    p.add_argument("--scenarios", nargs="+", default=["default", "large"], metavar="NAME|PATH")
    p.add_argument("--plans", type=int, default=1000, help="random plans per scenario")
    p.add_argument("--plan-epochs", type=int, default=5, help="epochs each plan runs")
    p.add_argument("--episode-epochs", type=int, default=50, help="epochs between resets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = p.parse_args(argv)
    benchutil.check_at_least(p, args, 1, "plans", "plan_epochs", "episode_epochs")
    try:
        cand = Candidate(
            resolve_constants(parse_assignments(args.candidate_constants, "--candidate-constants")),
            parse_assignments(args.candidate_overrides, "--candidate-overrides"),
            resolve_class(args.candidate_class),
        )
        rows = []
        for sc in args.scenarios:
            rows.append(compare(sc, cand, args.plans, args.plan_epochs, args.episode_epochs,
                                args.seed))  # fmt: skip
            r = rows[-1]
            print(
                f"{Path(sc).stem:>10}  plans {r['plans']}  epochs {r['epochs']}  p95 MAD "
                f"{r['p95_mad']:.3%}  SLO {r['slo_ref']:.4f} -> {r['slo_cand']:.4f} "
                f"({r['slo_pp']:.3f} pp)  conserved {r['conserved']}  identical "
                f"{r['identical']}  ms/epoch {r['ref_ms']:.2f} -> {r['cand_ms']:.2f}  "
                f"{'PASS' if passes(r) else 'FAIL'}"
            )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parts = [f"`{c}`" for c in (*args.candidate_constants, *args.candidate_overrides)]
    if args.candidate_class:
        parts.append(f"class `{args.candidate_class}`")
    cand_text = ", ".join(parts) if parts else "the reference itself"
    benchutil.write_report(
        args.out, "experiments/equivalence.py", argv,
        lambda cmd: markdown(rows, cand_text, benchutil.machine(), cmd),
    )  # fmt: skip
    return 0 if all(passes(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
