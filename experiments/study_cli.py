"""``coel study NAME``: the experiment scripts through the CLI.

  coel study headline [--quick] ...      (python experiments/headline.py)
  coel study ablation [--quick] ...      (python experiments/ablation.py)
  coel study sensitivity [--quick] ...   (python experiments/sensitivity.py)

Each study takes the options of its script (``coel study NAME --help``) and
writes into a new run folder.
"""

from __future__ import annotations

import argparse

#: study name -> (module, help)
STUDIES = {
    "headline": ("experiments.headline", "train an agent, compare it with the baselines"),
    "ablation": ("experiments.ablation", "what each CoEL aspect is worth"),
    "sensitivity": ("experiments.sensitivity", "policies against load and broadcast period"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from coel_env.cli import _add

    sub = p.add_subparsers(dest="study", metavar="STUDY")
    sub.required = True
    for name, (module, help_) in STUDIES.items():
        _add(sub, name, module, help_, entry="run")
