"""The workflow's stages: one module per Snakemake rule, named like the rule and its CLI verb.

Each module holds ``HELP`` (one line for ``poisoncert --help``), ``add_arguments(parser)`` (its
CLI flags), ``main(args)`` (the verb) and the stage function itself, a function of file paths
around the pure maths. Every output is written atomically
(:func:`poisoncert.data.atomic_file`), so a failed or interrupted step never leaves a file that
looks complete. Modules import torch only inside the functions that train.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: CLI verb -> stage module (the Snakemake rule of the same name, with '-' as '_').
VERBS: dict[str, str] = {
    "prepare": "prepare",
    "partition": "partition",
    "extractor": "extractor",
    "phase2": "phase2",
    "train": "train",
    "aggregate": "aggregate",
    "kmeans-scores": "kmeans_scores",
    "certify": "certify",
    "collective": "collective",
    "poison-check": "poison_check",
    "report": "report",
    "figure": "figure",
    "paper-table": "paper_table",
    "check-config": "check_config",
}

__all__ = ["VERBS", "module"]


def module(verb: str) -> ModuleType:
    """The stage module of CLI verb ``verb``."""
    return importlib.import_module(f"{__name__}.{VERBS[verb]}")
