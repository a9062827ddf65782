"""Expert groups: the experts of each layer ranked by popularity and cut evenly into
``n_groups`` groups. Decisions (the envs' actions, the baselines, the MILP) address
groups, not single experts, so their size does not grow with the expert count.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_of", "groups_of_estimate", "popularity_order"]


def group_of(popularity: np.ndarray, n_groups: int) -> np.ndarray:
    """Group index [L, E] of every expert: rank by popularity within its layer, cut evenly."""
    L, E = popularity.shape
    rank = np.empty((L, E), int)
    order = np.argsort(-popularity, axis=1, kind="stable")
    rank[np.arange(L)[:, None], order] = np.arange(E)[None, :]
    return np.minimum(rank * n_groups // E, n_groups - 1)


def groups_of_estimate(popularity: np.ndarray, n_groups: int) -> np.ndarray:
    """:func:`group_of`, memoised on the array's identity, for the envs' popularity
    estimates (replaced, never changed in place, when they move). Read-only result."""
    key = (id(popularity), n_groups, "groups")
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is popularity:
        return hit[1]
    out = group_of(popularity, n_groups)
    out.setflags(write=False)
    _remember(key, popularity, out)
    return out


def popularity_order(popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layers, experts) of all experts, most popular first (memoised as
    :func:`groups_of_estimate`)."""
    key = (id(popularity), 0, "order")
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is popularity:
        return hit[1]
    order = np.argsort(-popularity, axis=None, kind="stable")
    out = np.divmod(order, popularity.shape[1])
    _remember(key, popularity, out)
    return out


#: Results per popularity array, keyed by its id and holding it (so the id stays its);
#: bounded: a few estimates per model are live at a time.
_MEMO: dict = {}
_MEMO_SIZE = 64


def _remember(key: tuple, popularity: np.ndarray, value) -> None:
    if len(_MEMO) >= _MEMO_SIZE:
        del _MEMO[next(iter(_MEMO))]  # oldest first
    _MEMO[key] = (popularity, value)
