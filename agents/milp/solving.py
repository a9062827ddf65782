"""Solving with HiGHS: an instance (:func:`solve`, warm-started from earlier decisions
or the greedy) and a world's epoch (:func:`solve_world`, built, solved and re-solved at
the batches its solution implies).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np

from agents.milp.config import MilpConfig, MilpError, MilpInfeasible
from agents.milp.formula import evaluate
from agents.milp.formulation import UNIT, _fits, build_milp, decode, diagnose, encode
from agents.milp.from_world import (
    _little_batch,
    _token_stats,
    build_instance,
    serving_model,
    to_plan,
)
from agents.milp.instance import Decision, Instance
from agents.milp.warmstart import greedy_solution
from coel_env.core.evaluation import ServingModel
from coel_env.core.plan import Plan


@dataclass
class MilpResult:
    """What a solve returned.

    Attributes:
        status: ``"optimal"`` (within ``gap``), ``"time_limit"`` (an incumbent when
            the wall-clock limit stopped it), ``"node_limit"`` (an incumbent when a
            deterministic limit stopped it: nodes, iterations or solutions; see
            ``MilpConfig.node_limit``), ``"infeasible"`` or ``"error"`` (no plan;
            ``message`` says why).
        objective: the plan's objective [request-ms equivalents].
        bound: the solver's dual bound.
        gap: relative gap between them.
        solve_time_s: HiGHS time (``build_time_s``: building coefficients and matrix).
        plan: the decoded plan (None without one, or for abstract instances).
        decisions: the decisions per model.
    """

    status: str
    objective: float = math.inf
    bound: float = -math.inf
    gap: float = math.inf
    solve_time_s: float = 0.0
    build_time_s: float = 0.0
    plan: Plan | None = None
    decisions: list[Decision] | None = None
    message: str = ""
    n_vars: int = 0
    n_rows: int = 0
    n_binaries: int = 0
    greedy_objective: float = math.inf
    instance: Instance | None = field(default=None, repr=False)
    batch: dict | None = field(default=None, repr=False)


_BANNER_SHOWN = False


def _highs() -> highspy.Highs:
    """A HiGHS instance; the first one prints a banner on the C stdout, which is hidden."""
    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        return highspy.Highs()
    _BANNER_SHOWN = True
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return highspy.Highs()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            return highspy.Highs()
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def solve(
    inst: Instance,
    *,
    time_limit_s: float = 10.0,
    gap: float = 1e-4,
    start: Sequence[Decision] | None = None,
    seed: int = 0,
    options: Mapping | None = None,
) -> MilpResult:
    """Solve ``inst`` with HiGHS.

    Raises:
        MilpInfeasible: no feasible plan ("infeasible because ...").
        MilpError: the time limit came before any feasible plan, or the solver failed.
    """
    t0 = time.perf_counter()
    why = diagnose(inst)
    if why:
        raise MilpInfeasible(why)
    model = build_milp(inst)
    greedy = greedy_solution(inst)
    g_obj = evaluate(inst, greedy) if greedy is not None else math.inf
    starts = [s for s in (start, greedy) if s is not None]
    h = _highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("random_seed", int(seed))
    opts = dict(options or {})
    if int(model.integer.sum()) < 2000:
        opts.setdefault("mip_heuristic_run_rins", False)
        opts.setdefault("mip_heuristic_run_rens", False)
    for k, v in opts.items():
        h.setOptionValue(k, v)
    lp = highspy.HighsLp()
    lp.num_col_ = model.n_vars
    lp.num_row_ = model.n_rows
    lp.col_cost_ = model.cost
    lp.col_lower_ = model.lb
    lp.col_upper_ = model.ub
    lp.row_lower_ = model.row_lo
    lp.row_upper_ = model.row_hi
    mat = model.matrix
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = mat.indptr
    lp.a_matrix_.index_ = mat.indices
    lp.a_matrix_.value_ = mat.data
    lp.a_matrix_.num_col_ = model.n_vars
    lp.a_matrix_.num_row_ = model.n_rows
    lp.integrality_ = [
        highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
        for i in model.integer
    ]
    h.passModel(lp)
    best_start = None
    for s in starts:
        vec = encode(inst, model, s)
        if vec is not None and (best_start is None or model.cost @ vec < model.cost @ best_start):
            best_start = vec
    if best_start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = list(best_start)
        sol.value_valid = True
        h.setSolution(sol)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    h.run()
    solve_s = time.perf_counter() - t1
    status = h.getModelStatus()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2
    common = {
        "solve_time_s": solve_s,
        "build_time_s": build_s,
        "n_vars": model.n_vars,
        "n_rows": model.n_rows,
        "n_binaries": int(model.integer.sum()),
        "greedy_objective": g_obj,
        "instance": inst,
    }
    S_ = highspy.HighsModelStatus
    if status == S_.kInfeasible:
        raise MilpInfeasible(
            "infeasible because no placement fits the memory of the present servers together "
            "with the quality floor, every home's nearest-copy rule and its "
            f"{max(len(o) for o in inst.models[0].order)} nearest servers (each model alone "
            "passes the quick size checks)"
        )
    if status == S_.kOptimal:
        st = "optimal"
    elif status in (S_.kTimeLimit, S_.kIterationLimit, S_.kSolutionLimit, S_.kInterrupt):
        clock = status in (S_.kTimeLimit, S_.kInterrupt)
        st = "time_limit" if clock else "node_limit"
        if not has_sol:
            what = (
                f"time limit of {time_limit_s:g} s"
                if clock
                else f"node limit of {opts.get('mip_max_nodes', '?')} nodes"
            )
            raise MilpError(
                f"{what} reached before any feasible plan was found "
                f"({model.n_vars} variables, {model.n_rows} rows); raise "
                f"{'time_limit_s' if clock else 'node_limit'}"
            )
    else:
        raise MilpError(f"HiGHS stopped with status {h.modelStatusToString(status)}")
    vec = np.asarray(h.getSolution().col_value)
    dec = decode(inst, model, vec)
    if not math.isfinite(evaluate(inst, dec)):
        raise MilpError("the solver's solution decodes to an infeasible plan (a tolerance issue)")
    obj = float(info.objective_function_value) / UNIT
    bound = float(info.mip_dual_bound) / UNIT
    gap_v = float(info.mip_gap) if st != "optimal" else max(0.0, float(info.mip_gap))
    return MilpResult(st, obj, bound, gap_v, decisions=dec, **common)


def solve_world(
    world,
    obs,
    config: MilpConfig | None = None,
    *,
    demand_per_s: np.ndarray | None = None,
    batch: Mapping[str, np.ndarray] | None = None,
    serving: ServingModel | None = None,
    start: Sequence[Decision] | None = None,
) -> MilpResult:
    """Build and solve the epoch's MILP; the result carries the world's :class:`Plan`.

    Raises:
        MilpInfeasible / MilpError: see :func:`solve`.
    """
    cfg = config or MilpConfig()
    serving = serving or serving_model(world)
    demand = np.asarray(obs.demand_per_s if demand_per_s is None else demand_per_s, float)
    e_out = _token_stats(world)[1]
    total_build = 0.0
    total_solve = 0.0
    res = None
    for it in range(cfg.refine + 1):
        tb = time.perf_counter()
        inst = build_instance(world, obs, cfg, demand_per_s=demand, batch=batch, serving=serving)
        total_build += time.perf_counter() - tb
        res = solve(
            inst, time_limit_s=cfg.time_limit_s, gap=cfg.gap, options=cfg.solver_options(),
            start=start if _fits(start, inst) else None,
        )  # fmt: skip
        total_build += res.build_time_s
        total_solve += res.solve_time_s
        res.plan = to_plan(inst, res.decisions)
        if it == cfg.refine:
            break
        new = _little_batch(world, obs, inst, res.decisions, res.plan, serving, demand, e_out)
        old = {mi.name: mi.batch for mi in inst.models}
        if all(np.array_equal(new[k], old[k]) for k in new):
            break
        batch, start = new, res.decisions
    res.build_time_s = total_build
    res.solve_time_s = total_solve
    res.batch = {mi.name: mi.batch for mi in res.instance.models}
    serving._placements.clear()  # keyed by plan ids: do not keep every solve's plans alive
    return res
