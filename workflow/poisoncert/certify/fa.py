"""Finite Aggregation certificates (Wang, Levine & Feizi, ICML 2022; papers/001).

Layout of the ensemble (Definition 1 and Section 3.4 of 001): the training set is split into ``kd``
buckets by ``h_split``; bucket ``j`` is spread to the ``d`` base models
``h_spread(j) = {(j + r) mod kd : r in offsets}``. ``scores[:, i, :]`` holds the logits of base model
``i`` (i in [kd]). A poisoned sample that lands in bucket ``j`` can change the outputs of exactly the
models in ``h_spread(j)``.

Integer form of Theorem 2 used throughout. Write ``n_c`` for the vote count of class ``c`` over the
``kd`` models and, for a bucket ``j``, ``P_j = #{i in h_spread(j): f_i(x) = c}``,
``Q_j = #{i in h_spread(j): f_i(x) = c'}``. Multiplying both sides of Theorem 2 by ``kd``:

    d * (1 + FA_{c|j} - FA_{c'|j}) = d + P_j - Q_j =: pw_j(c, c')          (integer in [0, 2d])
    kd * (FA_c - FA_{c'} - 1[c' < c]/kd) = n_c - n_{c'} - 1[c' < c] =: G(c, c')

so the condition reads "sum of the r largest pw_j(c, c') <= G(c, c') for all c' != c", and the
certificate is the largest such r (the reference ``FiniteAggregation_cerfity.py`` searches exactly this:
it walks the descending-sorted Δ values while the running budget stays >= 0, so zero-valued Δ are
consumed for free). ``pw_j`` is also the "poisoning power" of bucket j in Lemma 3.7 of the ROE paper
(003): ``2*1[f=c] + 1[f not in {c, c'}] = 1 + 1[f=c] - 1[f=c']`` summed over the bucket's models, and
"sum of the t largest < gap(c, c') = G + 1" is the same integer condition. Both certificates therefore
share :func:`bucket_sums` and :func:`largest_first_rows`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import combinations
from numbers import Integral

import numpy as np

from ..errors import PoisonCertError
from ._common import (
    Certificate,
    argmax_votes,
    as_array,
    check_scores,
    count_true,
    plurality,
    sample_blocks,
    small_index_dtype,
    vote_counts,
)

__all__ = [
    "default_fa_offsets",
    "check_fa_layout",
    "bucket_sums",
    "largest_first_rows",
    "fa",
    "fa_from_votes",
    "fa_improvement_stats",
    "fa_certified_accuracy",
    "FACertifiedAccuracy",
    "FA_REFERENCE_SEED",
]

#: Seed of the FA reference implementation (``random.seed(999999999+208)``).
FA_REFERENCE_SEED = 999999999 + 208



def _check_pos_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise PoisonCertError(f"{name} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise PoisonCertError(f"{name} must be >= 1, got {value}")
    return int(value)


def default_fa_offsets(k: int, d: int) -> list[int]:
    """The spread offsets R of the FA reference code (Section 3.4 of 001).

    The reference scripts (``FiniteAggregation_cerfity.py`` and the ROE paper's ``fa_roe_certify.py``)
    do ``random.seed(999999999 + 208); shifts = random.sample(range(k*d), d)``; a private
    ``random.Random`` with the same seed draws the identical sequence without touching global state.
    """
    k = _check_pos_int(k, "k")
    d = _check_pos_int(d, "d")
    return random.Random(FA_REFERENCE_SEED).sample(range(k * d), d)


def check_offsets(offsets, k: int, d: int) -> np.ndarray:
    """FA spread offsets R: d distinct integers in [0, kd) (``None`` = :func:`default_fa_offsets`)."""
    kd = k * d
    if offsets is None:
        offsets = default_fa_offsets(k, d)
    off = np.asarray(offsets)
    if off.ndim != 1 or off.size != d:
        raise PoisonCertError(f"offsets must be a list of d = {d} integers, got shape {off.shape}")
    if off.size and not np.issubdtype(off.dtype, np.integer):
        if not np.issubdtype(off.dtype, np.floating) or np.any(off != np.round(off)):
            raise PoisonCertError(f"offsets must be integers, got {list(offsets)}")
    off = off.astype(np.int64)
    if np.any((off < 0) | (off >= kd)):
        raise PoisonCertError(f"offsets must lie in [0, k*d) = [0, {kd}), got {off.tolist()}")
    if np.unique(off).size != d:
        raise PoisonCertError(f"offsets must be distinct (|R| = d = {d}), got {off.tolist()}")
    return off


def check_fa_layout(scores: np.ndarray, k, d, offsets=None) -> tuple[np.ndarray, int, int, np.ndarray]:
    """Validate (scores, k, d, offsets) of an FA ensemble; return them normalised.

    ``offsets=None`` means :func:`default_fa_offsets`. Returns ``(scores, k, d, offsets)`` with
    ``offsets`` an int64 array of d distinct values in [0, kd).
    """
    k = _check_pos_int(k, "k")
    d = _check_pos_int(d, "d")
    scores = check_scores(scores)
    kd = k * d
    if scores.shape[1] != kd:
        raise PoisonCertError(
            f"scores has {scores.shape[1]} base models but FA with k={k}, d={d} needs k*d = {kd};"
            " check k and d against the ensemble that produced the scores"
        )
    off = check_offsets(offsets, k, d)
    if 2 * d + 1 > 255:
        raise PoisonCertError(f"d = {d} is too large for this implementation (d <= 127 supported)")
    return scores, k, d, off


#: From this many models on, bucket sums slice each row (long rows: negligible per-row overhead);
#: below it they use the padded flat layout (measured crossover, uint8, d = 5 and 16).
_ROWWISE_MIN_KD = 4096


def bucket_sums(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-bucket sums over the models each bucket reaches: ``out[..., j] = Σ_{r in R} x[..., (j + r) % kd]``.

    ``x``: (..., kd) small non-negative integers (uint8 per-model indicators), models on the last axis.
    The result has the same dtype (possibly a strided view); the caller guarantees ``d * max(x)``
    fits it. Cost: one shifted add per offset, in one of two layouts:

    * kd < ``_ROWWISE_MIN_KD``: every row is stored rotated by an offset b and followed by its first
      ``pad`` entries (so the wrap-around disappears), rows back to back; each offset is then a
      single contiguous add over the whole block (per-row slicing would be dominated by numpy's
      per-row overhead). With r' = (r - b) mod kd, out[j] = Σ_r' x[(j + b + r') % kd]; b is the offset
      after the largest circular gap between offsets, which minimises pad = max r'. Outputs that
      mix two rows fall in the padding and are dropped.
    * larger kd: per offset, two slice adds per row (out[:kd-r] += x[r:], out[kd-r:] += x[:r]),
      which does not pay the padding (up to 2x the work).
    """
    x = np.asarray(x)
    kd = x.shape[-1]
    offs = sorted(int(r) for r in offsets)
    if not offs:
        return np.zeros_like(x)
    if kd >= _ROWWISE_MIN_KD:
        out = np.empty_like(x)
        r = offs[0]
        out[..., : kd - r] = x[..., r:]
        out[..., kd - r :] = x[..., :r]
        for r in offs[1:]:
            out[..., : kd - r] += x[..., r:]
            out[..., kd - r :] += x[..., :r]
        return out
    gaps = np.diff(offs + [offs[0] + kd])
    b = offs[(int(np.argmax(gaps)) + 1) % len(offs)]
    rel = sorted((r - b) % kd for r in offs)  # rel[0] == 0
    pad = rel[-1]
    rows = x.reshape(-1, kd)
    y = np.empty((rows.shape[0], kd + pad), dtype=x.dtype)
    i = 0
    while i < kd + pad:  # y[:, i] = x[:, (b + i) % kd], in at most three slices
        src = (b + i) % kd
        step = min(kd - src, kd + pad - i)
        y[:, i : i + step] = rows[:, src : src + step]
        i += step
    flat_y = y.reshape(-1)
    n_valid = flat_y.size - pad  # the last row's kd outputs end exactly here
    z = np.empty_like(y)
    flat_z = z.reshape(-1)
    flat_z[n_valid:] = 0
    flat_z[:n_valid] = flat_y[:n_valid]
    for r in rel[1:]:
        flat_z[:n_valid] += flat_y[r : r + n_valid]
    return z[:, :kd].reshape(x.shape)


def _count_level(sub: np.ndarray, level: np.ndarray) -> np.ndarray:
    """#{j : sub[i, j] == level[i]} per row."""
    return count_true(sub == level[:, None].astype(sub.dtype))


def _next_lower(sub: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Largest entry < level[i] per row, or -1 where there is none."""
    below = sub < level[:, None].astype(sub.dtype)
    # entries below level are <= level - 1, so +1 cannot overflow; 0 marks "nothing below"
    return np.where(below, sub + sub.dtype.type(1), sub.dtype.type(0)).max(axis=1).astype(np.int64) - 1


def largest_first_rows(pw: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Largest-first count per row: ``pw`` (m, kd) non-negative ints, ``budget`` (m,).

    Returns, per row, the largest r such that the sum of the r largest entries is <= budget (-1 where
    budget < 0). This is the "largest-first" step of FA Theorem 2 (Δ^{d_sym}: the sum of the d_sym
    largest elements, budget G) and, with budget = gap - 1, of CERTFA (Algorithm 4 / Lemma E.3 of 003),
    which returns exactly this t. Zero entries are taken for free (as in the reference scripts).

    Counting instead of sorting: walk the value levels down from the row maximum, vectorised over the
    rows still running; at each level take ``min(count, remaining // level)`` entries and drop the rows
    whose budget ran out. The budget runs out after a few levels in practice (the loop is bounded by
    the number of distinct values), and each level costs one comparison and one narrow-integer sum
    per row; an empty level costs one more pass to jump to the next value present.
    """
    pw = np.asarray(pw)
    budget = np.asarray(budget, dtype=np.int64)
    m = pw.shape[0]
    r = np.zeros(m, dtype=np.int64)
    if m == 0 or pw.shape[1] == 0:
        return np.where(budget < 0, -1, r)
    idx = np.flatnonzero(budget >= 0)
    sub = pw if idx.size == m else pw[idx]
    rem = budget[idx]
    level = sub.max(axis=1).astype(np.int64) if idx.size else np.zeros(0, dtype=np.int64)
    # the maximum is present in every row: a budget below it takes nothing (r = 0) without counting
    go = rem >= level
    if not go.all():
        idx, sub, rem, level = idx[go], sub[go], rem[go], level[go]
    while idx.size:
        cnt = _count_level(sub, level)
        empty = cnt == 0
        if empty.any():  # jump to the next value present (-1: the row is exhausted)
            level[empty] = _next_lower(sub[empty], level[empty])
            cnt[empty] = np.where(level[empty] >= 0, _count_level(sub[empty], np.maximum(level[empty], 0)), 0)
        zero = level <= 0
        take = np.where(zero, cnt, np.minimum(cnt, rem // np.maximum(level, 1)))
        r[idx] += take
        rem -= take * np.maximum(level, 0)
        go = (take == cnt) & ~zero
        if not go.all():
            idx, sub, rem, level = idx[go], sub[go], rem[go], level[go]
        level -= 1
    return np.where(budget < 0, -1, r)


def _fa_radius(v: np.ndarray, counts: np.ndarray, pred: np.ndarray, d: int, offsets: np.ndarray):
    """Theorem 2 radius min_{c' != c} r(c, c') and a class c' attaining it, for one block of samples.

    ``v`` (s, kd) votes in a narrow dtype, ``counts`` (s, C), ``pred`` (s,). Classes are visited in
    order of increasing budget G(c, c') = n_c - n_c' - 1[c' < c] (the first attaining class is kept).
    Exact pruning: if pw_j(c, c') <= M for all j, the r largest sum to at most r·M, so
    r(c, c') >= floor(G / M); r is non-decreasing in G, so once floor(G / M) >= the current minimum
    no later class can lower it. The first class is evaluated for every row, with pw_j = Σ_{i in
    bucket j} (1 + 1[f_i = c] - 1[f_i = c']) summed directly (one bucket sum); only rows that the coarse
    bound M = d + floor(max_j pw_j / 2) leaves open get P_j (one more bucket sum) and the tight bound
    M = d + max_j P_j, and then pw = d + P_j - Q_j for each further class they need.
    """
    s, kd = v.shape
    n_classes = counts.shape[1]
    rows = np.arange(s)
    classes = np.arange(n_classes)
    budget = counts[rows, pred][:, None] - counts - (classes[None, :] < pred[:, None])
    budget[rows, pred] = np.iinfo(np.int64).max
    order = np.argsort(budget, axis=1, kind="stable")  # by increasing G; pred is last
    is_pred = v == pred.astype(v.dtype)[:, None]  # (s, kd) 1[f_i = c]
    arg = order[:, 0].copy()
    y = is_pred.view(np.uint8) + np.uint8(1)
    y -= (v == arg.astype(v.dtype)[:, None]).view(np.uint8)  # 1 + 1[f = c] - 1[f = c'] in {0, 1, 2}
    pw = bucket_sums(y, offsets)
    best = largest_first_rows(pw, budget[rows, arg])
    if n_classes <= 2:
        return best, arg
    # coarse bound without P: P_j + Q_j <= d (disjoint votes in a bucket of d models), so
    # pw_j = d + P_j - Q_j >= 2 P_j and every pw_j(c, c'') <= d + P_j <= d + floor(max_j pw_j / 2)
    coarse = d + pw.max(axis=1).astype(np.int64) // 2
    open_rows = np.flatnonzero((budget[rows, order[:, 1]] // coarse) < best)
    if open_rows.size == 0:
        return best, arg
    vs, bs, os_ = v[open_rows], budget[open_rows], order[open_rows]
    p = bucket_sums(is_pred[open_rows].view(np.uint8), offsets)  # P_j
    bound_den = d + p.max(axis=1).astype(np.int64)  # M
    p_plus_d = p + np.uint8(d)  # d + P_j <= 2d <= 254
    sub_rows = np.arange(open_rows.size)
    b_best, b_arg = best[open_rows], arg[open_rows]
    for t in range(1, n_classes - 1):
        cls = os_[:, t]
        g = bs[sub_rows, cls]
        need = (g // bound_den) < b_best
        if not need.any():
            break
        ii = sub_rows if need.all() else np.flatnonzero(need)
        q = bucket_sums((vs[ii] == cls[ii, None].astype(v.dtype)).view(np.uint8), offsets)  # Q_j
        pw = np.subtract(p_plus_d[ii], q, out=q)  # d + P_j - Q_j in [0, 2d]
        r = largest_first_rows(pw, g[ii])
        better = r < b_best[ii]
        b_best[ii[better]] = r[better]
        b_arg[ii[better]] = cls[ii][better]
    best[open_rows], arg[open_rows] = b_best, b_arg
    return best, arg


def _single_class_radius(counts: np.ndarray, d: int) -> np.ndarray:
    """One class only: treat c' as a virtual empty class with larger index (pw_j = 2d, G = kd).

    The theorem is vacuous with a single class (no c' != c); we follow the DPA module's convention
    (radius floor(k/2) = floor(n_c / 2) for d = 1), so ``fa(d=1) == dpa`` holds here too.
    """
    kd = counts[:, 0]
    return kd // (2 * d)


def fa(scores: np.ndarray, k: int, d: int, offsets=None) -> Certificate:
    """FA prediction (Definition 1) and certificate (Theorem 2) of 001 for a whole test set.

    ``scores``: (n_test, k*d, n_classes) logits; model i is trained on the buckets j with
    (j + r) mod kd == i for some r in ``offsets`` (default: :func:`default_fa_offsets`).

    Prediction: plurality of the kd votes, ties to the smaller class index. Certificate: the largest
    d_sym with  Δ^{d_sym} / k <= FA_c - FA_c' - 1[c' < c]/(kd)  for all c' != c, i.e. (integer form,
    see the module docstring) the minimum over c' of the largest r whose r largest
    pw_j = d + P_j - Q_j sum to at most n_c - n_c' - 1[c' < c]. With d = 1 and offsets [0] this is
    DPA's Theorem 1 exactly. ``detail["runner_up"]`` is a class c' attaining the minimum.
    """
    scores, k, d, off = check_fa_layout(scores, k, d, offsets)  # validates the logits once
    n_classes = scores.shape[2]
    return _fa_certificate(argmax_votes(scores, small_index_dtype(n_classes)), n_classes, d, off, check=False)


def fa_from_votes(v: np.ndarray, n_classes: int, k: int, d: int, offsets=None) -> Certificate:
    """:func:`fa` from precomputed votes ``v`` (n_test, k*d) (argmax of each model's logits): class indices."""
    v = as_array(v, "votes")
    if not np.issubdtype(v.dtype, np.integer):
        if not np.issubdtype(v.dtype, np.floating) or not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
            raise PoisonCertError("votes must be whole class indices (the argmax of each model's logits), not fractions")
        v = v.astype(np.int64)
    k = _check_pos_int(k, "k")
    d = _check_pos_int(d, "d")
    if v.ndim != 2 or v.shape[1] != k * d:
        raise PoisonCertError(f"votes must have shape (n_test, k*d = {k * d}), got {v.shape}")
    _, _, _, off = check_fa_layout(np.zeros((1, k * d, 1), dtype=np.float32), k, d, offsets)
    return _fa_certificate(v, int(n_classes), d, off, check=True)


def _block_votes(v: np.ndarray, n_classes: int, check: bool) -> np.ndarray:
    """One block of votes, checked (class indices in [0, n_classes)) and cast to a narrow dtype."""
    if check and v.size:
        if np.issubdtype(v.dtype, np.signedinteger):  # negatives wrap to huge unsigned values: one pass
            bad = v.view(v.dtype.str.replace("i", "u")).max() >= n_classes
        else:
            bad = v.min() < 0 or v.max() >= n_classes
        if bad:
            raise PoisonCertError(f"votes must be class indices in [0, {n_classes})")
    return v.astype(small_index_dtype(n_classes), copy=False)


def _fa_certificate(v: np.ndarray, n_classes: int, d: int, off: np.ndarray, check: bool) -> Certificate:
    """Theorem 2 over blocks of samples (each block's votes, counts and bucket sums stay in cache)."""
    n, kd = v.shape
    pred = np.empty(n, dtype=np.int64)
    radius = np.empty(n, dtype=np.int64)
    runner = np.zeros(n, dtype=np.int64)
    counts = np.empty((n, n_classes), dtype=np.int64)
    for sl in sample_blocks(n, kd):
        vb = _block_votes(v[sl], n_classes, check)
        cb = counts[sl] = vote_counts(vb, n_classes)
        pb = pred[sl] = plurality(cb)
        if n_classes == 1:
            radius[sl] = _single_class_radius(cb, d)
        else:
            radius[sl], runner[sl] = _fa_radius(vb, cb, pb, d, off)
    detail = {"counts": counts, "runner_up": runner}
    return Certificate(pred, radius, unit="insertions+deletions", detail=detail)


def _dpa_style_radius(counts: np.ndarray, pred: np.ndarray, d: int) -> np.ndarray:
    """Theorem 2 with Δ^{d_sym} replaced by 2·d_sym (001, Section 5.2 / Table 2):
    2·r·d <= n_c - n_c' - 1[c' < c] for all c'  ->  r = floor(min_c' G(c, c') / (2d)).

    This is the reference ``FiniteAggregation_cerfity_naive.py``.
    """
    n, n_classes = counts.shape
    if n_classes == 1:
        return counts[:, 0] // (2 * d)
    classes = np.arange(n_classes)
    rows = np.arange(n)
    g = counts[rows, pred][:, None] - counts - (classes[None, :] < pred[:, None])
    g[rows, pred] = np.iinfo(np.int64).max
    return np.floor_divide(g.min(axis=1), 2 * d)


def fa_improvement_stats(scores: np.ndarray, k: int, d: int, offsets=None, labels=None) -> dict:
    """Pr[r↑] and Δr of FA Table 2 (001, Section 5.2) on one set of kd base models.

    The certified radius is Theorem 2's where the prediction equals the label and -1 elsewhere (the
    paper's convention); ``labels=None`` treats every prediction as correct. ``radius_dpa_style``
    replaces Δ^{d_sym} by 2·d_sym (floor(min G / 2d)). Pr[r↑] = fraction of *all* test samples whose
    Theorem-2 radius is larger; Δr = mean increase among those (0.0 when none).
    """
    cert = fa(scores, k, d, offsets)
    d = int(d)
    naive = _dpa_style_radius(cert.detail["counts"], cert.prediction, d)
    r_fa = cert.radius.copy()
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != cert.prediction.shape:
            raise PoisonCertError(
                f"labels must have shape ({cert.prediction.size},), got {labels.shape}"
            )
        wrong = cert.prediction != labels
        r_fa[wrong] = -1
        naive = np.where(wrong, -1, naive)
    up = r_fa > naive
    n = r_fa.size
    return {
        "pr_up": float(up.sum() / n),
        "delta_r": float((r_fa[up] - naive[up]).mean()) if up.any() else 0.0,
        "radius_fa": r_fa,
        "radius_dpa_style": naive,
    }


@dataclass(frozen=True)
class FACertifiedAccuracy:
    """Result of :func:`fa_certified_accuracy`.

    ``accuracy``: certified accuracy (distributional: one poison set for the whole test set);
    ``worst_buckets``: a set Q of split buckets attaining the minimum; ``n_correct``: correctly
    classified samples; ``n_broken``: how many of them the worst Q may break.
    """

    accuracy: float
    worst_buckets: tuple[int, ...]
    n_correct: int
    n_broken: int


def fa_certified_accuracy(
    scores: np.ndarray, labels, k: int, d: int, offsets=None, attack_size: int = 1, max_subsets: int = 200_000
) -> FACertifiedAccuracy:
    """Certified accuracy of FA under ``attack_size`` poisons shared by all test samples (001, App. D).

    Theorem 4 (conditional poisoning): if the poisons only touch the buckets in Q, sample x with label
    c is certifiably correct (O_{x,c,Q,d_sym} = 1) when FA(D,x) = c and, for all c' != c,
    Δ_{D,Q,x}^{d_sym} / k <= FA_c - FA_c' - 1[c'<c]/(kd). The certified accuracy is
    min_{Q ⊆ [kd], |Q| <= d_sym} mean_x O_{x,c,Q,d_sym}.

    Exact evaluation: O is monotone in Q (a larger Q can only enlarge the sum of the d_sym largest
    elements) so the minimum is attained at |Q| = min(d_sym, kd); for |Q| <= d_sym the "d_sym largest
    elements of Δ_Q" are all of Q's elements. For attack size 1 this is, as in the reference
    ``FiniteAggregation_certify_acc_attacksize1.py``, (#correct - max_j #{correct x : some c' has
    pw_j(c, c') > G(c, c')}) / n. For attack size s > 1 the minimum over the C(kd, s) bucket sets
    is enumerated exactly (only samples whose pointwise certificate is < s can be broken); this is
    exponential in s, so it raises when C(kd, s) > ``max_subsets``.
    """
    scores, k, d, off = check_fa_layout(scores, k, d, offsets)
    n, kd, n_classes = scores.shape
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise PoisonCertError(f"labels must have shape ({n},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise PoisonCertError(f"labels must be integers, got dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise PoisonCertError(f"labels must lie in [0, {n_classes}) (the scores have {n_classes} classes)")
    s = attack_size
    if isinstance(s, bool) or not isinstance(s, Integral) or int(s) < 0:
        raise PoisonCertError(f"attack_size must be a non-negative integer, got {attack_size!r}")
    s = min(int(s), kd)
    v_all = argmax_votes(scores, small_index_dtype(n_classes))  # logits validated above: no second check
    cert = _fa_certificate(v_all, n_classes, d, off, check=False)
    correct = cert.prediction == labels
    n_correct = int(correct.sum())
    if s == 0 or n_classes == 1:
        return FACertifiedAccuracy(n_correct / n, (), n_correct, 0)
    n_combos = math.comb(kd, s)
    if n_combos > max_subsets:
        raise PoisonCertError(
            f"exact FA certified accuracy at attack size {s} needs a minimum over C({kd}, {s}) = {n_combos}"
            f" bucket sets (Theorem 4, App. D of the FA paper), more than max_subsets = {max_subsets};"
            " use attack_size=1 (as in FA Table 3) or raise max_subsets"
        )
    # only correct samples with pointwise certificate < s can be broken by some Q of size s
    cand = np.flatnonzero(correct & (cert.radius < s))
    if cand.size == 0:
        return FACertifiedAccuracy(n_correct / n, tuple(range(s)), n_correct, 0)
    v = v_all[cand].astype(np.int64)
    counts = cert.detail["counts"][cand]
    pred = cert.prediction[cand]
    rows = np.arange(cand.size)
    classes = np.arange(n_classes)
    budget = counts[rows, pred][:, None] - counts - (classes[None, :] < pred[:, None])  # (m, C)
    budget[rows, pred] = np.iinfo(np.int32).max
    onehot = (v[:, None, :] == np.arange(n_classes)[:, None]).view(np.uint8)  # (m, C, kd)
    b = bucket_sums(onehot, off).transpose(0, 2, 1).astype(np.int32)  # (m, kd, C)
    pw = d + np.take_along_axis(b, pred[:, None, None], axis=2) - b  # (m, kd, C)
    if s == 1:
        broken = (pw > budget[:, None, :]).any(axis=2)  # (m, kd)
        per_bucket = broken.sum(axis=0)
        j = int(np.argmax(per_bucket))
        worst, n_broken = (j,), int(per_bucket[j])
    else:
        worst, n_broken = (), -1
        batch = max(1, (1 << 22) // max(1, cand.size * n_classes * s))
        it = combinations(range(kd), s)
        while True:
            q = np.array([c for _, c in zip(range(batch), it)], dtype=np.int64)
            if q.size == 0:
                break
            sums = pw[:, q, :].sum(axis=2)  # (m, b, C)
            nb = (sums > budget[:, None, :]).any(axis=2).sum(axis=0)  # (b,)
            i = int(np.argmax(nb))
            if nb[i] > n_broken:
                worst, n_broken = tuple(int(t) for t in q[i]), int(nb[i])
    return FACertifiedAccuracy((n_correct - n_broken) / n, worst, n_correct, n_broken)
