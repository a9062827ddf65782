"""Compiled inner loops of the world (numba), each beside the concept it serves.

==============================  ====================================================
:mod:`.serving`                 the cost model of a plan and the kernel-latency grid
                                it reads; one epoch's routes, requests and queues
:mod:`.paths`                   shortest paths over the links and their bottlenecks
:mod:`.placement`               scans and checks of a plan's placement; the fills
                                of the envs' heuristic actions
:mod:`.migration`               the expert copies of a plan change
:mod:`.perception`              the true status vectors and their broadcasts
:mod:`.workload`                the synthetic streams' points and draws
:mod:`.dynamics`                one Ornstein-Uhlenbeck step
:mod:`.routing`                 each server's popularity from its task mix
:mod:`.summaries`               latency percentiles and observation summaries
==============================  ====================================================

Each kernel is tested against the numpy code it replaced
(``tests/test_speed_equivalence.py``). The package re-exports every public kernel so
that ``from coel_env.core.kernels import cost_kernel`` keeps working; the project
itself imports them from their modules.
"""

from coel_env.core import compile_notice  # noqa: F401  (says on stderr when kernels compile)
from coel_env.core.kernels.dynamics import (
    ou_step,
)
from coel_env.core.kernels.migration import (
    migration_kernel,
)
from coel_env.core.kernels.paths import (
    mirrored_paths,
    path_bottlenecks,
    shortest_paths,
    shortest_paths_after,
)
from coel_env.core.kernels.perception import (
    broadcast_rounds,
    free_memory,
    status_kernel,
)
from coel_env.core.kernels.placement import (
    SPARSE_MIN_SERVERS,
    absent_holds,
    fill_tiers,
    holds_all,
    place_homes,
    plan_scan,
    plan_scan_over,
    plan_values_ok,
    same_local,
)
from coel_env.core.kernels.routing import (
    DECIDE_MARGIN,
    mix_popularity,
    popularity_moved,
)
from coel_env.core.kernels.serving import (
    GRID_BITS,
    GRID_OCTAVES,
    GRID_PER_OCTAVE,
    activity_kernel,
    cost_kernel,
    grid_position,
    grid_tokens,
    grid_value,
    group_requests,
    group_work,
    placement_kernel,
    queue_kernel,
    route_table,
    serve_kernel,
    table_kernel,
    token_share_uncapped,
)
from coel_env.core.kernels.summaries import (
    group_summary,
    p50_p95,
    unit_float32,
)
from coel_env.core.kernels.workload import (
    any_short,
    cumulative_rows,
    inverse_cdf,
    sort_into_window,
    take_points,
)

__all__ = [
    "DECIDE_MARGIN",
    "GRID_BITS",
    "GRID_OCTAVES",
    "GRID_PER_OCTAVE",
    "SPARSE_MIN_SERVERS",
    "absent_holds",
    "activity_kernel",
    "any_short",
    "broadcast_rounds",
    "cost_kernel",
    "cumulative_rows",
    "fill_tiers",
    "free_memory",
    "grid_position",
    "grid_tokens",
    "grid_value",
    "group_requests",
    "group_summary",
    "group_work",
    "holds_all",
    "inverse_cdf",
    "migration_kernel",
    "mirrored_paths",
    "mix_popularity",
    "ou_step",
    "p50_p95",
    "path_bottlenecks",
    "place_homes",
    "placement_kernel",
    "plan_scan",
    "plan_scan_over",
    "plan_values_ok",
    "popularity_moved",
    "queue_kernel",
    "route_table",
    "same_local",
    "serve_kernel",
    "shortest_paths",
    "shortest_paths_after",
    "sort_into_window",
    "status_kernel",
    "table_kernel",
    "take_points",
    "token_share_uncapped",
    "unit_float32",
]
