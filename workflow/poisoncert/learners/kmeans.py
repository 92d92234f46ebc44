"""DPA App. B's learner: 2-means on every unlabeled training image, then one labelled sample per
base classifier (k = m); the scheme binary_kmeans does not train (rule ``kmeans_scores`` counts
its votes in closed form), and the poison check retrains it through :func:`kmeans_learner`.
(The 2-means itself: :func:`binary_kmeans_fit`; the closed-form certificate:
:func:`poisoncert.certify.binary.binary_kmeans`.)"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import PoisonCertError
from ..partition import make_partitions
from .base import BaseLearner, Fit, RetrainFn, Shard, register
from .extractors import _check_images

__all__ = ["KMeansConfig", "kmeans2", "assign_clusters", "binary_kmeans_fit", "binary_kmeans_base_votes", "BinaryKMeans", "kmeans_learner", "kmeans_votes"]


# ---------------------------------------------------------------------------------------------- App. B: 2-means


@dataclass(frozen=True)
class KMeansConfig:
    """Deterministic 2-means (Lloyd's algorithm, float64) for App. B.

    ``n_init`` k-means++ starts, start r drawn with ``numpy.random.default_rng([seed, r])`` over the
    sorted distinct points; the run with the lowest inertia wins (ties: the first). Lloyd stops
    when the assignment no longer changes or after ``max_iter`` iterations.
    """

    n_init: int = 4
    max_iter: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_init < 1 or self.max_iter < 1:
            raise PoisonCertError(f"bad k-means configuration: {self}")


def _sqdist(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, 2) squared Euclidean distances, computed as sums of squared differences (no cancellation)."""
    return np.stack([((points - c) ** 2).sum(axis=1) for c in centroids], axis=1)


def assign_clusters(centroids: np.ndarray, points: np.ndarray) -> np.ndarray:
    """App. B ``assignment(s)``: 0 if ||mu_1 - s||^2 <= ||mu_2 - s||^2 else 1 (ties to the first centroid).

    ``points``: (N, D) float, or uint8 images (N, C, H, W) (flattened and scaled by 1/255, as in
    :func:`binary_kmeans_fit`). Returns int64 (N,) in {0, 1}.
    """
    p = _as_points(points)
    c = np.asarray(centroids, dtype=np.float64)
    if c.shape != (2, p.shape[1]):
        raise PoisonCertError(f"centroids must have shape (2, {p.shape[1]}), got {c.shape}")
    d = _sqdist(p, c)
    return (d[:, 0] > d[:, 1]).astype(np.int64)


def _as_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points)
    if p.dtype == np.uint8 and p.ndim == 4:
        return p.reshape(len(p), -1).astype(np.float64) / 255.0
    if p.ndim != 2:
        raise PoisonCertError(f"points must be (N, D) or uint8 images (N, C, H, W), got shape {p.shape}")
    return p.astype(np.float64)


def _kmeanspp(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    first = int(rng.integers(len(p)))
    d = ((p - p[first]) ** 2).sum(axis=1)
    total = d.sum()
    second = int(rng.choice(len(p), p=d / total)) if total > 0 else first
    return np.stack([p[first], p[second]])


def _lloyd(p: np.ndarray, c: np.ndarray, max_iter: int) -> tuple[np.ndarray, float]:
    assign = None
    for _ in range(max_iter):
        d = _sqdist(p, c)
        new = (d[:, 0] > d[:, 1]).astype(np.int64)
        for j in (0, 1):
            if not (new == j).any():  # empty cluster: take the point farthest from its centroid
                far = int(np.argmax(d[np.arange(len(p)), new]))
                new[far] = j
        c = np.stack([p[new == j].mean(axis=0) for j in (0, 1)])
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
    d = _sqdist(p, c)
    return c, float(d.min(axis=1).sum())


def kmeans2(points: np.ndarray, config: KMeansConfig = KMeansConfig()) -> np.ndarray:
    """Two centroids, float64 (2, D), of the *set* of ``points`` (deterministic, label-free).

    The rows are deduplicated and sorted by content first (so order and multiplicity cannot matter),
    and the two centroids are returned in lexicographic order of their values (a canonical naming).
    """
    p = _as_points(points)
    if len(p) < 2:
        raise PoisonCertError(f"2-means needs at least 2 points, got {len(p)}")
    p = np.unique(p, axis=0)  # sorted distinct rows
    if len(p) < 2:
        raise PoisonCertError("2-means needs at least 2 distinct points")
    best, best_inertia = None, np.inf
    for r in range(config.n_init):
        c0 = _kmeanspp(p, np.random.default_rng([config.seed, r]))
        c, inertia = _lloyd(p, c0, config.max_iter)
        if inertia < best_inertia:
            best, best_inertia = c, inertia
    order = np.lexsort(best.T[::-1])
    return np.ascontiguousarray(best[order])


def binary_kmeans_fit(train_images: np.ndarray, test_images: np.ndarray, config: KMeansConfig = KMeansConfig()) -> dict[str, np.ndarray]:
    """App. B, label-free part: 2-means on the unlabeled training images, cluster of every image.

    Images are flattened and scaled to [0, 1]. Returns ``{"centroids": (2, D) float64,
    "train_clusters": int64 (N,), "test_clusters": int64 (n_test,)}``; feed the clusters and the
    training labels to :func:`poisoncert.certify.binary.binary_kmeans`.
    """
    tr = _check_images(train_images, "train_images")
    te = _check_images(test_images, "test_images")
    mu = kmeans2(tr, config)
    return {"centroids": mu, "train_clusters": assign_clusters(mu, tr), "test_clusters": assign_clusters(mu, te)}


def binary_kmeans_base_votes(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                             config: KMeansConfig = KMeansConfig()) -> np.ndarray:
    """App. B literally: the vote of every base classifier f_i (k = m, P_i = {t_i}) on every test image.

    f_i(x) = label(t_i) if assignment(x) == assignment(t_i) else 1 - label(t_i). Returns int64
    (n_test, m). O(n_test * m) memory: for checks on small data; use the closed form
    :func:`poisoncert.certify.binary.binary_kmeans` at scale.
    """
    y = np.asarray(train_labels, dtype=np.int64)
    if y.shape != (len(train_images),) or (len(y) and (y.min() < 0 or y.max() > 1)):
        raise PoisonCertError("binary 2-means needs one label in {0, 1} per training image")
    fit = binary_kmeans_fit(train_images, test_images, config)
    same = fit["test_clusters"][:, None] == fit["train_clusters"][None, :]
    return np.where(same, y[None, :], 1 - y[None, :]).astype(np.int64)

def kmeans_learner(train_images: np.ndarray, test_images: np.ndarray):
    """App. B's base learner: 2-means on the unlabeled training images, then one labelled sample per model.

    Returns ``(retrain_fn, fit)``. ``retrain_fn(train_sets, seeds)`` gives each base classifier's
    one-hot votes (B, n_test, 2): a classifier owning the single sample (t, y) votes y on the test
    images of t's cluster and 1 - y on the others. ``fit`` is
    :func:`binary_kmeans_fit` on the given images (label-free: label flips
    leave it unchanged).
    """

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
