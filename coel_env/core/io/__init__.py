"""Readers of the simulator's data files; the models in :mod:`coel_env.core` take arrays.

==============================  ====================================================
:mod:`.traces`                  request traces: Azure LLM inference CSV, generic CSV
                                (:class:`~coel_env.core.workload.Requests`)
:mod:`.topologies`              Internet Topology Zoo GraphML, EUA base stations and
                                users (:class:`~coel_env.core.topology.Topology`)
:mod:`.routing`                 ESFT routes and Fiddler expert popularity
                                (:mod:`coel_env.core.routing`)
==============================  ====================================================
"""

from coel_env.core.io.routing import load_esft, load_fiddler
from coel_env.core.io.topologies import TopologyDataWarning, load_eua, load_graphml
from coel_env.core.io.traces import (
    AZURE_COLUMNS,
    GENERIC_OPTIONAL,
    GENERIC_REQUIRED,
    TraceWarning,
    load_azure_trace,
    load_generic_trace,
)

__all__ = [
    "AZURE_COLUMNS",
    "GENERIC_OPTIONAL",
    "GENERIC_REQUIRED",
    "TopologyDataWarning",
    "TraceWarning",
    "load_azure_trace",
    "load_esft",
    "load_eua",
    "load_fiddler",
    "load_generic_trace",
    "load_graphml",
]
