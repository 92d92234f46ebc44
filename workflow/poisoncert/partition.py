"""Training sets of the base models: which training samples each base model sees.

Every scheme returns a :class:`Partitions`: for each base model, the indices of its training
samples in the canonical training set, sorted in canonical content order
(:func:`poisoncert.data.canonical_order`), and the model's training seed. Indices may repeat
(bagging with replacement) but never across the deterministic schemes' buckets.

Schemes (the papers' definitions):

* ``dpa``      DPA paper eq. (1): bucket = h(t) mod k with h = sum of the uint8 pixel values (of the
               source image for datasets stored resized, ``Dataset.train_pixel_sums``: GTSRB).
* ``ssdpa``    DPA paper eq. (7): bucket = index of the image in the sorted list of the unique
               unlabeled training images, mod k (label flips cannot move a sample).
* ``fa``       FA paper Definition 1: split bucket j = h(t) mod kd, spread with offsets R
               (|R| = d): model i is trained on every bucket j with (j + r) mod kd = i, r in R.
* ``dpa_star`` ROE paper Section 4.1: the DPA partitions, d models per partition with
               different seeds; model index = partition * d + j.

Random selection (Jia et al. 2021, papers/002; Chen et al., papers/004), T models, selection
size n_s = k, drawn from the potentially poisoned part D^p (the training set minus the known-clean
part D^c, which every model also gets, Chen et al. Algorithm 2):

* ``bagging``      n_s samples drawn uniformly *with* replacement (Jia et al.; Chen eq. 8);
* ``bagging_wor``  n_s distinct samples drawn uniformly *without* replacement (Chen eq. 7);
* ``binomial``     every sample kept independently with p = n_s / |D^p| (Chen eq. 9).

Model m's draw comes from ``numpy.random.default_rng([seed_base, m, 0xBA6])`` over D^p in
canonical order, so it is reproducible and independent of the file order and of other models.
With ``balance`` (Chen et al. Algorithm 2, BALANCE), the model's set D_sub ∪ D^c is expanded to
``balance_size`` samples drawn with replacement with weights 1 / (count of the sample's class in
the set), from the same generator: a deterministic function of the set and the seed. The class
of a sample for these weights is its label, or its ``balance_labels`` entry when given: the
2-phase classifier of case 3 (:mod:`poisoncert.two_phase`) balances phi_1's task, the poisoned
classes against the merged virtual clean class (Chen et al.: "we use the weight balance method to
balance the dataset for the binary classification").

``binary_kmeans`` (DPA App. B) has no partition step: its k = m base classifiers (one training
sample each) are counted in closed form (rule ``kmeans_scores``); :func:`n_models` knows it.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .certify.fa import check_offsets, default_fa_offsets
from .data import atomic_savez, canonical_order, load_npz, row_keys
from . import registry as _registry
from .errors import PoisonCertError
from .splits import pixel_sum_hash, sorted_index

__all__ = [
    "Partitions",
    "SCHEMES",
    "pixel_sum_hash",
    "byte_hash",
    "sorted_index",
    "default_fa_offsets",
    "check_offsets",
    "n_models",
    "make_partitions",
    "make_selections",
    "clean_mask",
    "save_partitions",
    "read_partitions",
]

#: From the registry. binary_kmeans (App. B) has singleton training sets, built here for the poison check.
DETERMINISTIC_SCHEMES = tuple(n for n, s in _registry.SCHEMES.items() if not s.selection)
SELECTION_SCHEMES = tuple(n for n, s in _registry.SCHEMES.items() if s.selection)
SCHEMES = DETERMINISTIC_SCHEMES + SELECTION_SCHEMES
_SELECTION_TAG = 0xBA6


@dataclass
class Partitions:
    """Index lists of every base model's training set (CSR layout) and the models' seeds."""

    scheme: str
    k: int
    d: int
    indices: np.ndarray  # int64, concatenated index lists
    bounds: np.ndarray  # int64 (n_models + 1,), model m owns indices[bounds[m]:bounds[m+1]]
    seeds: np.ndarray  # int64 (n_models,)
    offsets: list[int] = field(default_factory=list)  # FA spread offsets R
    extra: dict = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return len(self.bounds) - 1

    def members(self, m: int) -> np.ndarray:
        return self.indices[self.bounds[m] : self.bounds[m + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    def meta(self) -> dict:
        return {"scheme": self.scheme, "k": self.k, "d": self.d, "offsets": list(map(int, self.offsets)), "n_models": self.n_models, **self.extra}


def byte_hash(rows: np.ndarray) -> np.ndarray:
    """h(t) for samples of any dtype and shape: a hash of each sample's bytes (BLAKE2b, 63 bits).

    The generic partition key of :class:`poisoncert.ensemble.PartitionAggregationClassifier`
    (float tabular rows, images): it depends on the sample alone, never on its label or on the
    other samples, so one inserted or removed sample moves no other (the property DPA's
    Theorem 1 needs of h). Unlike a truncated float sum (``int(np.sum(x)) % k``) it does not
    collapse samples that differ by less than 1, and it is the same on every platform. It hashes
    the bytes *as stored*: the same values in another dtype or byte order hash differently, so
    callers fix the dtype first (the estimator casts features to little-endian float64 and
    turns -0.0 into 0.0).

    >>> byte_hash(np.array([[0.5, 1.0], [0.5, 1.0], [1.0, 0.5]])).tolist()[:2] == [byte_hash(np.array([[0.5, 1.0]]))[0]] * 2
    True
    >>> bool((byte_hash(np.arange(6, dtype=np.uint8).reshape(3, 2)) >= 0).all())
    True
    """
    import hashlib

    n = len(rows)
    raw = np.ascontiguousarray(rows).reshape(n, -1).view(np.uint8)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        digest = hashlib.blake2b(raw[i].tobytes(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") >> 1  # 63 bits: non-negative int64
    return out


def n_models(scheme: str, k: int, d: int, t: int | None = None) -> int:
    """Number of base models the scheme trains (known from the config alone; ``t`` = T for selection)."""
    return _registry.scheme(scheme).n_models(k, d, t)


def _csr(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    bounds = np.zeros(len(groups) + 1, dtype=np.int64)
    bounds[1:] = np.cumsum([len(g) for g in groups])
    indices = np.concatenate(groups).astype(np.int64) if groups else np.zeros(0, np.int64)
    return indices, bounds


def clean_mask(labels: np.ndarray, order: np.ndarray, clean_classes: list[int] | None = None, clean_count: int = 0, seed: int = 0) -> np.ndarray:
    """The known-clean part D^c (Chen et al. Section "prior knowledge"), as a boolean mask.

    Case 3: every sample of ``clean_classes``. Case 2: ``clean_count`` samples, chosen by a
    permutation (seeded by ``seed``) of the canonical order — which samples a user knows to be
    clean is outside knowledge; this choice only has to be fixed and reproducible.
    """
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    if clean_classes:
        mask |= np.isin(labels, np.asarray(clean_classes))
    if clean_count:
        if clean_count > n:
            raise PoisonCertError(f"clean count {clean_count} is larger than the training set ({n} samples)")
        mask[order[np.random.default_rng([seed, 0xC1EA]).permutation(n)[:clean_count]]] = True
    return mask


def _balance(rng: np.random.Generator, idx: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """BALANCE of Chen et al. Algorithm 2: ``size`` draws weighted by 1 / (class count in the set)."""
    if len(idx) == 0:
        return idx
    _, inv, cnt = np.unique(labels[idx], return_inverse=True, return_counts=True)
    w = 1.0 / cnt[inv.ravel()]
    return idx[rng.choice(len(idx), size=size, replace=True, p=w / w.sum())]


def make_selections(
    images: np.ndarray,
    labels: np.ndarray,
    scheme: str,
    subsample_size: int,
    n_models: int,
    seed_base: int = 0,
    clean_classes: list[int] | None = None,
    clean_count: int = 0,
    balance: bool = False,
    balance_size: int | None = None,
    balance_labels: np.ndarray | None = None,
) -> "Partitions":
    """T random selections of size n_s from D^p, each joined with D^c (see the module docstring).

    ``balance_labels`` (n,): the classes BALANCE evens out (default: ``labels``).
    """
    n = len(labels)
    bal_labels = labels if balance_labels is None else np.asarray(balance_labels)
    if bal_labels.shape != (n,):
        raise PoisonCertError(f"balance_labels must have shape ({n},), got {bal_labels.shape}")
    if scheme not in SELECTION_SCHEMES:
        raise PoisonCertError(f"unknown selection scheme '{scheme}'; choose one of {', '.join(SELECTION_SCHEMES)}")
    if n_models < 1:
        raise PoisonCertError(f"the number of base models T must be >= 1, got {n_models}")
    order = canonical_order(images, labels)
    clean = clean_mask(labels, order, clean_classes, clean_count, seed_base)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    d_p = order[~clean[order]]  # D^p in canonical order
    d_c = order[clean[order]]
    n_p = len(d_p)
    rec = _registry.scheme(scheme)
    if subsample_size < 1 or (not rec.with_replacement and subsample_size > n_p):
        raise PoisonCertError(
            f"selection size k={subsample_size} must lie in [1, {n_p}] (the potentially poisoned part of the training set)"
            if not rec.with_replacement else f"selection size k must be >= 1, got {subsample_size}"
        )
    if n_p == 0:
        raise PoisonCertError("every training sample is in the known-clean part; nothing is left to select from")
    groups = []
    drawn = []  # |S_i|: samples drawn from D^p (before D^c is added and before BALANCE), Chen Fig. 5
    for m in range(n_models):
        rng = np.random.default_rng([seed_base, m, _SELECTION_TAG])
        picked = rec.select(rng, n_p, subsample_size)
        drawn.append(int(len(picked)))
        idx = np.concatenate([d_p[picked], d_c])
        if balance:
            idx = _balance(rng, idx, bal_labels, balance_size or (subsample_size + len(d_c)))
        groups.append(idx[np.argsort(rank[idx], kind="stable")])
    indices, bounds = _csr(groups)
    seeds = seed_base + np.arange(n_models, dtype=np.int64)
    extra = {"n_poisonable": int(n_p), "n_clean": int(len(d_c)), "clean_classes": list(clean_classes or []), "balance": bool(balance),
             "selection_sizes": drawn}
    return Partitions(scheme, int(subsample_size), 1, indices, bounds, seeds, [], extra)


def make_partitions(
    images: np.ndarray,
    labels: np.ndarray,
    scheme: str,
    k: int,
    d: int = 1,
    offsets: list[int] | None = None,
    same_seed: bool = False,
    seed_base: int = 0,
    pixel_sums: np.ndarray | None = None,
) -> Partitions:
    """Build every base model's training set for a deterministic ``scheme`` (see the module docstring).

    Seeds: model m is seeded with ``seed_base + m`` (the partition index, DPA paper Section
    2.2.1), or ``seed_base`` for every model when ``same_seed`` (DPA paper App. F ablation).
    ``pixel_sums``: h(t) per sample when it is not :func:`pixel_sum_hash` of ``images``
    (``Dataset.train_pixel_sums``: the source images' sums of a resized dataset).
    """
    n = len(labels)
    if pixel_sums is not None and np.shape(pixel_sums) != (n,):
        raise PoisonCertError(f"pixel_sums must hold one value per training sample ({n}), got shape {np.shape(pixel_sums)}")
    h = pixel_sum_hash(images) if pixel_sums is None else np.asarray(pixel_sums, dtype=np.int64)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise PoisonCertError(f"k must be a positive integer, got {k}")
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise PoisonCertError(f"d must be a positive integer, got {d}")
    if scheme not in DETERMINISTIC_SCHEMES:
        hint = " (random selection schemes: make_selections)" if scheme in SELECTION_SCHEMES else ""
        raise PoisonCertError(f"unknown scheme '{scheme}'; choose one of {', '.join(SCHEMES)}{hint}")
    rec = _registry.scheme(scheme)
    n_split = rec.n_split(k, d)
    if n_split > n:
        what = "k*d" if rec.buckets == "kd" else "k"
        raise PoisonCertError(f"{what}={n_split} is larger than the training set ({n} samples); choose {what} <= {n}")
    order = canonical_order(images, labels)
    groups, used_offsets = rec.partition(h, images, order, k, d, offsets)  # the scheme's own rule (poisoncert.splits)
    indices, bounds = _csr(groups)
    m = len(groups)
    seeds = np.full(m, seed_base, dtype=np.int64) if same_seed else seed_base + np.arange(m, dtype=np.int64)
    parts = Partitions(scheme, int(k), int(d), indices, bounds, seeds, used_offsets, {"same_seed": bool(same_seed)})
    empty = int((parts.sizes() == 0).sum())
    if empty:
        warnings.warn(
            f"{empty} of {m} base models have an empty training set (k={k} is large for {n} samples); "
            "they output zero logits, i.e. a vote for class 0",
            stacklevel=2,
        )
    return parts


def save_partitions(parts: Partitions, path: str | os.PathLike, dataset_hash: str) -> None:
    atomic_savez(path, indices=parts.indices, bounds=parts.bounds, seeds=parts.seeds, meta=np.array(json.dumps({**parts.meta(), "dataset_hash": dataset_hash})))


def read_partitions(path: str | os.PathLike) -> tuple[Partitions, dict]:
    z = load_npz(path, "partition", ("indices", "bounds", "seeds", "meta"))
    meta = json.loads(str(z["meta"]))
    extra = {k: v for k, v in meta.items() if k not in ("scheme", "k", "d", "offsets", "n_models", "dataset_hash")}
    parts = Partitions(meta["scheme"], meta["k"], meta["d"], z["indices"], z["bounds"], z["seeds"], meta["offsets"], extra)
    return parts, meta
