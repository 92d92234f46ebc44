"""Base learners: one module per learner behind one protocol (:class:`~poisoncert.learners.base.BaseLearner`).

* :mod:`.supervised` — the papers' networks on each base model's labelled set (the engine);
* :mod:`.two_phase` — Chen et al.'s 2-phase classifier (a supervised variant reading phi_2);
* :mod:`.heads` — SS-DPA's heads (NiN block, linear, logistic) on the label-free extractor (learners rotnet, simclr);
* :mod:`.frozen` — nearest centroid / k-NN on the frozen extractor features;
* :mod:`.kmeans` — DPA App. B's 2-means and its learner with one labelled sample per base classifier;
* :mod:`.extractors` — the label-free extractors those learners share (RotNet, SimCLR): training them
  once on the unlabeled training images, their features, and reading their files.

The registry's :class:`poisoncert.registry.Learner` records hold what the threat model needs
(whether a learner sees the unlabeled training images, its extractors, its schemes); the modules
here hold how each trains. Nothing outside them branches on a learner's name.

>>> sorted(IMPLEMENTATIONS) == sorted(["supervised", "two_phase", "rotnet", "simclr", "frozen", "binary_kmeans"])
True
>>> for_experiment({"learner": "supervised", "two_phase": True}).record
'supervised'
"""

from __future__ import annotations

import importlib

from .base import IMPLEMENTATIONS, BaseLearner, Fit, Shard, for_experiment, implementation, register

__all__ = ["BaseLearner", "Fit", "Shard", "IMPLEMENTATIONS", "implementation", "for_experiment", "register"]

_MODULES = ("supervised", "two_phase", "heads", "frozen", "kmeans")


def _load_all() -> None:
    """Import every learner module (each registers its implementations; none imports torch at import)."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")


_load_all()
