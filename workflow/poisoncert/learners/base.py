"""The protocol every base learner implements, and the pieces they share.

A base learner (:class:`BaseLearner`) fits one model per partition of a train job's shard, each
a pure function of its partition's training set *as a set* and its seed, and predicts the test
logits (:class:`Fit`: float32 (B, n_test, C)). It says what it reads from upstream rules
(``upstream``: the shared label-free extractor, Chen's phi_2), which registry learner's threat
model its ensembles have (``record``: :data:`poisoncert.registry.LEARNERS`, whose
``sees_unlabeled_train`` gives the threat unit), how its train job is called (``train_flags``),
what of an experiment's config it checks (``check_config``) and, where the poison check covers it,
how to retrain models exactly as the workflow did (``retrainer``).

The train stage, the poison check, aggregate and config validation look a learner up here
(:func:`implementation`, :func:`for_experiment`) instead of branching on its name; adding one is
its module, its :func:`register` call and its test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import PoisonCertError

__all__ = ["Shard", "Fit", "BaseLearner", "RetrainFn", "register", "implementation", "for_experiment", "IMPLEMENTATIONS",
           "per_partition", "check_feature_sets"]

#: ``retrain_fn(train_sets, seeds) -> logits (B, n_test, C)``: the poison check's retraining.
RetrainFn = Callable[[list[tuple[np.ndarray, np.ndarray]], list[int]], np.ndarray]


@dataclass(frozen=True)
class Shard:
    """What a train job hands its learner: the dataset, each model's members (canonical order) and
    seed, the partitions' metadata, the engine settings (``train``: a
    :class:`poisoncert.train.TrainConfig`), the resolved device, the upstream files by role and the
    learner's own settings (``options``: the head or frozen config fields)."""

    dataset: Any
    members: Sequence[np.ndarray]
    seeds: Sequence[int]
    partitions_meta: Mapping[str, Any]
    train: Any
    device: str
    threads: int = 1
    progress: bool = True
    upstream: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def train_sets(self, labels: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each model's (images, labels) (``labels``: the training labels to use, default the dataset's)."""
        y = self.dataset.train_labels if labels is None else labels
        return [(self.dataset.train_images[m], y[m]) for m in self.members]

    def file(self, role: str) -> str:
        """The upstream file of ``role`` (one line naming the flag when it is missing)."""
        if not self.upstream.get(role):
            raise PoisonCertError(f"this learner reads the experiment's {role} file; pass --{role}")
        return self.upstream[role]


@dataclass
class Fit:
    """A shard's test logits (B, n_test, C), extra arrays for the shard file, extra metadata."""

    logits: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class BaseLearner:
    """The protocol (with its defaults). ``name``: the implementation (``poisoncert train
    --learner``); ``record``: the registry learner its ensembles are certified as; ``upstream``:
    the roles of the files it reads (``extractor``, ``phase2``)."""

    name: str = ""
    record: str = ""
    upstream: tuple[str, ...] = ()

    def fit_predict(self, shard: Shard) -> Fit:
        raise NotImplementedError

    def train_flags(self, exp_name: str, exp: Mapping[str, Any]) -> list[str]:
        """The train job's command-line words besides the engine settings (upstream files, own settings)."""
        return [w for role in self.upstream for w in (f"--{role}", upstream_file(exp_name, role))]

    def check_config(self, exp: Mapping[str, Any], where: str) -> None:
        """Refuse (one line, ``where`` = ``config key experiments.<name>``) settings this learner cannot train."""

    def retrainer(self, ds: Any, meta: Mapping[str, Any], upstream: Mapping[str, str | None]) -> RetrainFn | None:
        """The poison check's ``retrain_fn`` for an ensemble of scores metadata ``meta``, or None (not covered)."""
        return None


#: Upstream role -> the rule output it is (``results/<exp>/...``).
UPSTREAM_FILES = {"extractor": "extractor.pt", "phase2": "phase2.npz"}


def upstream_file(exp_name: str, role: str) -> str:
    """The file of upstream ``role`` of experiment ``exp_name`` (rules extractor, phase2)."""
    return f"results/{exp_name}/{UPSTREAM_FILES[role]}"


IMPLEMENTATIONS: dict[str, BaseLearner] = {}


def register(learner: BaseLearner) -> BaseLearner:
    """Add an implementation (its ``record`` must be a registry learner)."""
    from .. import registry

    registry.learner(learner.record)
    if learner.name in IMPLEMENTATIONS and IMPLEMENTATIONS[learner.name] is not learner:
        raise PoisonCertError(f"learner implementation {learner.name!r} is registered twice")
    IMPLEMENTATIONS[learner.name] = learner
    return learner


def implementation(name: Any) -> BaseLearner:
    """The implementation ``name`` (one line naming the known ones)."""
    from . import _load_all

    _load_all()
    if not isinstance(name, str) or name not in IMPLEMENTATIONS:
        raise PoisonCertError(f"unknown learner {name!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[name]


#: Chen et al.'s 2-phase classifier (``two_phase: true``) is a variant of the supervised learner.
TWO_PHASE = "two_phase"


def for_experiment(exp: Mapping[str, Any]) -> BaseLearner:
    """The implementation an experiment (or a scores file's recorded experiment) trains with."""
    return implementation(TWO_PHASE if exp.get("two_phase") else exp.get("learner") or "supervised")


def per_partition(
    members: Sequence[np.ndarray],
    seeds: Sequence[int],
    n_test: int,
    n_classes: int,
    fit_one: Callable[[int, np.ndarray, int], np.ndarray],
    what: str,
) -> np.ndarray:
    """The loop every per-partition learner shares: logits (B, n_test, C) with ``fit_one(b, idx,
    seed)`` for each non-empty partition; an empty one gets zero logits (a vote for class 0) and
    one warning naming ``what`` (e.g. "SS-DPA heads").

    >>> per_partition([np.array([0]), np.array([1])], [0, 1], 2, 3, lambda b, idx, seed: np.full((2, 3), b), "toys").sum(axis=(1, 2)).tolist()
    [0.0, 6.0]
    """
    if len(members) != len(seeds):
        raise PoisonCertError(f"{len(members)} partitions but {len(seeds)} seeds")
    out = np.zeros((len(members), n_test, n_classes), np.float32)
    empty = []
    for b, (idx, seed) in enumerate(zip(members, seeds)):
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            empty.append(b)
            continue
        out[b] = fit_one(b, idx, seed)
    if empty:
        warnings.warn(f"{len(empty)} of {len(members)} {what} have an empty partition (first: {empty[:5]});"
                      " they output zero logits (a vote for class 0)", stacklevel=3)
    return out


def check_feature_sets(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    members: Sequence[np.ndarray],
    seeds: Sequence[int],
    test_features: np.ndarray,
    n_classes: int,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The checks of every per-partition learner on shared features (the SS-DPA heads, frozen):
    (N, F) / (n_test, F) finite features, one label in [0, n_classes) per training row, one seed
    per partition. Returns the features as ``dtype`` (test rows contiguous) and the labels as
    int64; raises :class:`PoisonCertError` with one line.

    >>> f, y, t = check_feature_sets(np.zeros((2, 3)), np.array([0, 1]), [np.array([0, 1])], [0], np.zeros((1, 3)), 2)
    >>> f.dtype, y.dtype, t.shape
    (dtype('float32'), dtype('int64'), (1, 3))
    """
    ftr = np.asarray(train_features, dtype=dtype)
    ytr = np.asarray(train_labels)
    fte = np.ascontiguousarray(np.asarray(test_features, dtype=dtype))
    if ftr.ndim != 2 or fte.ndim != 2 or ftr.shape[1] != fte.shape[1]:
        raise PoisonCertError(f"features must be (N, F) and (n_test, F), got {ftr.shape} and {fte.shape}")
    if ytr.shape != (len(ftr),):
        raise PoisonCertError(f"train_labels must be ({len(ftr)},), got {ytr.shape}")
    if len(members) != len(seeds):
        raise PoisonCertError(f"{len(members)} partitions but {len(seeds)} seeds")
    if len(ytr) and (ytr.min() < 0 or ytr.max() >= n_classes):
        raise PoisonCertError(f"train_labels must lie in [0, {n_classes})")
    if not (np.isfinite(ftr).all() and np.isfinite(fte).all()):
        raise PoisonCertError("features contain NaN/inf")
    return ftr, ytr.astype(np.int64), fte
