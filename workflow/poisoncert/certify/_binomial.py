"""One-sided Clopper-Pearson bounds and the SimuEM bounds shared by the two stochastic certificates.

* Jia, Cao & Gong (papers/002), Section 3, eqs. (5)-(6) and Algorithm 1 ("SimuEM"):
  the confidence ``alpha`` is split over the ``e`` test samples (``alpha / e`` each, Theorem 3)
  and, inside one sample, over the ``c`` classes by Bonferroni (``alpha / (e * c)`` for every
  one-sided interval)::

      p_l = Beta(alpha/(e c); n_l, N - n_l + 1)                       (5)
      p_j = Beta(1 - alpha/(e c); n_j + 1, N - n_j)   for j != l       (6)
      p_s = min(max_{j != l} p_j, 1 - p_l)

* Chen et al. (papers/004), eqs. (13)-(14) ("BinoCP"): ``alpha / 2`` for the lower bound of the
  top class and ``alpha / 2`` for the upper bound of the runner-up, per test sample::

      p_1 = BinoCP(alpha/2; T, count(c_1))                             (13)
      p_2 = min(1 - p_1, BinoCP(1 - alpha/2; T, count(c_2)))           (14)

Both are :func:`simuem_bounds` with a different per-interval level ``alpha_each``: because the
Clopper-Pearson upper bound increases with the count, ``max_{j != l} p_j`` is the upper bound of
the class with the most votes among the others (the runner-up ``c_2``).

Note on eq. (6) of papers/002: the text prints the second shape parameters as
``Beta(1 - alpha/(e c); n_j, N - n_j + 1)``. Those are the parameters of the *lower* bound; as an
upper bound it is invalid: for ``n_j = 0`` it is the point mass at 0, so it claims ``p_j <= 0``
although a class with ``p_j = 0.01`` shows ``n_j = 0`` with probability ``0.99**N`` (0.37 for
N = 100), far above any ``alpha``. The one-sided Clopper-Pearson upper bound of the cited SimuEM
method is ``Beta(1 - a; n_j + 1, N - n_j)`` (equal to 1 when ``n_j = N``), which is what we use.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import PoisonCertError
from ._common import check_alpha, check_counts, plurality

__all__ = [
    "CERT_TOL",
    "check_size",
    "check_vote_counts",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "bonferroni",
    "top_two",
    "simuem_bounds",
]


#: Safety margin of every floating-point certificate test ``delta(r) < gap``: a radius ``r`` is
#: certified only when ``delta_float(r) < gap_float - CERT_TOL``. Where a certificate can hold
#: (``delta(r) < gap <= 1``) every term of ``delta`` lies in [0, 2] and is computed as
#: ``exp(k * log1p(.))`` (or a same-sign cumulative sum of ``log1p`` terms), so its absolute error
#: is below 1e-11 for the sizes used here (k, n < 1e6); the bounds ``p_l``, ``p_s`` enter with an
#: error of a few ulps. The margin therefore makes every float decision conservative: the
#: returned radius is never larger than the exact one, and smaller only when the exact
#: ``delta(r)`` lies within 1e-9 below the gap.
CERT_TOL = 1e-9


def check_size(value, name: str, minimum: int = 0) -> int:
    """A non-negative whole number (a dataset or subsample size) or a one-line PoisonCertError."""
    if isinstance(value, (bool, np.bool_)):
        raise PoisonCertError(f"{name} must be a whole number, got {value!r}")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise PoisonCertError(f"{name} must be a whole number, got {value!r}") from None
    if not np.isfinite(as_float) or as_float != int(as_float):
        raise PoisonCertError(f"{name} must be a whole number, got {value!r}")
    v = int(as_float) if not isinstance(value, (int, np.integer)) else int(value)
    if v < minimum:
        raise PoisonCertError(f"{name} must be >= {minimum}, got {v}")
    return v


def check_vote_counts(counts, n_models=None) -> np.ndarray:
    """Vote counts (n_test, n_classes) whose every row sums to the number of base models N.

    When ``n_models`` is None, N is taken from the first row and every other row must match.
    """
    arr = check_counts(counts)
    if n_models is None:
        n_models = int(arr[0].sum())
    else:
        n_models = check_size(n_models, "n_models", 1)
    if n_models < 1:
        raise PoisonCertError("counts row 0 has no votes; there must be at least one base model")
    return check_counts(arr, n_models=n_models)


def clopper_pearson_lower(successes, trials, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound of a binomial proportion.

    ``Beta(alpha; x, N - x + 1)``, the alpha-quantile of a Beta distribution; 0 when ``x == 0``.
    ``Pr(p < bound) <= alpha`` for every true ``p``. Where scipy's quantile fails for an extreme
    ``alpha`` the bound is 0 (always valid).

    >>> bool(np.isclose(clopper_pearson_lower(10, 10, 0.05), 0.05 ** (1 / 10)))
    True
    >>> float(clopper_pearson_lower(5, 10, 1e-302)) >= 0.0
    True
    """
    a = check_alpha(alpha)
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    safe_x = np.where(x > 0, x, 1.0)
    out = stats.beta.ppf(a, safe_x, n - x + 1.0)
    # scipy's quantile can fail (NaN) for extreme alpha (e.g. 1e-300 split over many intervals):
    # 0 is always a valid lower bound, so the certificate stays sound, only weaker
    return np.where((x > 0) & np.isfinite(out), np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0), 0.0)


def clopper_pearson_upper(successes, trials, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson upper bound of a binomial proportion.

    ``Beta(1 - alpha; x + 1, N - x)`` (computed as the inverse survival function at ``alpha`` so
    that tiny ``alpha`` keeps full precision); 1 when ``x == N``.
    """
    a = check_alpha(alpha)
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    full = x >= n
    safe_b = np.where(full, 1.0, n - x)
    out = stats.beta.isf(a, x + 1.0, safe_b)
    # as above: 1 is always a valid upper bound when scipy's quantile fails (NaN)
    return np.where(full | ~np.isfinite(out), 1.0, np.clip(np.nan_to_num(out, nan=1.0), 0.0, 1.0))


def bonferroni(alpha: float, n_intervals: int) -> float:
    """Per-interval level so that ``n_intervals`` one-sided intervals hold together w.p. >= 1 - alpha."""
    a = check_alpha(alpha)
    if int(n_intervals) < 1:
        raise PoisonCertError(f"the number of simultaneous intervals must be >= 1, got {n_intervals}")
    return a / int(n_intervals)


def top_two(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top class ``l`` and runner-up ``s`` of each row of vote counts (ties to the smaller index).

    With a single class the runner-up is reported as ``-1``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n, c = counts.shape
    top = plurality(counts)
    if c == 1:
        return top, np.full(n, -1, dtype=np.int64)
    masked = counts.copy()
    masked[np.arange(n), top] = -1
    return top, np.argmax(masked, axis=1).astype(np.int64)


def simuem_bounds(counts: np.ndarray, alpha_each: float):
    """SimuEM bounds (papers/002 eqs. 5-6; papers/004 eqs. 13-14) for every row of ``counts``.

    ``alpha_each`` is the level of every one-sided interval (already divided by Bonferroni).
    Returns ``(l, s, p_l, p_s)``: top class, runner-up, lower bound of ``p_l`` and
    ``p_s = min(max_{j != l} upper_j, 1 - p_l)`` (0 when there is no other class).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_models = counts.sum(axis=1)
    top, runner = top_two(counts)
    rows = np.arange(counts.shape[0])
    p_l = clopper_pearson_lower(counts[rows, top], n_models, alpha_each)
    if counts.shape[1] == 1:
        p_s = np.zeros_like(p_l)
    else:
        upper = clopper_pearson_upper(counts[rows, runner], n_models, alpha_each)
        p_s = np.minimum(upper, 1.0 - p_l)
    return top, runner, p_l, p_s
