"""A greedy solution (:func:`greedy_solution`), HiGHS's first incumbent when no
earlier decisions fit.
"""

from __future__ import annotations

import math

import numpy as np

from agents.milp.formula import _eval_decision, _eval_servers, evaluate
from agents.milp.instance import Decision, Instance, ModelInstance


def greedy_solution(inst: Instance) -> list[Decision] | None:
    """A simple greedy, evaluated with the MILP's own objective (:func:`evaluate`).

    Phase 1, models largest first: one home per model, the candidate with the most free
    memory; each group, most popular first, onto the fastest tier with room (GPU, then
    host memory, then the nearest server that has room); bits lowered (least popular
    group first) until everything fits. Phase 2: more homes, one at a time (each origin's
    own server, most demand first), each holding its groups locally when it has room
    (else using the nearest copy), kept only when the objective improves. Host CPU,
    keep ratio 1. Returns None when phase 1 finds nothing feasible.
    """
    S = inst.n
    free_gpu = np.where(inst.up, inst.gpu_gb, 0.0).astype(float)
    free_host = np.where(inst.host_ok, inst.host_gb, 0.0).astype(float)
    out: list[Decision | None] = [None] * len(inst.models)
    size = [mi.home_gb + float(mi.group_gb.min(axis=1).sum()) for mi in inst.models]
    for i in np.argsort(size)[::-1]:
        mi = inst.models[i]
        d = _greedy_first(inst, mi, free_gpu, free_host)
        if d is None:
            return None
        _take(mi, d, free_gpu, free_host, sign=-1.0)
        out[i] = d
    decisions: list[Decision] = list(out)  # type: ignore[arg-type]
    best = evaluate(inst, decisions)
    if not math.isfinite(best):
        return None
    tries = []
    for i, mi in enumerate(inst.models):
        for h in np.flatnonzero(mi.cand):
            tries.append((-mi.demand[h], i, int(h)))
    for _, i, h in sorted(tries):
        mi, d = inst.models[i], decisions[i]
        if d.homes[h] or free_gpu[h] < mi.home_gb:
            continue
        new = _greedy_add_home(inst, mi, d, h, free_gpu, free_host)
        if new is None:
            continue
        trial = decisions[:i] + [new] + decisions[i + 1 :]
        obj = evaluate(inst, trial)
        if obj < best - 1e-9:
            _take(mi, d, free_gpu, free_host, sign=1.0)
            _take(mi, new, free_gpu, free_host, sign=-1.0)
            decisions, best = trial, obj
    del S
    return decisions


def _take(mi: ModelInstance, d: Decision, free_gpu, free_host, sign: float) -> None:
    gb = mi.group_gb[np.arange(mi.G), d.bits]
    free_gpu += sign * (d.homes * mi.home_gb + gb @ (d.place == 1))
    free_host += sign * (gb @ (d.place == 2))


def _bit_schedules(mi: ModelInstance) -> list[np.ndarray]:
    """Bits per group, highest first, then lowered one step at a time (least popular
    group first)."""
    bits = np.zeros(mi.G, int)
    out = [bits]
    while True:
        lower = [g for g in range(mi.G - 1, -1, -1) if bits[g] < mi.B - 1]
        if not lower:
            return out
        bits = bits.copy()
        bits[lower[0]] += 1
        out.append(bits)


def _put(inst, g, sz, servers, place, fg, fh) -> bool:
    """Place group ``g`` on the first of ``servers`` with room (GPU, then host memory)."""
    for s in servers:
        if fg[s] >= sz:
            place[g, s], fg[s] = 1, fg[s] - sz
            return True
        if inst.host_ok[s] and fh[s] >= sz:
            place[g, s], fh[s] = 2, fh[s] - sz
            return True
    return False


def _greedy_first(inst, mi: ModelInstance, free_gpu, free_host) -> Decision | None:
    """Phase 1 of the greedy for one model: the fewest homes that give every origin an
    open home among its candidates (a greedy set cover, most free memory first), then
    every group on every home (see :func:`greedy_solution`)."""
    S, G = inst.n, mi.G
    keep = int(np.argmax(mi.keeps))
    pol = int(min(mi.policies))
    need = [set(mi.origin_order[o].tolist()) for o in np.flatnonzero(mi.demand > 0)]
    room = free_gpu + free_host
    homes_l: list[int] = []
    fg0 = free_gpu.copy()
    while need:
        best, best_key = None, None
        for h in np.flatnonzero(mi.cand):
            if h in homes_l or fg0[h] < mi.home_gb:
                continue
            key = (sum(h in n for n in need), room[h], -h)
            if key[0] and (best_key is None or key > best_key):
                best, best_key = int(h), key
        if best is None:
            return None
        homes_l.append(best)
        fg0[best] -= mi.home_gb
        need = [n for n in need if best not in n]
    if not homes_l:
        homes_l = [int(np.flatnonzero(mi.cand)[np.argmax(room[mi.cand])])]
    best, best_obj = None, math.inf
    for bits in _bit_schedules(mi):
        for gpu_first in (False, True):
            fg, fh = free_gpu.copy(), free_host.copy()
            place = np.zeros((G, S), np.int8)
            ok = True
            for h in homes_l:
                if fg[h] < mi.home_gb:
                    ok = False
                    break
                fg[h] -= mi.home_gb
            for g in range(G) if ok else ():
                sz = mi.group_gb[g, bits[g]]
                for h in homes_l:
                    srv = mi.order[h]
                    if place[g, h] or (place[g, srv] > 0).any():
                        continue
                    if gpu_first and _put_gpu(g, sz, srv, place, fg):
                        continue
                    if _put(inst, g, sz, [h], place, fg, fh):
                        continue
                    if _put(inst, g, sz, srv[1:], place, fg, fh):
                        continue
                    ok = False
                    break
                if not ok:
                    break
            if not ok:
                continue
            homes = np.zeros(S, bool)
            homes[homes_l] = True
            d = Decision(homes, place, bits.copy(), keep, pol)
            part = _eval_decision(inst, mi, d)
            if not part["ok"][0]:
                continue
            obj = float(_eval_servers(inst, [part])[1][0])
            if obj < best_obj:
                best, best_obj = d, obj
    return best


def _put_gpu(g, sz, servers, place, fg) -> bool:
    """Place group ``g`` on the GPU of the first of ``servers`` with room."""
    for s in servers:
        if fg[s] >= sz:
            place[g, s], fg[s] = 1, fg[s] - sz
            return True
    return False


def _greedy_add_home(inst, mi, d: Decision, h: int, free_gpu, free_host) -> Decision | None:
    fg, fh = free_gpu.copy(), free_host.copy()
    fg[h] -= mi.home_gb
    place = d.place.copy()
    for g in range(mi.G):
        if place[g, h]:
            continue
        sz = mi.group_gb[g, d.bits[g]]
        if _put(inst, g, sz, [h], place, fg, fh):
            continue
        if not (place[g, mi.order[h]] > 0).any() and not _put(
            inst, g, sz, mi.order[h][1:], place, fg, fh
        ):
            return None
    homes = d.homes.copy()
    homes[h] = True
    new = Decision(homes, place, d.bits.copy(), d.keep, d.policy)
    return new if _model_ok(inst, mi, new) else None


def _model_ok(inst, mi, d: Decision) -> bool:
    return bool(_eval_decision(inst, mi, d)["ok"][0])
