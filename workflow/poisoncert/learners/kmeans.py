"""DPA App. B's learner: 2-means on every unlabeled training image, then one labelled sample per
base classifier (k = m); the scheme binary_kmeans does not train (rule ``kmeans_scores`` counts
its votes in closed form), and the poison check retrains it through :func:`kmeans_learner`.
(The 2-means itself: :func:`poisoncert.semisup.binary_kmeans_fit`.)"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping

import numpy as np

from ..errors import PoisonCertError
from ..partition import make_partitions
from .base import BaseLearner, Fit, RetrainFn, Shard, register

__all__ = ["BinaryKMeans", "kmeans_learner", "kmeans_votes"]


def kmeans_learner(train_images: np.ndarray, test_images: np.ndarray):
    """App. B's base learner: 2-means on the unlabeled training images, then one labelled sample per model.

    Returns ``(retrain_fn, fit)``. ``retrain_fn(train_sets, seeds)`` gives each base classifier's
    one-hot votes (B, n_test, 2): a classifier owning the single sample (t, y) votes y on the test
    images of t's cluster and 1 - y on the others. ``fit`` is
    :func:`poisoncert.semisup.binary_kmeans_fit` on the given images (label-free: label flips
    leave it unchanged).
    """
    from ..semisup import KMeansConfig, assign_clusters, binary_kmeans_fit

    fit = binary_kmeans_fit(train_images, test_images, KMeansConfig())
    n_test = len(test_images)

    def retrain_fn(train_sets, seeds=None) -> np.ndarray:
        if any(len(y) != 1 for _, y in train_sets):
            raise PoisonCertError("an App. B base classifier is trained on exactly one labelled sample")
        own = np.concatenate([x for x, _ in train_sets]) if train_sets else train_images[:0]
        clusters = assign_clusters(fit["centroids"], own) if len(own) else np.zeros(0, np.int64)
        labels = np.array([int(y[0]) for _, y in train_sets], dtype=np.int64)
        votes = np.where(fit["test_clusters"][None, :] == clusters[:, None], labels[:, None], 1 - labels[:, None])
        out = np.zeros((len(train_sets), n_test, 2), dtype=np.float32)
        np.put_along_axis(out, votes[..., None], 1.0, axis=2)
        return out

    return retrain_fn, fit


def kmeans_votes(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """App. B's base classifiers' one-hot votes (n_test, m, 2) and the fit they come from.

    Base classifier i owns the i-th training sample in canonical content order (its singleton
    partition, :func:`poisoncert.partition.make_partitions`) and is :func:`kmeans_learner`.
    """
    from ..semisup import KMeansConfig

    retrain_fn, fit = kmeans_learner(train_images, test_images)
    parts = make_partitions(train_images, train_labels, "binary_kmeans", len(train_labels))  # the scheme: singleton partitions
    order = parts.indices
    scores = np.ascontiguousarray(np.transpose(retrain_fn([(train_images[order[i : i + 1]], train_labels[order[i : i + 1]]) for i in range(len(order))]), (1, 0, 2)))
    info = {
        "kmeans": dataclasses.asdict(KMeansConfig()),
        "centroids_sha256": hashlib.sha256(np.ascontiguousarray(fit["centroids"]).tobytes()).hexdigest(),
        "binary_kmeans": {"train_clusters": fit["train_clusters"][order].tolist(), "train_labels": train_labels[order].tolist(),
                          "test_clusters": fit["test_clusters"].tolist()},
        "cluster_sizes": np.bincount(fit["train_clusters"], minlength=2).tolist(),
    }
    return scores, info


class BinaryKMeans(BaseLearner):
    name = record = "binary_kmeans"

    def fit_predict(self, shard: Shard) -> Fit:
        ds = shard.dataset
        retrain_fn, _ = kmeans_learner(ds.train_images, ds.test_images)
        return Fit(retrain_fn(shard.train_sets(), list(shard.seeds)))

    def retrainer(self, ds: Any, meta: Mapping[str, Any], upstream: Mapping[str, str | None]) -> RetrainFn:
        return kmeans_learner(ds.train_images, ds.test_images)[0]


register(BinaryKMeans())
