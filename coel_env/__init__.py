"""CoEL-Gym: deploying mixture-of-experts LLMs on networks of edge servers.

The simulator core (:mod:`coel_env.core`: the world, plans, scenarios, rewards) and
the foundation modules below import no gymnasium; ``import coel_env`` registers the
environment ids when gymnasium is installed. Foundation modules: :mod:`coel_env.catalog` (MoE model
configs), :mod:`coel_env.profiles` (measured and derived device profiles),
:mod:`coel_env.cost` (latency, transfer, memory, energy) and
:mod:`coel_env.quality` (quality loss of compression).
"""

__version__ = "0.1.0"


#: Every registered id, one table: (id, the config defaults it sets on its class,
#: :class:`coel_env.envs.CoELEnv` unless :data:`ENTRY_POINTS` names another, its episode
#: length in epochs). The episode length also sets ``max_steps`` (the progress feature),
#: so it is stated once, here.
ENV_IDS = (
    (
        "CoEL-IntraDevice-v0",
        {"scenario": "intra", "action": "intra-device", "observation": "view"},
        100,
    ),
    (
        "CoEL-InterDevice-v0",
        {"scenario": "inter", "action": "inter-device", "observation": "view"},
        100,
    ),
    ("CoEL-v0", {"scenario": "default", "action": "coel", "observation": "view"}, 200),
    (
        "CoEL-InterDevice-v1",
        {"scenario": "inter", "action": "home-set", "observation": "home-set"},
        100,
    ),
    ("CoEL-v1", {"scenario": "default", "action": "coel-set", "observation": "home-set"}, 200),
    (
        "CoEL-v2",
        {"scenario": "default", "action": "coel-set-v2", "observation": "home-set"},
        200,
    ),
    ("CoEL-Graph-v0", {"scenario": "default"}, 200),
)
NAMESPACE = "coel_env"
#: The class an id makes unless :data:`ENTRY_POINTS` names its own.
ENTRY_POINT = "coel_env.envs:CoELEnv"
#: Ids with their own class. Such a class counts the epochs of an episode itself (an
#: epoch takes several steps), so it is registered without ``max_episode_steps``.
ENTRY_POINTS = {"CoEL-Graph-v0": "coel_env.envs.graph:GraphEnv"}


def register_envs() -> None:
    """Register every id under the ``coel_env`` namespace (``coel_env/CoEL-v0``, listed
    under its own heading by ``gymnasium.pprint_registry()``) and without it
    (``CoEL-v0``, so ``gymnasium.make("coel_env:CoEL-v0")`` works). Idempotent."""
    import gymnasium

    for env_id, defaults, steps in ENV_IDS:
        kwargs = {"defaults": {**defaults, "max_steps": steps}}
        entry = ENTRY_POINTS.get(env_id, ENTRY_POINT)
        limit = steps if env_id not in ENTRY_POINTS else None
        for full in (f"{NAMESPACE}/{env_id}", env_id):
            if full not in gymnasium.registry:
                gymnasium.register(
                    id=full, entry_point=entry, max_episode_steps=limit, kwargs=kwargs
                )


def _gymnasium_present() -> bool:
    """Whether gymnasium can be imported (the simulator core works without it)."""
    import importlib.util
    import sys

    if "gymnasium" in sys.modules:  # imported, or blocked with sys.modules["gymnasium"] = None
        return sys.modules["gymnasium"] is not None
    return importlib.util.find_spec("gymnasium") is not None


if _gymnasium_present():
    register_envs()


def parallel_env(config=None, render_mode=None, version=None):
    """Multi-agent CoEL (PettingZoo ``ParallelEnv``): see :mod:`coel_env.envs.multiagent`
    (``version``: None for the current one)."""
    from coel_env.envs.multiagent import CURRENT_VERSION
    from coel_env.envs.multiagent import parallel_env as make

    version = CURRENT_VERSION if version is None else version
    return make(config=config, render_mode=render_mode, version=version)
