"""CoEL-Gym: deploying mixture-of-experts LLMs on networks of edge servers.

Foundation modules (no gymnasium import): :mod:`coel_env.catalog` (MoE model
configs), :mod:`coel_env.profiles` (measured and derived device profiles),
:mod:`coel_env.cost` (latency, transfer, memory, energy) and
:mod:`coel_env.quality` (quality loss of compression).
"""

__version__ = "0.1.0"
