"""Guards of the suite's headroom (agents.bench.HEADROOM), one per scenario, on three
seeds of whole episodes: a retune that lets the simple policies catch up fails here.
The full check is results/suite/headroom.md (20 seeds: `python experiments/headroom.py
--episodes results/suite/episodes.csv`), where every scenario meets the bar. The guards
that need the MILP policies are slow; the cheap ones (the default suite) check what the
preset is built on: the naive plan's loss against greedy, and tight-memory's memory."""

import dataclasses

import numpy as np
import pytest

from agents import bench, harness
from agents.registry import make_policy
from coel_env.core.scenario import data_root
from coel_env.core.world import World

SEEDS = [0, 1, 2]
needs_data = pytest.mark.skipif(
    not (data_root() / "routing").is_dir(), reason="../shared/data is absent"
)


def _headroom(
    scenario: str, policies: str, reference: str | None = None, seeds: list[int] = SEEDS
) -> bench.Headroom:
    """The headroom on ``seeds`` among ``policies`` (and the scenario's reference, or
    ``reference`` instead: a guard may stand in a cheaper one, since a lower best makes
    the bar only stricter), with the ratios' floor ``random`` run too (naive's return is
    below zero on every suite scenario)."""
    tasks = bench.suite_tasks([scenario])
    if reference is not None:
        tasks = [dataclasses.replace(t, reference=reference) for t in tasks]
    names = list(dict.fromkeys([*policies.split(","), bench.FLOOR]))
    run = bench.run_suite(bench.parse_policies(names), tasks, seeds, progress=False)
    return bench.headroom(run.episodes, scenario)


def _means(scenario: str, policies: list[str]) -> dict[str, float]:
    """Mean return of each (non-MILP) policy over SEEDS, whole episodes."""
    world = World(scenario)
    n = next(t.epochs for t in bench.SUITE if t.scenario == scenario)
    return {p: float(np.mean([harness.run_episode(make_policy(p), scenario, s, n, world=world)
                              .metrics["return"] for s in SEEDS])) for p in policies}  # fmt: skip


@pytest.mark.slow
@needs_data
@pytest.mark.xfail(
    strict=True,
    reason="mobility's retune misses the static bar: static keeps 0.894 of static-homes' "
    "return above random's on seeds 0-19 (0.938 on 0-2); the tuning compared returns, "
    "not the random floor the bar uses when naive's return is below zero (issue 22)",
)
def test_mobility_leaves_headroom():
    # the reference, static-homes, is the best policy on seeds 0-19 (42.31; milp-oracle
    # 41.47)
    h = _headroom("mobility", "greedy,static,static-homes")
    assert h.best == "static-homes", h
    assert all(h.met.values()), h.ratios


@pytest.mark.slow
def test_churn_leaves_headroom():
    # greedy's gap to greedy-oracle hangs on when servers leave: on seeds 0-2 greedy keeps
    # 0.995 of greedy-oracle's return above random's, on 0-7 0.911, on 0-19 0.887
    # (static 0.68 and 0.63, naive 0.41 and 0.37); so eight seeds
    h = _headroom("churn", "greedy,static,greedy-oracle", seeds=list(range(8)))
    assert h.best == "greedy-oracle", h
    assert all(h.met.values()), h.ratios


@pytest.mark.slow
@needs_data
def test_diurnal_leaves_headroom():
    # seeds 0-2 (basis random: naive's mean return is below zero): static 0.79, naive
    # 0.39, greedy 0.68 of milp-periodic
    h = _headroom("diurnal", "greedy,static,milp-periodic")
    assert h.best == "milp-periodic", h
    assert all(h.met.values()), h.ratios


@pytest.mark.slow
@needs_data
def test_tight_memory_leaves_headroom():
    # the suite's 20 seeds (basis random): static 0.79, naive 0.31, greedy 0.949 of
    # milp-periodic (the reference; milp-oracle 35.6 against its 37.6). Greedy's share is
    # within 0.003 of the bar and above it on every shorter run of seeds from 0 (1.0 on
    # seeds 0-2, 0.97 on 0-7, 0.957 on 0-14), so the guard takes all 20 (~10 minutes)
    h = _headroom("tight-memory", "greedy,static", seeds=list(range(20)))
    assert h.best == "milp-periodic", h
    assert all(h.met.values()), h.ratios


@needs_data
def test_diurnal_naive_plan_loses_to_greedy_at_the_peak():
    """16 bits everywhere (the L4s spilling experts to host in index order) is slow at the
    day's peak: seeds 0-2, naive's mean return is below zero (-6.5 against greedy's
    17.5)."""
    m = _means("diurnal", ["naive", "greedy"])
    assert m["naive"] <= 0.85 * m["greedy"], m


@needs_data
def test_tight_memory_naive_plan_loses_far_behind_greedy():
    """Seeds 0-2: naive keeps 0.34 of greedy's return above random's (-6.0 against
    35.2, random -27.4)."""
    m = _means("tight-memory", ["random", "naive", "greedy"])
    assert m["naive"] - m["random"] <= 0.7 * (m["greedy"] - m["random"]), m


@needs_data
def test_tight_memory_holds_the_model_nowhere_at_any_bit_width():
    """No GPU holds DeepSeek-V2-Lite's routed experts even at 4 bits beside its dense part
    and KV reserve, yet every server can host it with host memory and keep a few GB of
    experts on the GPU: bit widths and GPU/host residency are every plan's choice. The
    naive plan keeps most experts in host memory."""
    w = World("tight-memory")
    (m,) = w.specs
    dense = m.non_expert_bytes(16) / 1e9 + w.kv_reserve_gb[m.name]
    experts_8 = m.n_moe_layers * m.n_experts * m.expert_bytes(8) / 1e9
    experts_4 = m.n_moe_layers * m.n_experts * m.expert_bytes(4) / 1e9
    room = w.gpu_capacity_gb - dense
    assert (room < experts_4).all() and (room > 0.5 * experts_4).all(), (room, experts_4)
    assert experts_4 < experts_8
    w.reset(0)
    loc = w.plan.models[m.name].location
    assert w.plan.models[m.name].home == tuple(range(w.n))
    on_gpu, on_host = (loc == 1).sum(), (loc == 2).sum()
    assert on_host > on_gpu, (on_gpu, on_host)


def test_headroom_script_runs_tuning_seeds_with_the_bars_own_ratio(tmp_path, capsys):
    """``experiments/headroom.py --first-seed`` runs the named policies (and the anchor,
    the reference, static, greedy and the floor random) on tuning seeds and reports the
    bar's ratios (above random's where a return is below zero), as the committed table
    does."""
    from experiments.headroom import main

    out = tmp_path / "h.md"
    rc = main(["--scenarios", "churn", "--seeds", "1", "--first-seed", "100",
               "--policies", "naive", "--out", str(out)])  # fmt: skip
    text = out.read_text()
    assert rc in (0, 1)
    assert "a fresh run, 1 seeds (100-100)" in text
    row = next(line for line in text.splitlines() if line.startswith("| `churn`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "1" and cells[3] in ("random", "return"), cells
    assert cells[2].split(" (")[0] in ("greedy-oracle", "greedy", "static", "random", "naive")
    assert (rc == 0) == (cells[7] == "yes"), (rc, cells)
