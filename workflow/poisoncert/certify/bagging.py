"""Certified poisoning size of bagging (Jia, Cao & Gong, AAAI 2021; papers/002).

Setting. Each of the N base models is trained on ``g(D)``, a list of ``k`` (``subsample_size``)
examples drawn uniformly *with replacement* from the ``n`` (``train_size``) training examples.
``p_j = Pr(A(g(D), x) = j)``; bagging predicts ``h(D, x) = argmax_j p_j``.

Threat model and unit (eq. 1). ``B(D, r) = {D' : max(|D|, |D'|) - |D ∩ D'| <= r}``. An attack
that modifies ``a``, deletes ``d`` and inserts ``i`` examples has ``|D'| = n - d + i`` and
``|D ∩ D'| = n - a - d``, hence ``max(|D|,|D'|) - |D ∩ D'| = a + max(d, i)``
``= max(|D \\ D'|, |D' \\ D|)``: modifications plus the larger of deletions and insertions (a
deletion paired with an insertion is a modification). The radius is in this unit; it is also a
valid certificate for the larger count ``a + d + i``. (DPA's unit, ``|D ⊖ D'| = 2a + d + i``, is
different: a figure that compares them must say so.)

Theorem 1 (eq. 4). With ``p_l <= Pr(l)``, ``p_s >= max_{j != l} Pr(j)``,
``delta_l = p_l - floor(p_l n^k) / n^k`` and ``delta_s = ceil(p_s n^k) / n^k - p_s``,
``h(D', x) = l`` for every ``D' ∈ B(D, r*)``, where ``r*`` is the largest ``r`` with::

    max_{n-r <= n' <= n+r} (n'/n)^k - 2 ((max(n, n') - r)/n)^k + 1 - (p_l - p_s - delta_l - delta_s) < 0

We write the left-hand side as ``excess(r) - gap`` with ``gap = p_l - p_s - delta_l - delta_s``.
``max(n, n') - r`` is the smallest possible ``|D ∩ D'|`` (clamped at 0: for ``r >= n`` the attacker
can replace every example). The condition is monotone in ``r`` (``B(D, r)`` grows with ``r``), so
the largest ``r`` is found by binary search; the bracket grows by doubling until the condition
fails (it always fails by ``r = n``: then ``|D ∩ D'|`` can be 0 and ``excess >= 1 >= gap``), so
there is no artificial upper limit. The max over ``n'`` uses the closed form of eq. (7)
(Appendix D): the objective increases on ``[n - r, n]`` and is unimodal on ``[n, n + r]`` with
its continuous maximum at ``x_root = r / (1 - (1/2)^(1/(k-1)))``.

The delta terms are computed exactly (integer arithmetic on ``n^k``) when ``n^k <= 2^200``;
above that ``0 <= delta_l + delta_s <= 2 n^-k < 2^-199`` is far below the float safety margin
:data:`CERT_TOL`, which makes every comparison conservative (see :mod:`._binomial`).

Radius 0 without the theorem. When ``p_l > p_s`` but the theorem's condition already fails at
``r = 0`` (possible only when ``p_l - p_s <= delta_l + delta_s + CERT_TOL``), we still report
radius 0: ``B(D, 0) = {D}`` and ``Pr(l) >= p_l > p_s >= Pr(j)`` gives ``h(D, x) = l`` directly.
The radius is -1 (abstain, Algorithm 1) exactly when ``p_l <= p_s``.

Corollaries 1-3 give closed forms for modification-only, deletion-only and insertion-only
attacks; :func:`bagging_radius` with ``attack=`` restricts the search to the same ``n'`` and the
tests check that both agree.

A consequence worth knowing (proved here, checked in the tests): the general ``r*`` always equals
Corollary 1's. Corollary 1 certifies ``r`` iff ``r < X = n (1 - (1 - gap/2)^(1/k))``; since
``gap <= 1``, ``X <= n (1 - 2^(-1/k)) < n (1 - 2^(-1/(k-1)))``, so every ``r <= r*_1`` lies in
case I of eq. (7), where the maximising ``n'`` is ``n`` and the general condition is Corollary 1's;
and for ``r > r*_1`` the general condition fails because ``n' = n`` is one of its candidates. The
insertion branch of eq. (7) only wins where the objective already exceeds 1. We still run the
full search of Algorithm 1, as the paper specifies.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PoisonCertError
from ._binomial import CERT_TOL, check_size, check_vote_counts, simuem_bounds
from ._common import Certificate, check_alpha

__all__ = [
    "ATTACK_UNITS",
    "bagging",
    "bagging_radius",
    "bagging_gap",
    "jia_objective",
    "jia_argmax_poisoned_size",
    "bagging_radius_modify_only",
    "bagging_radius_delete_only",
    "bagging_radius_insert_only",
]

_LN2 = math.log(2.0)

#: Unit of the radius for each ``attack`` of :func:`bagging`.
ATTACK_UNITS = {
    "general": "modifications+max(insertions,deletions)",
    "modify": "modifications",
    "delete": "deletions",
    "insert": "insertions",
}
_ATTACK_ALIASES = {
    "general": "general", "any": "general", "all": "general",
    "modify": "modify", "modification": "modify", "modifications": "modify",
    "delete": "delete", "deletion": "delete", "deletions": "delete",
    "insert": "insert", "insertion": "insert", "insertions": "insert",
}


def _attack(name) -> str:
    key = str(name).strip().lower()
    if key not in _ATTACK_ALIASES:
        raise PoisonCertError(
            f"unknown bagging attack {name!r}; choose one of general, modify, delete, insert"
        )
    return _ATTACK_ALIASES[key]


def _sizes(train_size, subsample_size) -> tuple[int, int]:
    n = check_size(train_size, "train_size", 1)
    k = check_size(subsample_size, "subsample_size", 1)
    return n, k


def _power_ratio(x, n: int, k: int) -> np.ndarray:
    """``(x / n)^k`` for integer ``x >= 0``, as ``exp(k * log1p((x - n) / n))`` (0 at x = 0)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.exp(k * np.log1p((x - n) / n))


def jia_objective(n_prime, r, train_size: int, subsample_size: int) -> np.ndarray:
    """``(n'/n)^k - 2 ((max(n, n') - r)/n)^k + 1``: eq. (4) without the ``- gap`` term (eq. 79).

    ``max(n, n') - r`` is clamped at 0 (an intersection cannot be negative).
    """
    n, k = int(train_size), int(subsample_size)
    n_prime = np.asarray(n_prime, dtype=np.int64)
    r = np.asarray(r, dtype=np.int64)
    m = np.maximum(np.maximum(n_prime, n) - r, 0)
    return _power_ratio(n_prime, n, k) - 2.0 * _power_ratio(m, n, k) + 1.0


def _root_constants(k: int) -> tuple[float, float]:
    """``1 - (1/2)^(1/(k-1))`` and ``2^(1/(k-1)) - 1`` of eq. (7), for k >= 2."""
    return -math.expm1(-_LN2 / (k - 1)), math.expm1(_LN2 / (k - 1))


def jia_argmax_poisoned_size(r, train_size, subsample_size) -> np.ndarray:
    """Eq. (7): the poisoned size ``n'`` in ``[n - r, n + r]`` that maximises eq. (4) for each ``r``.

    ``n`` if ``r <= n (1 - (1/2)^(1/(k-1)))``; ``n + r`` if ``r >= n (2^(1/(k-1)) - 1)``; otherwise
    the better of ``floor`` and ``ceil`` of ``x_root = r / (1 - (1/2)^(1/(k-1)))``. For ``k = 1``
    the objective decreases on ``[max(n, r), n + r]`` and increases below ``r`` (where the
    intersection size ``n' - r`` is clamped at 0), so the answer is ``max(n, r)``; the paper's
    ``n`` differs only for ``r > n``, where no certificate holds anyway. (In the printed Case II of
    Appendix D the lower limit reads ``n (k-1√2 - 1)``; from eq. (7) and the root it is
    ``n (1 - (1/2)^(1/(k-1)))``.)
    """
    n, k = _sizes(train_size, subsample_size)
    r = np.asarray(r, dtype=np.int64)
    if k == 1:
        return np.clip(r, n, n + r).astype(np.int64)
    c, u = _root_constants(k)
    x_root = r / c
    fl = np.clip(np.floor(x_root).astype(np.int64), n, n + r)
    ce = np.clip(np.ceil(x_root).astype(np.int64), n, n + r)
    pick = np.where(jia_objective(fl, r, n, k) >= jia_objective(ce, r, n, k), fl, ce)
    return np.where(r <= n * c, n, np.where(r >= n * u, n + r, pick)).astype(np.int64)


def _excess(r, n: int, k: int, attack: str) -> np.ndarray:
    """``max over the attack's n'`` of :func:`jia_objective` (the certificate needs ``< gap``)."""
    r = np.asarray(r, dtype=np.int64)
    if attack == "modify":  # Corollary 1: n' = n
        return jia_objective(np.full_like(r, n), r, n, k)
    if attack == "delete":  # Corollary 2: n' = |D ∩ D'| = n - r
        return jia_objective(np.maximum(n - r, 0), r, n, k)
    if attack == "insert":  # Corollary 3: n' = n + r, |D ∩ D'| = n
        return jia_objective(n + r, r, n, k)
    # general: eq. (7). The objective increases on [n - r, n] (Appendix D), so n' >= n; on
    # [n, n + r] it is unimodal with the continuous maximum at x_root, hence the integer maximum
    # is floor or ceil of x_root clipped to [n, n + r]. We evaluate a superset of eq. (7)'s
    # candidates (both ends and floor(x_root) - 1 .. floor(x_root) + 2, against rounding of x_root):
    # every candidate is a feasible n', so the max over them is the max over [n - r, n + r].
    cands = [np.full_like(r, n), n + r, np.clip(r, n, n + r)]  # ends and the kink of the clamp
    if k >= 2:
        c, _ = _root_constants(k)
        fl = np.floor(r / c).astype(np.int64)
        cands += [np.clip(fl + j, n, n + r) for j in (-1, 0, 1, 2)]
    return np.max(np.stack([jia_objective(x, r, n, k) for x in cands]), axis=0)


def _check_bounds(p_lower, p_upper) -> tuple[np.ndarray, np.ndarray]:
    pl = np.asarray(p_lower, dtype=np.float64)
    ps = np.asarray(p_upper, dtype=np.float64)
    try:
        pl, ps = np.broadcast_arrays(pl, ps)
    except ValueError:
        raise PoisonCertError(f"p_lower and p_upper must have one shape, got {pl.shape} and {ps.shape}") from None
    for name, arr in (("p_lower", pl), ("p_upper", ps)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 1):
            raise PoisonCertError(f"{name} must be probabilities in [0, 1]")
    return np.atleast_1d(pl).astype(np.float64), np.atleast_1d(ps).astype(np.float64)


def bagging_gap(p_lower, p_upper, train_size, subsample_size) -> np.ndarray:
    """``p_l - p_s - delta_l - delta_s`` of Theorem 1 (eqs. 21, 39), as floats.

    ``delta_l = p_l - floor(p_l n^k)/n^k``, ``delta_s = ceil(p_s n^k)/n^k - p_s``. Exact (integer
    arithmetic on the binary fractions ``p_l``, ``p_s``, then one correctly rounded division) when
    ``n^k <= 2^200``; otherwise ``p_l - p_s``, which exceeds the exact value by at most
    ``2 n^-k < 2^-199`` (covered by :data:`CERT_TOL`).
    """
    n, k = _sizes(train_size, subsample_size)
    pl, ps = _check_bounds(p_lower, p_upper)
    if k * math.log2(n) > 200:
        return pl - ps
    big_n = n**k
    out = np.empty(pl.shape, dtype=np.float64)
    for i, (a, b) in enumerate(zip(pl.ravel().tolist(), ps.ravel().tolist())):
        an, ad = float(a).as_integer_ratio()
        bn, bd = float(b).as_integer_ratio()
        lo = (an * big_n) // ad  # floor(p_l n^k)
        hi = -((-bn * big_n) // bd)  # ceil(p_s n^k)
        out.flat[i] = (lo - hi) / big_n
    return out


def bagging_radius(p_lower, p_upper, train_size, subsample_size, attack: str = "general") -> np.ndarray:
    """Certified poisoning size ``r*`` of Theorem 1 (eq. 4) for given probability bounds.

    ``p_lower``, ``p_upper``: arrays of ``p_l`` and ``p_s`` (one per test sample). ``attack``
    restricts the poisoned size ``n'`` as in the corollaries: ``"general"`` (all of
    ``[n - r, n + r]``, unit ``a + max(d, i)``), ``"modify"`` (``n' = n``), ``"delete"``
    (``n' = n - r``), ``"insert"`` (``n' = n + r``). Returns int64 radii, -1 where ``p_l <= p_s``.
    Vectorised binary search over samples; the upper end of each bracket doubles until eq. (4)
    fails.
    """
    n, k = _sizes(train_size, subsample_size)
    attack = _attack(attack)
    pl, ps = _check_bounds(p_lower, p_upper)
    gap_eff = bagging_gap(pl, ps, n, k) - CERT_TOL
    abstain = ~(pl > ps)
    radius = np.where(abstain, -1, 0).astype(np.int64)
    idx = np.flatnonzero(~abstain & (gap_eff > 0))  # condition holds at r = 0 (excess(0) = 0)
    if idx.size:
        radius[idx] = largest_certified(lambda r: _excess(r, n, k, attack), gap_eff[idx])
    return radius


def largest_certified(excess, gap: np.ndarray, cap: int | None = None) -> np.ndarray:
    """Per sample, the largest ``r >= 0`` with ``excess(r) < gap`` (given ``excess(0) < gap``).

    ``excess`` maps an int64 array of radii to floats and is nondecreasing in ``r`` (the attack
    sets are nested). Vectorised binary search: the upper end of each bracket doubles until the
    condition fails, so there is no fixed upper limit; ``cap`` (optional) is a radius beyond
    which ``excess`` is constant (returned when even ``cap`` is certified). The invariant
    ``excess(lo) < gap`` holds throughout, so every returned radius satisfies the condition.
    """
    g = np.asarray(gap, dtype=np.float64)
    lo = np.zeros(g.size, dtype=np.int64)  # condition holds
    hi = np.ones(g.size, dtype=np.int64)  # to be tested
    grow = np.ones(g.size, dtype=bool)
    while grow.any():
        j = np.flatnonzero(grow)
        ok = excess(hi[j]) < g[j]
        grow[j[~ok]] = False
        j = j[ok]
        lo[j] = hi[j]
        if cap is not None:
            done = hi[j] >= cap
            hi[j[done]] = lo[j[done]] + 1
            grow[j[done]] = False
            j = j[~done]
            hi[j] = np.minimum(2 * hi[j], cap)
        else:
            hi[j] *= 2
            if j.size and hi[j].max() >= 1 << 62:
                raise AssertionError("certificate search did not terminate (excess does not grow)")
    while True:
        j = np.flatnonzero(hi - lo > 1)
        if j.size == 0:
            return lo
        mid = (lo[j] + hi[j]) // 2
        ok = excess(mid) < g[j]
        lo[j] = np.where(ok, mid, lo[j])
        hi[j] = np.where(ok, hi[j], mid)


def _closed_form(p_lower, p_upper, train_size, subsample_size, x_of_gap) -> np.ndarray:
    n, k = _sizes(train_size, subsample_size)
    pl, ps = _check_bounds(p_lower, p_upper)
    gap_eff = bagging_gap(pl, ps, n, k) - CERT_TOL
    g = np.clip(gap_eff, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        x = n * x_of_gap(g, k)
    r = np.ceil(x - 1.0)
    r = np.where(gap_eff > 0, np.maximum(r, 0), 0).astype(np.int64)
    return np.where(pl > ps, r, -1).astype(np.int64)


def bagging_radius_modify_only(p_lower, p_upper, train_size, subsample_size) -> np.ndarray:
    """Corollary 1 (modification only, ``n' = n``): ``r* = ceil(n (1 - (1 - gap/2)^(1/k)) - 1)``.

    ``gap = p_l - p_s - delta_l - delta_s`` less :data:`CERT_TOL` (so the float formula is
    conservative); -1 where ``p_l <= p_s``, 0 where the gap is too small for radius 0.
    """
    return _closed_form(p_lower, p_upper, train_size, subsample_size,
                        lambda g, k: -np.expm1(np.log1p(-g / 2.0) / k))


def bagging_radius_delete_only(p_lower, p_upper, train_size, subsample_size) -> np.ndarray:
    """Corollary 2 (deletion only, ``n' = |D ∩ D'|``): ``r* = ceil(n (1 - (1 - gap)^(1/k)) - 1)``."""
    return _closed_form(p_lower, p_upper, train_size, subsample_size,
                        lambda g, k: -np.expm1(np.log1p(-g) / k))


def bagging_radius_insert_only(p_lower, p_upper, train_size, subsample_size) -> np.ndarray:
    """Corollary 3 (insertion only, ``|D ∩ D'| = n``): ``r* = ceil(n ((1 + gap)^(1/k) - 1) - 1)``."""
    return _closed_form(p_lower, p_upper, train_size, subsample_size,
                        lambda g, k: np.expm1(np.log1p(g) / k))


def bagging(
    counts,
    train_size,
    subsample_size,
    alpha: float,
    *,
    attack: str = "general",
    n_models: int | None = None,
    test_set_size: int | None = None,
) -> Certificate:
    """Jia et al.'s certificate (Algorithm 1) for every test sample, from vote counts.

    ``counts``: (n_test, n_classes) votes of the N base models, each trained on
    ``subsample_size`` (k) examples drawn with replacement from ``train_size`` (n) examples.
    ``alpha``: the test set as a whole is certified with confidence ``1 - alpha`` (Theorem 3):
    ``alpha`` is split over the ``e`` test samples (``e = test_set_size``, default the number of
    rows of ``counts``; pass the full size when certifying a test set in chunks) and by
    Bonferroni over the ``c`` classes, ``alpha / (e c)`` per one-sided Clopper-Pearson interval
    (eqs. 5-6). ``l`` and ``s`` are the top two vote counts, ties to the smaller class index
    (Algorithm 1 breaks ties at random).

    Returns a :class:`Certificate`: ``prediction`` = ``l`` (also where abstaining), ``radius`` =
    ``r*`` in the unit of ``attack`` (see :data:`ATTACK_UNITS`; the default ``"general"`` is
    ``B(D, r)`` of eq. 1), -1 where ``p_l <= p_s`` (ABSTAIN). ``detail``: ``runner_up``,
    ``p_lower``, ``p_upper``.
    """
    n, k = _sizes(train_size, subsample_size)
    attack = _attack(attack)
    alpha = check_alpha(alpha)
    counts = check_vote_counts(counts, n_models)
    e = counts.shape[0] if test_set_size is None else check_size(test_set_size, "test_set_size", 1)
    if e < counts.shape[0]:
        raise PoisonCertError(
            f"test_set_size ({e}) is smaller than the number of samples being certified ({counts.shape[0]})"
        )
    c = counts.shape[1]
    top, runner, pl, ps = simuem_bounds(counts, alpha / (e * c))
    radius = bagging_radius(pl, ps, n, k, attack=attack)
    return Certificate(
        top,
        radius,
        unit=ATTACK_UNITS[attack],
        detail={"runner_up": runner, "p_lower": pl, "p_upper": ps},
    )
