"""Deep Partition Aggregation certificate (Levine & Feizi, ICLR 2021; papers/000).

Theorem 1 (DPA, unit: insertions + deletions, |T ⊖ U|) and Theorem 2 (SS-DPA, unit: label
flips) share one formula over the vote counts n_c of the k base classifiers:

    c = argmax_c n_c   (ties to the smaller class index)
    ρ̄ = floor((n_c - max_{c' != c} (n_{c'} + 1[c' < c])) / 2)
"""

from __future__ import annotations

import numpy as np

from ..errors import PoisonCertError
from ._common import Certificate, argmax_votes, check_counts, check_scores, plurality, vote_counts

__all__ = ["dpa", "dpa_from_counts", "gap_certificate", "certv1_dpa"]


def gap_certificate(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction, runner-up and the tie-adjusted gap n_c - max_{c'!=c}(n_c' + 1[c'<c]).

    The runner-up is the class attaining that max (the smallest index among equals).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n, n_classes = counts.shape
    pred = plurality(counts)
    classes = np.arange(n_classes)
    adjusted = counts + (classes[None, :] < pred[:, None])
    adjusted[np.arange(n), pred] = np.iinfo(np.int64).min
    if n_classes == 1:
        runner = np.zeros(n, dtype=np.int64)
        gap = counts[:, 0].copy()
    else:
        runner = np.argmax(adjusted, axis=1).astype(np.int64)
        gap = counts[np.arange(n), pred] - adjusted[np.arange(n), runner]
    return pred, runner, gap


def certv1_dpa(gap: np.ndarray) -> np.ndarray:
    """The DPA step shared with DPA+ROE: ceil(max(0, gap)/2) - 1 (ROE paper 003, Lemma 3.5).

    ``gap`` is Definition 3.1 of 003, gap(c, c') = n_c - n_c' + 1[c' > c]: one poison moves one vote,
    i.e. lowers the gap by at most 2. With the tie-adjusted gap of Theorem 1 (``gap_certificate``),
    n_c - n_c' - 1[c' < c] = gap - 1 for c' != c, and floor((gap - 1)/2) = ceil(gap/2) - 1, so DPA's
    radius is ``certv1_dpa(adjusted_gap + 1)``. Returns -1 where the gap is <= 0.
    """
    g = np.maximum(np.asarray(gap, dtype=np.int64), 0)
    return (g + 1) // 2 - 1


def dpa_from_counts(counts: np.ndarray, unit: str = "insertions+deletions") -> Certificate:
    """DPA Theorem 1 / SS-DPA Theorem 2 from (n_test, n_classes) vote counts.

    Every row must count the same, non-zero number of base-model votes.

    >>> dpa_from_counts([[5, 1, 0]]).radius.tolist()
    [2]
    """
    counts = check_counts(counts)
    totals = counts.sum(axis=1)
    if totals[0] == 0 or np.any(totals != totals[0]):
        i = int(np.flatnonzero((totals != totals[0]) | (totals == 0))[0]) if totals[0] else 0
        raise PoisonCertError(f"counts row {i} sums to {int(totals[i])} votes, row 0 to {int(totals[0])}; every row must count the same, non-zero number of models")
    pred, runner, gap = gap_certificate(counts)
    radius = certv1_dpa(gap + 1)  # = floor(gap / 2), Theorem 1
    return Certificate(pred, radius.astype(np.int64), unit=unit, detail={"runner_up": runner, "gap": gap})


def dpa(scores: np.ndarray, unit: str = "insertions+deletions") -> Certificate:
    """DPA Theorem 1 (and SS-DPA Theorem 2 with ``unit="label flips"``) from logits.

    ``scores``: (n_test, k, n_classes) logits of the k base classifiers. Each model votes for its
    argmax class (ties to the smaller index).
    """
    scores = check_scores(scores)
    counts = vote_counts(argmax_votes(scores), scores.shape[2])  # validated once, above
    cert = dpa_from_counts(counts, unit=unit)
    cert.detail["counts"] = counts
    return cert
