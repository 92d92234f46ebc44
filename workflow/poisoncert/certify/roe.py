"""Run-Off Election certificates (Rezaei, Banihashem, Chegini & Feizi, ICML 2023; papers/003).

Algorithm 1 (ROE). Round 1: every model votes for its argmax class (ties to the smaller index);
c1 = the class with most votes, c2 = the class with most votes among the others (ties to the smaller
index in both). Round 2: model i votes for c1 when logit_i(c1) > logit_i(c2), otherwise for c2
(``N2_c1 = #{i: logit_i(c1) > logit_i(c2)}``, ``N2_c2 = K - N2_c1``; this is line 7-8 of Algorithm 1
with the typo ``k - N_{c2}`` read as ``k - N_{c1}``, and the reference code's
``2*(scores[:, c1] > scores[:, c2]).sum() - K``). The prediction is argmax over {c1, c2} of the round-2
counts with ties to the smaller class index ("we assume that argmax breaks ties by favoring the class
with the smaller index", Section 3.1) -- *not* to the round-1 winner.

Certificate (Theorem 3.4): min(Cert_R1, Cert_R2) with
    Cert_R1 = min_{c1 != c2, both != c_pred} Certv2(c_pred, c1, c2),
    Cert_R2 = min_{c != c_pred} max(Certv1({f_i}, c_sec, c), Certv1({g^c_i}, c_pred, c)),
where gap(c, c') = N_c - N_c' + 1[c' > c] (Definition 3.1) and Certv1(c_sec, c_sec) = -1.

Round-2 binary classifiers and equal logits. The paper defines g^c_i = c if logit(c) > logit(c_pred),
else c_pred, i.e. equal logits count *for* c_pred. That is not sound: after poisoning, c_pred may be
the round-1 winner c1' and c the runner-up c2', and then Algorithm 1 gives every model with
logit(c_pred) = logit(c) to c. Counter-example (machine-checked in
``tests/test_certify_roe.py::test_paper_round2_tie_rule_is_unsound``): DPA+ROE, K = 4 models, 3 classes,
logits f1 = (1, 0, 0), f2 = (1, 0, 1), f3 = f4 = (0, 0, 0). All four vote 0; c1 = 0, c2 = 1; round 2:
#{logit(0) > logit(1)} = 2 = K - 2, a tie, so the prediction is class 0. The paper's g^1 counts the
two tied models for class 0 (4 to 0, gap 5, Certv1 = 2) and Cert_R1 = F(5, 5) - 1 = 3, so the
paper's certificate is 2. Yet one poison suffices: retrain f1 to (0, 0, 0); all models still vote 0,
but now only f2 prefers 0 to 1 in round 2 (1 vs 3) and the prediction becomes 1. We therefore count
#{i: logit_i(c_pred) > logit_i(c)} for c_pred and the rest for c, exactly as the reference code
(``m1_election[cls] = 2*(scores[:, m1] > scores[:, cls]).sum() - K``); with this convention the
certificate is sound whichever of c_pred, c ends up first after round 1 (ties can only go against
c_pred), and it coincides with the paper's whenever no two of a model's logits are equal.

DPA+ROE (Lemmas 3.5, 3.6). Certv1(c, c') = ceil(max(0, gap)/2) - 1 (the DPA step: one poison moves
one vote, i.e. the gap by at most 2; ``dpa.gap_certificate``'s tie-adjusted gap is gap - 1 and
floor((gap-1)/2) = ceil(gap/2) - 1). Certv2(c, c1, c2) = dp[gap1, gap2] with gap_i = max(0, gap(c, c_i)),
dp[i, j] = 1 + min(dp[i-1, j-2], dp[i-2, j-1]) for min(i, j) >= 2 and ceil(max(i, j)/2) - 1 otherwise.
We evaluate the dynamic programme in closed form, for any gap (no table):

    dp[i, j] + 1 = F(i, j) := max(ceil(i/2), ceil(j/2), ceil((i + j)/3)).

Proof (induction on i + j). Base, min(i, j) <= 1, say i <= 1: for j >= 2,
(i + j)/3 <= (1 + j)/3 <= j/2, so F = ceil(max(i, j)/2); for i, j <= 1, F = ceil(max(i, j)/2) directly
((0,0) -> 0, otherwise 1). Step, i, j >= 2, w.l.o.g. i >= j, so F(i, j) = max(ceil(i/2), ceil((i+j)/3)).
Option A: 1 + F(i-2, j-1) = max(ceil(i/2), floor(j/2) + 1, ceil((i+j)/3)) using
ceil((j-1)/2) = floor(j/2). If i > j, ceil(i/2) >= ceil((j+1)/2) = floor(j/2) + 1; if i = j,
ceil(2j/3) >= floor(j/2) + 1 for every j >= 2 (check j = 2..5, and 2j/3 >= j/2 + 1 for j >= 6).
So option A = F(i, j). Option B: 1 + F(i-1, j-2) = max(ceil((i-1)/2) + 1, ceil(j/2),
ceil((i+j)/3)) >= F(i, j) since ceil((i-1)/2) + 1 >= ceil(i/2). Hence 1 + min(A-1, B-1) = F(i, j). QED.
F is non-decreasing in each argument, so Cert_R1 = F(two smallest clipped gaps) - 1 (min over pairs).
:func:`roe_dp_table` builds the literal table for the tests.

FA+ROE (Lemmas 3.7, 3.8, Algorithm 4). Certv1(c, c') = largest t with (sum of the t largest
pw_b) < gap(c, c'), pw_b = sum_{i in h_spread(b)} 2·1[f_i = c] + 1[f_i not in {c, c'}] (the same integer
step as FA Theorem 2, shared via :func:`poisoncert.certify.fa.largest_first_rows`). Round 2 uses the
binary classifiers: pw_b = 2·#{i in h_spread(b): logit_i(c_pred) > logit_i(c)}. Certv2 = max(Certv1(c, c1),
Certv1(c, c2), Certv2+) with pw+_b = sum 3·1[f_i = c] + 1[f_i not in {c, c1, c2}] and
gap+ = gap(c, c1) + gap(c, c2). Lemma 3.8's statement writes gap_i := max(0, gap(c, c_i)) before
gap+ := gap1 + gap2, but its proof (E.4.2) uses the unclipped sum g1 + g2, which must itself become
<= 0, and the reference (``fa_roe_certify.py``) uses the unclipped sum. The clipped sum is not implied
by the proof (with g1 < 0 the adversary may lower g2 by moving votes from c1 to c2, which pw+ does not
count), so we use the unclipped sum, which is never larger. The two differ only when
gap(c_pred, c1) < 0 (c_pred lost round 1 to c1 and won round 2); in 20,000 random small ensembles the
final certificate min(Cert_R1, Cert_R2) never differed (Cert_R2 is then the binding term).
"""

from __future__ import annotations

import numpy as np

from ..errors import PoisonCertError
from ._common import (
    Certificate,
    argmax_class_major,
    argmax_votes,
    check_scores,
    class_major,
    count_true,
    plurality,
    sample_blocks,
    small_index_dtype,
    vote_counts,
    votes,
)
from .dpa import certv1_dpa
from .fa import _check_pos_int, bucket_sums, check_fa_layout, largest_first_rows

__all__ = [
    "roe_predict",
    "round2_gap",
    "dpa_roe",
    "fa_roe",
    "dpa_star_logits",
    "roe_dp_need",
    "roe_dp_table",
    "certv1_dpa",
]

_INF = np.iinfo(np.int64).max // 4

#: Cells (sample x model x class) per block in :func:`fa_roe`: large blocks (a few MiB, in L3) keep
#: numpy's per-call overhead small, which dominates there (measured: 2^18 -> 2^20 cells, -25% time).
_FA_ROE_BLOCK_CELLS = 1 << 20


def _check_classes(scores: np.ndarray) -> None:
    if scores.shape[2] < 2:
        raise PoisonCertError(
            f"Run-Off Election needs at least 2 classes (round 2 is an election between two), got {scores.shape[2]}"
        )


def _runoff(counts: np.ndarray, n1_fn, n_models: int):
    """Algorithm 1 given round-1 counts; ``n1_fn(c1, c2)`` = #{i: logit_i(c1) > logit_i(c2)} per sample.

    Returns (prediction, c1, c2): c1/c2 the round-1 winner and runner-up (ties to the smaller index),
    the prediction the round-2 majority (ties to the smaller class index).
    """
    rows = np.arange(counts.shape[0])
    c1 = plurality(counts)
    masked = counts.copy()
    masked[rows, c1] = -1
    c2 = plurality(masked)
    n1 = n1_fn(c1, c2)
    n2 = n_models - n1
    pred = np.where(n1 > n2, c1, np.where(n1 < n2, c2, np.minimum(c1, c2)))
    return pred.astype(np.int64), c1, c2


def roe_predict(scores: np.ndarray, counts: np.ndarray | None = None):
    """Algorithm 1 of 003 over a test set: returns (prediction, c1, c2, counts).

    ``c1``/``c2``: round-1 winner and runner-up (ties to the smaller index); round 2 as in the
    module docstring (ties in the round-2 count to the smaller class index).
    """
    n, n_models, _ = scores.shape
    if counts is None:
        counts = vote_counts(votes(scores), scores.shape[2])
    rows = np.arange(n)

    def n1_fn(c1, c2):
        return count_true(scores[rows, :, c1] > scores[rows, :, c2])

    pred, c1, c2 = _runoff(counts, n1_fn, n_models)
    return pred, c1, c2, counts


def round2_gap(scores: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """gap({g^c_i}, c_pred, c) for every class c: #{logit(c_pred) > logit(c)} - #{rest} + 1[c > c_pred].

    (n, C) int64; the column c = c_pred is meaningless (set to a large value).
    """
    n, n_models, n_classes = scores.shape
    rows = np.arange(n)
    top = scores[rows, :, pred]  # (n, K)
    wins = count_true(np.swapaxes(scores < top[:, :, None], 1, 2))  # (n, C): #{i: logit_i(c_pred) > logit_i(c)}
    gap = 2 * wins.astype(np.int64) - n_models + (np.arange(n_classes)[None, :] > pred[:, None])
    gap[rows, pred] = _INF
    return gap


def _gap_matrix(counts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """gap(ref, c) = N_ref - N_c + 1[c > ref] for every class c (Definition 3.1): (n, C)."""
    n, n_classes = counts.shape
    rows = np.arange(n)
    return counts[rows, ref][:, None] - counts + (np.arange(n_classes)[None, :] > ref[:, None])


def roe_dp_need(g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
    """dp[g1, g2] + 1 of Lemma 3.6 in closed form: max(ceil(g1/2), ceil(g2/2), ceil((g1+g2)/3)).

    Inputs are clipped at 0 (gap_i = max(0, gap(c, c_i))). See the module docstring for the proof.
    """
    a = np.maximum(np.asarray(g1, dtype=np.int64), 0)
    b = np.maximum(np.asarray(g2, dtype=np.int64), 0)
    return np.maximum(np.maximum((a + 1) // 2, (b + 1) // 2), (a + b + 2) // 3)


def roe_dp_table(max_gap: int) -> np.ndarray:
    """The literal dynamic-programming table of Lemma 3.6 (dp values, i.e. certificates), size max_gap+1.

    Only for tests and documentation; :func:`dpa_roe` uses :func:`roe_dp_need`.
    """
    size = int(max_gap) + 1
    dp = np.empty((size, size), dtype=np.int64)
    for i in range(size):
        for j in range(size):
            if min(i, j) <= 1:
                dp[i, j] = (max(i, j) + 1) // 2 - 1
            else:
                dp[i, j] = 1 + min(dp[i - 1, j - 2], dp[i - 2, j - 1])
    return dp


def dpa_roe(scores: np.ndarray) -> Certificate:
    """DPA+ROE: Algorithm 1 with Theorem 3.4 and Lemmas 3.5, 3.6 of 003.

    ``scores``: (n_test, k, n_classes) logits of k models on disjoint partitions (a poison reaches one
    model). Unit: insertions + deletions. ``detail`` holds the round-1 classes, cert_r1 and cert_r2.
    """
    scores = check_scores(scores)
    _check_classes(scores)
    pred, c1, c2, counts = roe_predict(scores, vote_counts(argmax_votes(scores), scores.shape[2]))
    n, _, n_classes = scores.shape
    rows = np.arange(n)
    sec = np.where(pred == c1, c2, c1)

    # Cert_R1: min over pairs of Certv2 = F(gap1, gap2) - 1, attained by the two smallest clipped gaps
    if n_classes >= 3:
        g = np.maximum(_gap_matrix(counts, pred), 0)
        g[rows, pred] = _INF
        two = np.partition(g, 1, axis=1)[:, :2]
        cert_r1 = roe_dp_need(two[:, 0], two[:, 1]) - 1
    else:
        cert_r1 = np.full(n, _INF, dtype=np.int64)

    # Cert_R2: min over c != pred of max(Certv1(f, c_sec, c), Certv1(g^c, c_pred, c))
    r1 = certv1_dpa(_gap_matrix(counts, sec))  # (n, C); column sec -> gap 0 -> -1
    r2 = certv1_dpa(round2_gap(scores, pred))
    both = np.maximum(r1, r2)
    both[rows, pred] = _INF
    cert_r2 = both.min(axis=1)
    radius = np.minimum(cert_r1, cert_r2)
    detail = {"counts": counts, "c1": c1, "c2": c2, "cert_r1": cert_r1, "cert_r2": cert_r2}
    return Certificate(pred, radius.astype(np.int64), unit="insertions+deletions", detail=detail)


def _certv1_fa_all(bt: np.ndarray, refs: np.ndarray, gaps: np.ndarray, d: int) -> np.ndarray:
    """Lemma 3.7 for each reference class vs every class, in one batch.

    ``bt`` (s, C, kd) per-bucket class counts; ``refs`` (s, m) reference classes; ``gaps`` (s, m, C)
    gap(ref, c). pw_b = d + P_b - Q_b (P: ref's count in bucket b, Q: class c's) lies in [0, 2d].
    Returns Certv1(ref, c), (s, m, C).
    """
    s, n_classes, kd = bt.shape
    m = refs.shape[1]
    p_plus_d = bt[np.arange(s)[:, None], refs] + bt.dtype.type(d)  # (s, m, kd)
    pw = np.subtract(p_plus_d[:, :, None, :], bt[:, None, :, :])  # (s, m, C, kd)
    cert = largest_first_rows(pw.reshape(s * m * n_classes, kd), (gaps - 1).reshape(-1))
    return cert.reshape(s, m, n_classes)


def _min_over_candidates(bound: np.ndarray, evaluate) -> np.ndarray:
    """Row-wise minimum of values known only through exact lower bounds, evaluated lazily.

    ``bound`` (s, m): ``bound[i, j] <= value[i, j]`` (``_INF`` marks excluded candidates; every row
    needs one that is not); ``evaluate(ri, ji)`` returns ``value[ri, ji]`` for index arrays. Each
    row's candidate of smallest bound is evaluated first; afterwards only the candidates whose bound
    is below the value found can lower the minimum, and they are evaluated in one batch. The result
    is exactly ``value.min(axis=1)``.
    """
    rows = np.arange(bound.shape[0])
    first = np.argmin(bound, axis=1)
    best = evaluate(rows, first)
    need = bound < best[:, None]
    need[rows, first] = False
    ri, ji = np.nonzero(need)
    if ri.size:
        np.minimum.at(best, ri, evaluate(ri, ji))
    return best


def _largest_first_bound(budget: np.ndarray, max_entry, kd: int) -> np.ndarray:
    """Exact lower bound of :func:`largest_first_rows` for rows whose entries are all <= max_entry:
    the t largest sum to at most t·max_entry, so t = floor(budget / max_entry) fits (at most kd
    entries; -1 or less where budget < 0)."""
    return np.minimum(np.floor_divide(budget, np.maximum(max_entry, 1)), kd)


def _fa_cert_r1(bt: np.ndarray, pred: np.ndarray, gap_pred: np.ndarray, cv1_pred: np.ndarray, d: int) -> np.ndarray:
    """Cert_R1 of Theorem 3.4 for FA (Lemma 3.8): min over pairs {c1, c2} not containing c_pred of
    max(Certv1(c, c1), Certv1(c, c2), Certv2+), Certv2+ = largest-first count of
    pw+_b = d + 2·P_b - Q1_b - Q2_b in [0, 3d] with budget gap(c, c1) + gap(c, c2) - 1.

    All (sample, pair) cells at once, pruned exactly (:func:`_min_over_candidates`) with the bound
    max(Certv1(c, c1), Certv1(c, c2), floor(budget / M)), M = d + 2·max_b P_b >= max_b pw+_b.
    """
    s, n_classes, kd = bt.shape
    rows = np.arange(s)
    dt = np.uint8 if 3 * d <= 255 else np.uint16
    bt = bt.astype(dt, copy=False)
    a, b = np.triu_indices(n_classes, 1)  # every pair a < b
    p = bt[rows, pred]  # (s, kd)
    base = p * dt(2) + dt(d)  # d + 2P <= 3d
    budget = gap_pred[:, a] + gap_pred[:, b] - 1  # (s, pairs)
    cv = cv1_pred.copy()
    cv[rows, pred] = _INF  # pairs containing c_pred never count
    lower = np.maximum(cv[:, a], cv[:, b])
    m = d + 2 * p.max(axis=1).astype(np.int64)
    bound = np.maximum(lower, _largest_first_bound(budget, m[:, None], kd))

    def value(ri, pj):
        pw = base[ri] - bt[ri, a[pj]]
        pw -= bt[ri, b[pj]]
        return np.maximum(lower[ri, pj], largest_first_rows(pw, budget[ri, pj]))

    return _min_over_candidates(bound, value)


def _fa_cert_r2(prefer: np.ndarray, g2: np.ndarray, cv1_sec: np.ndarray, pred: np.ndarray, d: int, offsets) -> np.ndarray:
    """Cert_R2 of Theorem 3.4 for FA: min over c != c_pred of max(Certv1(f, c_sec, c), Certv1(g^c, c_pred, c)).

    The round-2 term (Lemma 3.7 on the binary classifiers g^c) is the largest-first count of
    pw_b = 2·W_b, W_b = #{i in bucket b: logit_i(c_pred) > logit_i(c)} <= d, budget g2 - 1. Its bucket
    sums are formed only for the (sample, class) cells that can set the minimum
    (:func:`_min_over_candidates`, bound max(Certv1(f, c_sec, c), floor((g2 - 1) / 2d))).
    ``prefer`` (s, C, kd) uint8: 1[logit_i(c_pred) > logit_i(c)]; ``g2`` (s, C) the round-2 gaps.
    """
    s, n_classes, kd = prefer.shape
    rows = np.arange(s)
    dt = np.uint8 if 2 * d <= 255 else np.uint16
    budget = g2 - 1
    bound = np.maximum(cv1_sec, _largest_first_bound(budget, 2 * d, kd))
    bound[rows, pred] = _INF

    def value(ri, ci):
        pw = bucket_sums(prefer[ri, ci].astype(dt, copy=False), offsets)
        pw *= dt(2)
        return np.maximum(cv1_sec[ri, ci], largest_first_rows(pw, budget[ri, ci]))

    return _min_over_candidates(bound, value)


def fa_roe(scores: np.ndarray, k: int, d: int, offsets=None) -> Certificate:
    """FA+ROE: Algorithm 1 with Theorem 3.4 and Lemmas 3.7, 3.8 of 003 (buckets as in :func:`fa`).

    ``scores``: (n_test, k*d, n_classes); bucket j reaches models {(j + r) mod kd : r in offsets}
    (default offsets: the FA reference's). Vectorised over blocks of samples (cache-sized; each
    block's logits are read once, class-major): votes, Algorithm 1, the per-class bucket counts
    (computed once per block and combined for every Certv1 and every class pair), then the
    largest-first counts of Lemmas 3.7 / 3.8 batched over (sample, class) and (sample, pair) cells,
    skipping cells that provably cannot set a minimum.
    """
    scores, k, d, off = check_fa_layout(scores, k, d, offsets)  # validates the logits once
    _check_classes(scores)
    n, kd, n_classes = scores.shape
    pred = np.empty(n, dtype=np.int64)
    c1 = np.empty(n, dtype=np.int64)
    c2 = np.empty(n, dtype=np.int64)
    counts = np.empty((n, n_classes), dtype=np.int64)
    cert_r1 = np.full(n, _INF, dtype=np.int64)
    cert_r2 = np.empty(n, dtype=np.int64)
    vdt = small_index_dtype(n_classes)
    classes = np.arange(n_classes)
    cls_col = classes.astype(vdt)[:, None]
    dt = np.uint8 if 2 * d <= 255 else np.uint16  # bucket counts <= d; d + P - Q <= 2d
    for sl in sample_blocks(n, kd * n_classes, _FA_ROE_BLOCK_CELLS):
        st = class_major(scores[sl])  # (s, C, kd) logits
        s = st.shape[0]
        rows = np.arange(s)
        onehot = argmax_class_major(st, vdt)[:, None, :] == cls_col  # (s, C, kd) 1[f_i = c]
        cnt = counts[sl] = count_true(onehot)
        ps, a1, a2 = _runoff(cnt, lambda x, y: count_true(st[rows, x] > st[rows, y]), kd)
        pred[sl], c1[sl], c2[sl] = ps, a1, a2
        sec = np.where(ps == a1, a2, a1)
        gap_pred = _gap_matrix(cnt, ps)  # gap(c_pred, c)
        bt = bucket_sums(onehot.view(np.uint8).astype(dt, copy=False), off)  # (s, C, kd) bucket counts
        # Certv1(c_pred, c) and Certv1(c_sec, c) (the latter -1 at c = c_sec)
        cv1 = _certv1_fa_all(bt, np.stack([ps, sec], axis=1), np.stack([gap_pred, _gap_matrix(cnt, sec)], axis=1), d)
        cv1_pred, cv1_sec = cv1[:, 0], cv1[:, 1]
        # round 2: g^c_i votes c_pred iff logit_i(c_pred) > logit_i(c)
        prefer = st < st[rows, ps][:, None, :]  # (s, C, kd)
        g2 = 2 * count_true(prefer) - kd + (classes[None, :] > ps[:, None])  # round2_gap
        cert_r2[sl] = _fa_cert_r2(prefer.view(np.uint8), g2, cv1_sec, ps, d, off)
        if n_classes >= 3:
            cert_r1[sl] = _fa_cert_r1(bt, ps, gap_pred, cv1_pred, d)
    radius = np.minimum(cert_r1, cert_r2)
    detail = {"counts": counts, "c1": c1, "c2": c2, "cert_r1": cert_r1, "cert_r2": cert_r2}
    return Certificate(pred, radius, unit="insertions+deletions", detail=detail)


def dpa_star_logits(scores: np.ndarray, k: int, d: int, layout: str = "partition-major") -> np.ndarray:
    """DPA* of 003 (Section 4.1): average the logits of the d seeds trained on each of the k partitions.

    ``scores``: (n_test, k*d, n_classes). ``layout="partition-major"``: model index = partition*d + seed;
    ``"seed-major"``: model index = seed*k + partition (d full DPA ensembles one after the other, as
    the reference ``dpa_star_bases.py`` stores them in separate files). The sum runs over seeds in
    order, in the input dtype, then divides by d, like the reference. Returns (n_test, k, n_classes);
    DPA*+ROE is ``dpa_roe(dpa_star_logits(...))`` and DPA* is ``dpa(dpa_star_logits(...))``.
    """
    k = _check_pos_int(k, "k")
    d = _check_pos_int(d, "d")
    scores = check_scores(scores)
    n, n_models, n_classes = scores.shape
    if n_models != k * d:
        raise PoisonCertError(f"scores has {n_models} base models but DPA* with k={k}, d={d} needs k*d = {k * d}")
    if layout == "partition-major":
        per_seed = [scores[:, s::d, :] for s in range(d)]
    elif layout == "seed-major":
        per_seed = [scores[:, s * k : (s + 1) * k, :] for s in range(d)]
    else:
        raise PoisonCertError(f"layout must be 'partition-major' or 'seed-major', got {layout!r}")
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.dtype(np.float64)
    total = np.zeros((n, k, n_classes), dtype=dtype)
    for part in per_seed:
        total += part
    return total / dtype.type(d)
