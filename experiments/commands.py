"""The ``coel`` subcommands that the experiments package adds (see
:mod:`agents.commands`)."""

COMMANDS = (("study", "experiments.study_cli", "run a study: headline, ablation, sensitivity"),)
