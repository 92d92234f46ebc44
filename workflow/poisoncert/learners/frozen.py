"""Frozen-feature base learners: one label-free extractor, a nearest-centroid or k-NN rule per partition.

Beyond the papers (issue 16). The Lethal Dose Conjecture (Wang, Levine & Feizi 2022) says that
DPA / FA robustness at a given k is bounded by the base learner's data efficiency; a classifier on
good *frozen* features needs only a few labelled samples per class. The learner ``frozen``:

1. the SS-DPA RotNet extractor (:func:`poisoncert.learners.extractors.train_extractor`, DPA paper Section
   2.3.1), trained ONCE on the unlabeled training images, gives every image a standardised
   feature vector (:func:`poisoncert.learners.extractors.extract_features`);
2. base classifier i is a rule on the features of partition i's own labelled samples only
   (:class:`FrozenConfig`):

   * ``centroid`` (nearest class mean, Mensink et al. 2013): class c's logit is
     ``-||f(x) - mu_c||^2 / F``, mu_c the mean feature of the partition's samples of class c;
     a class with no sample in the partition gets the row's lowest logit minus 1;
   * ``knn``: the fraction of the ``knn_k`` nearest labelled samples (squared Euclidean distance,
     ties by the canonical order of the partition) that have class c.

   No training, no randomness: the seed is accepted for the learners' common signature and unused.

Threat model: the extractor sees every training image (unlabeled), so an *inserted* image reaches
every base model; the certificate is against **label flips** only (SS-DPA's unit, DPA Theorem 2),
as for ``rotnet`` (``registry.LEARNERS["frozen"].sees_unlabeled_train``). An extractor trained on
data outside the poisonable set (a public pre-training set) would restore the insertion unit, but
the workflow has no such data for its datasets and cannot check that a file came from it, so that
option is not offered.

Determinism: base classifier i is a function of the *set* of (feature, label) pairs of its
partition: its rows are sorted by content (:func:`poisoncert.data.canonical_order`) before any
arithmetic, and every classifier is computed alone (float64 numpy, fixed shapes per partition), so
its logits do not depend on the other partitions, their sizes or the shard. The features are the
extractor's, a function of the set of unlabeled images (the extractors' contract).

>>> f = np.array([[0.0], [1.0], [10.0], [11.0]]); y = np.array([0, 0, 1, 1])
>>> z = fit_predict(f, y, [np.arange(4), np.array([0, 1])], [0, 1], np.array([[2.0], [9.0]]), 3)
>>> z.argmax(-1).tolist()        # partition 1 has no sample of class 1: it votes 0
[[0, 1], [0, 0]]
>>> z[0, 0].tolist()             # -(2 - 0.5)^2, -(2 - 10.5)^2, absent class 2: lowest - 1
[-2.25, -72.25, -73.25]
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..data import canonical_order, row_keys
from ..errors import PoisonCertError
from ..schema import param
from .base import BaseLearner, Fit, RetrainFn, Shard, register
from .extractors import extract_features, read_checked_extractor

__all__ = ["CLASSIFIERS", "FrozenConfig", "fit_predict", "frozen_learner", "Frozen"]

#: The values of ``FrozenConfig.classifier``.
CLASSIFIERS: tuple[str, ...] = ("centroid", "knn")

_TEST_CHUNK = 2048  # test rows per distance block (fixed: bits never depend on the test-set size)


@dataclass(frozen=True)
class FrozenConfig:
    """The per-partition rule on frozen features: ``classifier`` (centroid | knn) and, for knn,
    the number of neighbours ``knn_k`` (fewer when the partition has fewer samples)."""

    # Each field's doc, bounds and allowed values are the config schema's (poisoncert.schema generates
    # experiments.<name>.frozen from them: edit here, then `python -m poisoncert.schema --write`).
    classifier: str = param("centroid", "centroid: nearest class mean of the partition's samples; knn: vote of the knn_k nearest "
                            "samples of the partition.", enum=CLASSIFIERS)
    knn_k: int = param(5, "Neighbours of classifier knn (all samples when the partition has fewer).", minimum=1, maximum=1000000)

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise PoisonCertError(f"FrozenConfig: unknown classifier {self.classifier!r}; valid ones: {', '.join(CLASSIFIERS)}")
        if isinstance(self.knn_k, bool) or not isinstance(self.knn_k, (int, np.integer)) or self.knn_k < 1:
            raise PoisonCertError(f"FrozenConfig: knn_k must be an integer >= 1, got {self.knn_k!r}")


def _sq_dist(test: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n_test, n_ref), float64, computed in fixed blocks of test rows."""
    ref_sq = (ref * ref).sum(axis=1)
    out = np.empty((len(test), len(ref)), np.float64)
    for s in range(0, len(test), _TEST_CHUNK):
        t = test[s: s + _TEST_CHUNK]
        out[s: s + len(t)] = np.maximum((t * t).sum(axis=1)[:, None] - 2.0 * (t @ ref.T) + ref_sq[None, :], 0.0)
    return out


def _centroid_logits(f: np.ndarray, y: np.ndarray, test: np.ndarray, n_classes: int) -> np.ndarray:
    present = np.flatnonzero(np.bincount(y, minlength=n_classes))
    mu = np.stack([f[y == c].mean(axis=0) for c in present])
    z = np.empty((len(test), n_classes), np.float64)
    d = -_sq_dist(test, mu) / max(f.shape[1], 1)
    z[:] = (d.min(axis=1) - 1.0)[:, None]
    z[:, present] = d
    return z


def _knn_logits(f: np.ndarray, y: np.ndarray, test: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    k = min(k, len(y))
    z = np.zeros((len(test), n_classes), np.float64)
    for s in range(0, len(test), _TEST_CHUNK):
        d = _sq_dist(test[s: s + _TEST_CHUNK], f)
        nearest = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties: the partition's canonical order
        rows = np.repeat(np.arange(len(d)), k)
        np.add.at(z, (s + rows, y[nearest].reshape(-1)), 1.0 / k)
    return z


def fit_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    members: Sequence[np.ndarray],
    seeds: Sequence[int],
    test_features: np.ndarray,
    n_classes: int,
    config: FrozenConfig = FrozenConfig(),
) -> np.ndarray:
    """Base classifier b = the ``config`` rule on ``train_features[members[b]]`` and their labels.

    Returns float32 logits (B, n_test, n_classes), the format of every learner. ``seeds`` are
    checked for length only (the rules are deterministic). An empty partition gets zero logits
    (a vote for class 0) and a warning, as in the other learners.
    """
    from .base import check_feature_sets, per_partition

    ftr, ytr, fte = check_feature_sets(train_features, train_labels, members, seeds, test_features, n_classes, np.float64)

    def fit_one(b: int, idx: np.ndarray, seed: int) -> np.ndarray:
        f, y = ftr[idx], ytr[idx]
        o = canonical_order(f, y)
        f, y = np.ascontiguousarray(f[o]), y[o]
        if config.classifier == "centroid":
            return _centroid_logits(f, y, fte, n_classes)
        return _knn_logits(f, y, fte, n_classes, config.knn_k)

    return per_partition(members, seeds, len(fte), n_classes, fit_one, "frozen-feature classifiers")


def frozen_features(state: dict[str, Any], train_images: np.ndarray, test_images: np.ndarray,
                    device: str | None = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The extractor's features of the training and the test images, extracted together (one
    standardisation over both) as every frozen base model sees them: the train stage and the poison
    check's retraining call this one function, so their logits agree bit for bit."""
    n = len(train_images)
    feats = extract_features(state, np.concatenate([np.asarray(train_images), np.asarray(test_images)]), device=device)
    return feats[:n], feats[n:]


def frozen_learner(
    state: dict[str, Any],
    train_images: np.ndarray,
    test_images: np.ndarray,
    n_classes: int,
    config: FrozenConfig = FrozenConfig(),
    device: str | None = "cpu",
) -> Callable[[list[tuple[np.ndarray, np.ndarray]], list[int]], np.ndarray]:
    """A ``retrain_fn(train_sets, seeds) -> logits (B, n_test, C)`` for the poison-and-retrain check.

    The features of the training and test images are extracted once, together, as the train stage
    does; a training set is then looked up by image content. Only images of ``train_images`` may
    appear in the sets: the learner's threat model is label flips, which move no image.
    """
    train_images = np.asarray(train_images)
    ftr, fte = frozen_features(state, train_images, test_images, device)
    lookup = {key: i for i, key in enumerate(row_keys(train_images).tolist())}

    def retrain_fn(train_sets: list[tuple[np.ndarray, np.ndarray]], seeds: list[int]) -> np.ndarray:
        rows, labels, members, start = [], [], [], 0
        for x, y in train_sets:
            try:
                idx = [lookup[key] for key in row_keys(np.asarray(x)).tolist()] if len(y) else []
            except KeyError:
                raise PoisonCertError("the frozen learner's features cover the unlabeled training images only; "
                                      "an inserted image is outside its threat model (label flips)") from None
            rows.append(np.asarray(idx, np.int64))
            labels.append(np.asarray(y, np.int64))
            members.append(np.arange(start, start + len(idx)))
            start += len(idx)
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return fit_predict(ftr[r], np.concatenate(labels) if labels else np.zeros(0, np.int64), members, seeds, fte, n_classes, config)

    return retrain_fn

def _config(fields: Mapping[str, Any]):
    try:
        return FrozenConfig(**dict(fields))
    except TypeError as exc:
        raise PoisonCertError(f"bad frozen-learner configuration: {exc}") from None


class Frozen(BaseLearner):
    name = record = "frozen"
    upstream = ("extractor",)

    def fit_predict(self, shard: Shard) -> Fit:
        from ..learners.frozen import fit_predict, frozen_features

        ds = shard.dataset
        state = read_checked_extractor(shard.file("extractor"), shard.partitions_meta["dataset_hash"], "data; delete it and rerun")
        cfg = _config(shard.options)
        ftr, fte = frozen_features(state, ds.train_images, ds.test_images, shard.device)
        logits = fit_predict(ftr, ds.train_labels, list(shard.members), list(shard.seeds), fte, ds.n_classes, cfg)
        return Fit(logits, meta={"frozen": dataclasses.asdict(cfg)})

    def train_flags(self, exp_name: str, exp: Mapping[str, Any]) -> list[str]:
        return super().train_flags(exp_name, exp) + ["--learner", self.name, "--learner-config", json.dumps(exp["frozen"])]

    def retrainer(self, ds: Any, meta: Mapping[str, Any], upstream: Mapping[str, str | None]) -> RetrainFn:
        from ..learners.frozen import FrozenConfig, frozen_learner
        from .supervised import poison_check_device

        path = upstream.get("extractor")
        if path is None:
            raise PoisonCertError("learner frozen: pass the experiment's extractor file (--extractor results/<exp>/extractor.pt)")
        state = read_checked_extractor(path, meta.get("dataset_hash"), "data than these scores; give the experiment's own extractor")
        fields = (meta.get("experiment") or {}).get("frozen") or {}
        return frozen_learner(state, ds.train_images, ds.test_images, ds.n_classes, FrozenConfig(**fields), device=poison_check_device(meta))


register(Frozen())
