"""How each scheme splits the training set: the papers' partition and selection rules, pure numpy.

The scheme records of :mod:`poisoncert.registry` carry these functions (``Scheme.split`` for the
deterministic schemes, ``Scheme.select`` for the random selections); :mod:`poisoncert.partition`
calls them through the record, so no module branches on a scheme's name. Each ``split_*``
function takes ``(h, images, order, k, d, offsets)`` — the hash h(t) of every training sample,
the images, the canonical order (:func:`poisoncert.data.canonical_order`), k, d and the FA spread
offsets — and returns every base model's members (in canonical order) and the offsets it used.

>>> h = np.array([0, 1, 2, 3, 4, 5]); order = np.arange(6)
>>> [g.tolist() for g in split_dpa(h, None, order, 3, 1, None)[0]]
[[0, 3], [1, 4], [2, 5]]
>>> [g.tolist() for g in split_dpa_star(h, None, order, 3, 2, None)[0]][:3]
[[0, 3], [0, 3], [1, 4]]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .certify.fa import check_offsets
from .errors import PoisonCertError

__all__ = [
    "pixel_sum_hash",
    "sorted_index",
    "groups_by_bucket",
    "split_dpa",
    "split_ssdpa",
    "split_fa",
    "split_dpa_star",
    "split_singletons",
    "select_with_replacement",
    "select_without_replacement",
    "select_binomial",
]

Groups = tuple[list[np.ndarray], list[int]]


def pixel_sum_hash(images: np.ndarray) -> np.ndarray:
    """h(t) = sum of the uint8 pixel values of the image (DPA paper Section 2.2, FA reference)."""
    n = len(images)
    return images.reshape(n, -1).sum(axis=1, dtype=np.int64)


def sorted_index(images: np.ndarray) -> np.ndarray:
    """index(T_sorted, sample(t)): rank of each image among the sorted *unique* unlabeled images (DPA eq. 6-7).

    Identical images share one index, so they share a partition whatever their labels.
    """
    from .data import row_keys  # data reads the registry, which reads this module

    _, inverse = np.unique(row_keys(images), return_inverse=True)
    return inverse.astype(np.int64).ravel()


def groups_by_bucket(bucket: np.ndarray, n_buckets: int, order: np.ndarray) -> list[np.ndarray]:
    """For each bucket, the sample indices in canonical order (``order`` = canonical permutation)."""
    b = bucket[order]
    sorted_by_bucket = np.argsort(b, kind="stable")  # keeps canonical order inside each bucket
    members = order[sorted_by_bucket]
    cuts = np.searchsorted(b[sorted_by_bucket], np.arange(n_buckets + 1))
    return [members[cuts[i] : cuts[i + 1]] for i in range(n_buckets)]


def split_dpa(h: np.ndarray, images: np.ndarray, order: np.ndarray, k: int, d: int, offsets: Sequence[int] | None) -> Groups:
    """DPA paper eq. (1): partition = h(t) mod k."""
    return groups_by_bucket(h % k, k, order), []


def split_dpa_star(h: np.ndarray, images: np.ndarray, order: np.ndarray, k: int, d: int, offsets: Sequence[int] | None) -> Groups:
    """ROE paper Section 4.1: the DPA partitions, d models per partition (model = partition * d + j)."""
    return [g for g in groups_by_bucket(h % k, k, order) for _ in range(d)], []


def split_ssdpa(h: np.ndarray, images: np.ndarray, order: np.ndarray, k: int, d: int, offsets: Sequence[int] | None) -> Groups:
    """DPA paper eq. (7): partition = sorted index of the unlabeled image mod k (label flips cannot move it)."""
    return groups_by_bucket(sorted_index(images) % k, k, order), []


def split_singletons(h: np.ndarray, images: np.ndarray, order: np.ndarray, k: int, d: int, offsets: Sequence[int] | None) -> Groups:
    """DPA App. B: base classifier i owns the i-th training sample in canonical order (k = m)."""
    n = len(order)
    if k != n:
        raise PoisonCertError(f"binary_kmeans has k = m: one base classifier per training sample ({n}), got k={k}")
    return [order[i : i + 1] for i in range(n)], []


def split_fa(h: np.ndarray, images: np.ndarray, order: np.ndarray, k: int, d: int, offsets: Sequence[int] | None) -> Groups:
    """FA paper Definition 1: split bucket j = h(t) mod kd; model i gets every bucket j with (j + r) mod kd = i, r in R."""
    n = len(order)
    kd = k * d
    used_offsets = check_offsets(offsets, k, d).tolist()
    buckets = groups_by_bucket(h % kd, kd, order)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    groups = []
    for i in range(kd):
        # model i <- buckets j with (j + r) mod kd == i, i.e. j = (i - r) mod kd
        idx = np.concatenate([buckets[(i - r) % kd] for r in used_offsets])
        groups.append(idx[np.argsort(rank[idx], kind="stable")])
    return groups, used_offsets


def select_with_replacement(rng: np.random.Generator, n_p: int, n_s: int) -> np.ndarray:
    """Bagging (Jia et al.; Chen eq. 8): n_s positions into D^p drawn uniformly with replacement."""
    return np.sort(rng.integers(0, n_p, size=n_s))


def select_without_replacement(rng: np.random.Generator, n_p: int, n_s: int) -> np.ndarray:
    """Chen eq. 7: n_s distinct positions into D^p."""
    return np.sort(rng.choice(n_p, size=n_s, replace=False))


def select_binomial(rng: np.random.Generator, n_p: int, n_s: int) -> np.ndarray:
    """Chen eq. 9: every position of D^p kept independently with p = n_s / |D^p|."""
    return np.flatnonzero(rng.random(n_p) < n_s / n_p)
