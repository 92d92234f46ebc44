"""Closed-form certificate of the binary 2-means SS-DPA (DPA paper, papers/000, Appendix B).

App. B specialises SS-DPA (Section 2.3) to a binary task (MNIST '1' vs '7') with k = m: every
partition holds exactly one labeled training sample t_i. With mu_1, mu_2 the 2-means centroids of
samples(T) and assignment(s) = 1 if ||mu_1 - s||^2 <= ||mu_2 - s||^2 else 2, base classifier i is

    f_i(x) = label(t_i)      if assignment(x) == assignment(t_i)
             1 - label(t_i)  otherwise.

Counting instead of running m classifiers ("we simply count the training samples which associate
each of the two cluster centroids with each of the two labels"): with n[a, y] the number of
training samples in cluster a with label y, a test image in cluster a gets

    V(y) = n[a, y] + n[1 - a, 1 - y]      votes for class y       (V(0) + V(1) = m).

The prediction and radius are SS-DPA Theorem 2 (eq. 10) on these counts:

    c = argmax_y V(y) (ties to class 0),   radius = floor((V(c) - V(1-c) - 1[1-c < c]) / 2)  label flips.

A label flip of t_i flips f_i's vote on every x (the clustering never sees labels), i.e. moves
exactly one vote, so the bound is also tight: radius + 1 flips of c-voters change the prediction.
Writing A = n[0, 0] + n[1, 1], the cluster-0 images get (V(0), V(1)) = (A, m - A) and the
cluster-1 images (m - A, A): all images share the margin |2A - m|, hence (up to the tie-break
term) the same certificate, as App. B notes.
"""

from __future__ import annotations

import numpy as np

from ..errors import PoisonCertError
from ._common import Certificate
from .dpa import gap_certificate

__all__ = ["binary_kmeans", "binary_kmeans_counts"]


def _binary(arr, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise PoisonCertError(f"{name} must be a 1-D integer array, got {a.dtype} {a.shape}")
    if len(a) and (a.min() < 0 or a.max() > 1):
        raise PoisonCertError(f"{name} must hold only 0 and 1")
    return a.astype(np.int64, copy=False)


def binary_kmeans_counts(train_clusters: np.ndarray, train_labels: np.ndarray, test_clusters: np.ndarray) -> np.ndarray:
    """Vote counts (n_test, 2) of the m = len(train_labels) App. B base classifiers, in closed form."""
    tc = _binary(train_clusters, "train_clusters")
    y = _binary(train_labels, "train_labels")
    xc = _binary(test_clusters, "test_clusters")
    if len(tc) != len(y):
        raise PoisonCertError(f"{len(tc)} training clusters but {len(y)} training labels")
    n = np.bincount(tc * 2 + y, minlength=4).reshape(2, 2)  # n[a, y]
    # V_a(y) = n[a, y] + n[1-a, 1-y]
    table = np.array([[n[a, yy] + n[1 - a, 1 - yy] for yy in (0, 1)] for a in (0, 1)], dtype=np.int64)
    return table[xc]


def binary_kmeans(train_clusters: np.ndarray, train_labels: np.ndarray, test_clusters: np.ndarray) -> Certificate:
    """App. B certificate for every test sample (unit: label flips), from cluster assignments.

    ``train_clusters`` / ``test_clusters``: 0/1 cluster of each training / test image (from
    :func:`poisoncert.learners.kmeans.binary_kmeans_fit`); ``train_labels``: 0/1 labels. ``detail`` holds
    ``counts`` (n_test, 2), ``gap`` (tie-adjusted), ``runner_up``, ``cluster`` (test cluster) and
    the per-cluster label table ``n`` (2, 2) and agreement ``A`` = n[0,0] + n[1,1] (broadcast).
    """
    counts = binary_kmeans_counts(train_clusters, train_labels, test_clusters)
    tc = np.asarray(train_clusters, dtype=np.int64)
    y = np.asarray(train_labels, dtype=np.int64)
    n_table = np.bincount(tc * 2 + y, minlength=4).reshape(2, 2)
    n_test = len(counts)
    if n_test == 0:
        z = np.zeros(0, np.int64)
        return Certificate(z, z.copy(), unit="label flips", detail={"counts": counts})
    if len(y) == 0:
        raise PoisonCertError("binary 2-means needs at least one training sample")
    pred, runner, gap = gap_certificate(counts)
    radius = np.floor_divide(gap, 2).astype(np.int64)
    detail = {
        "counts": counts,
        "gap": gap,
        "runner_up": runner,
        "cluster": np.asarray(test_clusters, dtype=np.int64),
        "n": n_table,
        "A": np.full(n_test, n_table[0, 0] + n_table[1, 1], dtype=np.int64),
    }
    return Certificate(pred, radius, unit="label flips", detail=detail)
