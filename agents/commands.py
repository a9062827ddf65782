"""The ``coel`` subcommands that the agents package adds (found by ``coel_env.cli``
through the ``coel_env.commands`` entry point in ``pyproject.toml``, so the simulator
package never imports ``agents``).

Each row is (subcommand, module, help); the module has ``add_arguments(parser)`` and
``main(args) -> int``.
"""

COMMANDS = (
    ("simulate", "agents.simulate_cli", "run a scenario's world under a policy, print metrics"),
    ("train", "agents.train", "train an RL agent (PPO, A2C, MaskablePPO, DQN) on a CoEL env"),
    ("baselines", "agents.baselines_cli", "compare baselines on the same seeded instances"),
    ("evaluate", "agents.evaluate_cli", "run a saved policy through the baselines' harness"),
    ("compare", "agents.compare_cli", "policies and trained runs: table and figures"),
    ("train-ma", "agents.multiagent", "parameter-shared PPO on multi-agent CoEL (PettingZoo)"),
    ("sweep", "agents.sweep", "a grid of algorithms x seeds x scenarios on Ray Tune"),
    ("bench", "agents.bench_cli", "policies over the benchmark suite: normalised scores, IQM"),
)
