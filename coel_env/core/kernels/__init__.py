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
(``tests/test_speed_equivalence.py``); import a kernel from its module
(``from coel_env.core.kernels.serving import cost_kernel``).
"""

from coel_env.core import compile_notice  # noqa: F401  (says on stderr when kernels compile)
