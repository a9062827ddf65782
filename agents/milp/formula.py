"""The MILP's objective and constraints by formula, not through the matrix
(:func:`evaluate`); every decision of a small instance enumerated with it
(:func:`brute_force`); small random instances for tests (:func:`random_instance`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from agents.milp.instance import (
    E_CPU,
    E_FETCH,
    E_GPU,
    Decision,
    Instance,
    ModelInstance,
    queue_cuts,
)
from coel_env.quality import token_keep_loss


def _eval_model(inst: Instance, mi: ModelInstance, homes, place, bits, keep, policy) -> dict:
    """Objective pieces and feasibility of a batch of decisions of one model (by formula)."""
    N = homes.shape[0]
    S, G = inst.n, mi.G
    ok = np.ones(N, bool)
    held = place > 0
    ok &= ~(held & ~inst.up[None, None, :]).any(axis=(1, 2))
    ok &= ~((place == 2) & ~inst.host_ok[None, None, :]).any(axis=(1, 2))
    ok &= ~(homes & ~mi.cand[None, :]).any(axis=1)
    ok &= homes.any(axis=1)
    ok &= np.isin(policy, mi.policies)
    rows = np.arange(N)
    garr = np.arange(G)[None, :]
    keepv = np.asarray(mi.keeps, float)[keep]
    qk = mi.qkeep[keep]
    c = np.tile(mi.base, (N, 1)).astype(float)
    cw = np.tile(mi.base_w, (N, 1)).astype(float)
    q = np.zeros((N, S))
    tl = np.zeros((N, S))
    tw = np.zeros((N, S))
    svl = np.zeros((N, S))  # prompt pruning: the prefill cut, per request (latency, work)
    svw = np.zeros((N, S))
    used = np.zeros((N, S, S), bool)
    sstar = np.full((N, S, G), -1)
    exe = np.zeros((N, S, G), int)
    for h in range(S):
        if not mi.cand[h]:
            continue
        act = homes[:, h]
        srv = mi.order[h]
        sub = held[:, :, srv]
        has = sub.any(axis=2)
        ok &= ~act | has.all(axis=1)
        s_ = np.where(has, srv[sub.argmax(axis=2)], h)
        tier = place[rows[:, None], garr, s_]
        e = np.where(tier == 2, np.where(policy[:, None] == 1, E_FETCH, E_CPU), E_GPU)
        remote = has & (s_ != h)
        ul = mi.use[h][garr, s_, e, bits]
        uw = mi.use_w[h][garr, s_, e, bits]
        u = np.zeros((N, S), bool)
        for g in range(G):
            u[rows, s_[:, g]] |= remote[:, g]
        if mi.prune_prompt:  # bytes whole, every home pays the keep loss, prompts cut
            xl = (mi.xfer[h][garr, s_] * remote).sum(axis=1)
            xw = (mi.xfer_w[h][garr, s_] * remote).sum(axis=1)
            qh = np.broadcast_to(qk, (N,)).astype(float)
            cut = 1.0 - keepv
            for sv, pb, pu, px, pr in (
                (svl, mi.pbase, mi.puse, mi.pxfer, mi.premote),
                (svw, mi.pbase_w, mi.puse_w, mi.pxfer_w, mi.premote_w),
            ):
                pre = pb[h] + (pu[h][garr, s_, e, bits] * has).sum(axis=1)
                pre = pre + (px[h][garr, s_] * remote).sum(axis=1) + u @ pr[h]
                sv[:, h] = np.where(act, cut * pre, 0.0)
            c[:, h] -= svl[:, h]
            cw[:, h] -= svw[:, h]
        else:
            xl = (mi.xfer[h][garr, s_] * remote).sum(axis=1) * keepv
            xw = (mi.xfer_w[h][garr, s_] * remote).sum(axis=1) * keepv
        rem = u @ mi.remote[h]
        remw = u @ mi.remote_w[h]
        r = u.any(axis=1)
        if not mi.prune_prompt:
            qh = r * qk
        live = act[:, None]
        c[:, h] += np.where(act, (ul * has).sum(axis=1) + xl + rem + mi.quality_ms * qh, 0.0)
        cw[:, h] += np.where(act, (uw * has).sum(axis=1) + xw + remw, 0.0)
        q[:, h] = np.where(act, qh, 0.0)
        tl[:, h] = np.where(act, xl, 0.0)
        tw[:, h] = np.where(act, xw, 0.0)
        used[:, h] = u & live
        sstar[:, h] = np.where(live & has, s_, -1)
        exe[:, h] = e
    qb = mi.qbits[garr, bits].sum(axis=1)
    ok &= ~(homes & (qb[:, None] + q > inst.quality_floor + 1e-6)).any(axis=1)
    obj = np.zeros(N)
    work = np.zeros((N, S))
    assign = np.full((N, S), -1)
    for o in range(S):
        if mi.demand[o] <= 0:
            continue
        hs = mi.origin_order[o]
        if hs.size == 0:
            ok[:] = False
            continue
        sub = homes[:, hs]
        ok &= sub.any(axis=1)
        ho = hs[sub.argmax(axis=1)]
        assign[:, o] = ho
        obj += mi.demand[o] * (mi.rtt[o, ho] + c[rows, ho])
        work[rows, ho] += mi.demand[o] * cw[rows, ho]
    obj += mi.demand[mi.demand > 0].sum() * mi.quality_ms * qb
    gb = mi.group_gb[garr, bits]  # [N, G]
    tier_idx = np.clip(place.astype(int) - 1, 0, 1)
    mig = mi.mig_x[garr[:, :, None], np.arange(S)[None, None, :], tier_idx, bits[:, :, None]]
    obj += (mig * held).sum(axis=(1, 2)) + homes @ mi.mig_home
    recv = np.zeros((N, S))
    if mi.mig_x_s is not None:
        rs = mi.mig_x_s[garr[:, :, None], np.arange(S)[None, None, :], tier_idx, bits[:, :, None]]
        recv = (rs * held).sum(axis=1) + homes * mi.mig_home_s[None, :]
    gpu = homes * mi.home_gb + np.einsum("ng,ngs->ns", gb, place == 1)
    host = np.einsum("ng,ngs->ns", gb, place == 2)
    return {
        "ok": ok,
        "obj": obj,
        "work": work,
        "gpu": gpu,
        "host": host,
        "c": c,
        "cw": cw,
        "q": q,
        "tl": tl,
        "tw": tw,
        "sv": svl,
        "svw": svw,
        "used": used,
        "sstar": sstar,
        "exec": exe,
        "assign": assign,
        "recv": recv,
    }


def _eval_servers(inst: Instance, parts: list[dict]) -> tuple[np.ndarray, np.ndarray, dict]:
    ok = np.logical_and.reduce([p["ok"] for p in parts])
    gpu = sum(p["gpu"] for p in parts)
    host = sum(p["host"] for p in parts)
    ok &= (gpu <= inst.gpu_gb[None, :] + 1e-6).all(axis=1)
    ok &= (host <= inst.host_gb[None, :] + 1e-6).all(axis=1)
    work = sum(p["work"] for p in parts)
    wq = np.maximum(
        0.0, (work[:, :, None] * inst.queue_slope[None] + inst.queue_icpt[None]).max(axis=2)
    )
    ovf = np.maximum(0.0, work - inst.cap_ms[None, :])
    obj = sum(p["obj"] for p in parts) + wq.sum(axis=1) + (ovf * inst.overflow_ms).sum(axis=1)
    recv = sum(p["recv"] for p in parts) / inst.epoch_s  # [N, S] epochs of receiving
    if inst.mig_price is not None:
        obj = obj + (np.minimum(1.0, recv) * inst.mig_price[None, :]).sum(axis=1)
    return ok, np.where(ok, obj, np.inf), {"work": work, "wq": wq, "ovf": ovf, "recv": recv}


def _eval_decision(inst: Instance, mi: ModelInstance, d: Decision) -> dict:
    """:func:`_eval_model` of one decision (a batch of one)."""
    return _eval_model(
        inst,
        mi,
        np.asarray(d.homes, bool)[None],
        np.asarray(d.place, np.int8)[None],
        np.asarray(d.bits, int)[None],
        np.array([d.keep]),
        np.array([d.policy]),
    )


def evaluate(inst: Instance, decisions: Sequence[Decision]) -> float:
    """The objective of ``decisions`` (one per model) by formula; ``inf`` if infeasible."""
    parts = [_eval_decision(inst, mi, d) for mi, d in zip(inst.models, decisions, strict=True)]
    return float(_eval_servers(inst, parts)[1][0])


def brute_force(inst: Instance) -> tuple[float, Decision | None]:
    """The optimum of a one-model instance by enumerating every decision (small only)."""
    if len(inst.models) != 1:
        raise ValueError("brute_force enumerates one-model instances only")
    mi = inst.models[0]
    S, G = inst.n, mi.G
    per_server = [
        [0] + ([1] if inst.up[s] else []) + ([2] if inst.host_ok[s] else []) for s in range(S)
    ]
    group_states = [st for st in itertools.product(*per_server) if any(st)]
    if not group_states:
        return math.inf, None
    combos = np.array(list(itertools.product(range(len(group_states)), repeat=G)))
    gs = np.array(group_states, np.int8)  # [Q, S]
    place = gs[combos]  # [N, G, S]
    N = place.shape[0]
    best, arg = math.inf, None
    cand = np.flatnonzero(mi.cand)
    for r in range(1, cand.size + 1):
        for hs in itertools.combinations(cand, r):
            homes = np.zeros((N, S), bool)
            homes[:, list(hs)] = True
            for bits in itertools.product(range(mi.B), repeat=G):
                b = np.tile(np.array(bits), (N, 1))
                for k in range(mi.K):
                    for p in mi.policies:
                        part = _eval_model(inst, mi, homes, place, b, np.full(N, k), np.full(N, p))
                        _, obj, _ = _eval_servers(inst, [part])
                        i = int(np.argmin(obj))
                        if obj[i] < best:
                            best = float(obj[i])
                            arg = Decision(homes[i].copy(), place[i].copy(), np.array(bits), k, p)
    return best, arg


def random_instance(
    seed: int,
    *,
    n_servers: int = 2,
    n_groups: int = 3,
    bits: tuple[int, ...] = (16, 4),
    keeps: tuple[float, ...] = (1.0, 0.5),
    policies: tuple[int, ...] = (0, 1),
    n_models: int = 1,
    tight: float = 1.0,
    prune_prompt: bool = False,
) -> Instance:
    """A small random instance (coefficients drawn directly, not from the cost model),
    shaped like :func:`build_instance`'s: GPU options cheaper than host ones, remote ones
    dearer, lower bits smaller and lossier. ``tight`` < 1 shrinks memory (more
    infeasible draws). ``prune_prompt``: the keep ratio prunes prompts (a share of each
    piece is its prompt part, drawn after everything else)."""
    rng = np.random.default_rng(seed)
    S, G, B = n_servers, n_groups, len(bits)
    pts = rng.uniform(0, 1, (S, 2))
    lat = np.linalg.norm(pts[:, None] - pts[None], axis=2) + 0.05 * (1 - np.eye(S))
    unified = rng.random(S) < 0.3
    up = np.ones(S, bool)
    host_ok = ~unified
    gpu = rng.uniform(2.0, 9.0, S) * tight
    host = np.where(unified, 0.0, rng.uniform(0.0, 6.0, S) * tight)
    floor = float(rng.uniform(0.005, 0.03))
    cap = rng.uniform(400.0, 2000.0, S)
    slope, icpt = queue_cuts(cap, 1.0, np.ones(S), (0.2, 0.5, 0.8, 0.95))
    models = []
    for _ in range(n_models):
        width = np.array([b / 16.0 + 0.06 for b in sorted(bits, reverse=True)])
        group_gb = rng.uniform(0.3, 1.5, G)[:, None] * width[None, :]
        home_gb = float(rng.uniform(0.5, 2.5))
        cand = up & (gpu >= home_gb)
        order = []
        for h in range(S):
            others = sorted((s for s in range(S) if s != h), key=lambda s: (lat[h, s], s))
            order.append(np.array([h] + others, int) if cand[h] else np.zeros(0, int))
        origin_order = tuple(
            np.array(sorted(np.flatnonzero(cand), key=lambda h: (lat[o, h], h)), int)
            for o in range(S)
        )
        demand = np.where(rng.random(S) < 0.8, rng.uniform(0.5, 3.0, S), 0.0)
        speed = rng.uniform(0.5, 2.0, S)  # per server
        gpu_c = rng.uniform(20.0, 60.0, (G,))[None, :, None, None] * speed[None, None, :, None]
        exec_f = np.array([1.0, 4.0, 2.0])[None, None, None, :, None]
        bits_f = rng.uniform(0.7, 1.1, B)[None, None, None, None, :]
        use = np.broadcast_to(gpu_c[..., None], (S, G, S, 3, 1)) * exec_f * bits_f
        use = use * rng.uniform(0.9, 1.1, (S, G, S, 3, B))
        base = rng.uniform(50.0, 150.0, S)
        xfer = rng.uniform(5.0, 30.0, (S, G, S)) * (1 - np.eye(S))[:, None, :]
        remote = 40.0 * lat * (1 - np.eye(S))
        wf = rng.uniform(0.5, 1.0)
        bl = np.array([{16: 0.0, 8: 0.0, 4: 0.0147, 3: 0.0447, 2: 0.232}[b] for b in bits])
        share = rng.dirichlet(np.ones(G))
        models.append(
            ModelInstance(
                name=f"m{len(models)}",
                bits=tuple(sorted(bits, reverse=True)),
                keeps=keeps,
                policies=policies,
                home_gb=home_gb,
                group_gb=group_gb,
                cand=cand,
                order=tuple(order),
                origin_order=origin_order,
                demand=demand,
                rtt=2 * lat,
                base=base,
                use=use,
                xfer=xfer,
                remote=remote,
                base_w=wf * base,
                use_w=wf * use,
                xfer_w=wf * xfer,
                remote_w=wf * remote,
                qbits=share[:, None] * bl[None, :],
                qkeep=np.asarray(token_keep_loss(np.array(keeps)), float),
                quality_ms=float(rng.uniform(1e3, 2e4)),
                mig_x=rng.uniform(0.0, 20.0, (G, S, 2, B)),
                mig_home=rng.uniform(0.0, 30.0, S),
                mig_x_s=rng.uniform(0.0, 6.0, (G, S, 2, B)) * (rng.random((G, S, 2, B)) < 0.5),
                mig_home_s=rng.uniform(0.0, 8.0, S),
            )  # fmt: skip
        )
        if prune_prompt:
            mi = models[-1]
            f = rng.uniform(0.1, 0.6, 4)  # the prompt's share of each piece's cost
            mi.prune_prompt = True
            mi.pbase, mi.puse, mi.pxfer, mi.premote = (
                f[0] * base, f[1] * use, f[2] * xfer, f[3] * remote
            )  # fmt: skip
            mi.pbase_w, mi.puse_w, mi.pxfer_w, mi.premote_w = (
                wf * mi.pbase, wf * mi.puse, wf * mi.pxfer, wf * mi.premote
            )  # fmt: skip
    return Instance(
        models=models, gpu_gb=gpu, host_gb=host, host_ok=host_ok, up=up, cap_ms=cap,
        queue_slope=slope, queue_icpt=icpt, overflow_ms=slope[:, -1].copy(),
        quality_floor=floor, mig_price=rng.uniform(50.0, 400.0, S), epoch_s=10.0,
    )  # fmt: skip
