"""Randomized-selection certificates (Chen et al., papers/004): Theorem 1, Corollaries 1-3, P1-P6.

Setting. The training set is ``D = D^p ∪ D^c``: a suspect part ``D^p`` of ``n`` examples and an
optional known-clean part ``D^c`` of ``n_c`` (``clean_size``) examples (Figure 1, Algorithm 2).
Every base model is trained on ``mu(D^p) ∪ D^c``, where the random selection scheme ``mu`` draws
from the suspect part only. Since ``D^c`` is in every training set, a base model is a function of
``mu(D^p)`` and Theorem 1 applies with ``D_n = D^p``: below ``n = train_size - clean_size``
(Algorithm 1's ``N_p``), and the attacker can only touch ``D^p``. ``n_c`` itself does not enter
``delta``. Schemes (eqs. 7-9), with ``n_s`` = ``subsample_size``:

* ``bagging_without_replacement``: a uniformly random ``n_s``-subset of ``D^p``;
* ``bagging_with_replacement``: ``n_s`` uniform draws with replacement (Jia et al.'s bagging);
* ``binomial``: every example of ``D^p`` independently with probability ``p = n_s / n`` (the
  defender fixes ``p`` from the clean size; the attacker cannot change it).

Theorem 1 with ``pi_1 = pi_2 = pi`` (eq. 45): with ``Omega = D ∩ D'``, ``m = |D'|`` and
``R(x) = Pr(mu(D) ⊂ X) `` for any ``X ⊂ D`` with ``|X| = x``, extended to ``x > n`` as the ratio
``1 / pi`` (``R(x) = (x/n)^{n_s}``, ``C(x, n_s)/C(n, n_s)``, ``(1-p)^{n-x}`` for the three
schemes), ``1/pi = R(m)`` and the two sums of eq. 45 are ``1 - R(|Omega|)`` and
``pi (R(m) - R(|Omega|))``, so::

    delta(rho) = max over the D' allowed by the poisoning model of  1 + R(m) - 2 R(|Omega|).

For bagging with replacement and binomial selection this is exactly Corollaries 2 and 3
(``|Omega| = max(m, n) - rho``). The poisoning models (section "Prior knowledge about poisoning
model P"; ``a``, ``d``, ``i`` = modified, deleted, inserted examples of ``D^p``):

=====  ==========================  =========================  ===================================
model  attack                      unit of the radius         delta(rho)
=====  ==========================  =========================  ===================================
P1     insert ``i <= rho``         insertions                 ``R(n + rho) - 1``  (|Omega| = n)
P2     delete ``d <= rho``         deletions                  ``1 - R(n - rho)``  (|Omega| = m)
P3     modify ``a <= rho``         modifications              ``2 - 2 R(n - rho)``
P4     ``a + i <= rho``            insertions+modifications   ``max_{n<=m<=n+rho} 1+R(m)-2R(m-rho)``
P5     ``a + d <= rho``            deletions+modifications    = P3 (max over m in [n-rho, n] at m=n)
P6     ``a + max(d, i) <= rho``    modifications+max(ins,del) = P4 (m < n never beats m = n)
=====  ==========================  =========================  ===================================

(``|Omega|`` is clamped at 0; for P2/P3/P5 ``rho`` beyond ``n`` changes nothing, so when even
``rho = n`` is certified the reported radius is ``n``: every such attack on ``D^p`` is covered.)
P6's unit is Jia et al.'s ``B(D, r)``: ``max(|D \\ D'|, |D' \\ D|)``; it is at most ``a + d + i``,
so the radius also certifies the reading "at most rho insertions, deletions and modifications".

Where the paper is wrong (proofs also in the project report):

1. Corollary 1 (eqs. 10, 49, 52) inverts ``pi``. From eqs. (47)-(48) (whose ``1/`` is lost in
   print) ``Pr(mu(D') = S) / Pr(mu(D) = S) = C(n, n_s) / C(m, n_s)``, as eq. (56) gives
   ``(n/m)^{n_s}`` for bagging with replacement; the paper's ``C(m, n_s) / C(n, n_s)`` makes
   ``delta = q - q^2 <= 1/4`` for every insertion-only attack (``q = C(n,n_s)/C(n+rho,n_s)``),
   i.e. any number of insertions would be certified once ``p_1 - p_2 > 1/4``. Counterexample:
   ``D = {u, v}``, ``n_s = 1``, ``f`` = label of the selected example, both labelled 0: ``p_1 = 1``,
   ``p_2 = 0``; inserting three examples labelled 1 gives ``Pr(0) = 2/5 < Pr(1) = 3/5``. With the
   correct ``pi``: ``delta = 1 + C(m, n_s)/C(n, n_s) - 2 C(|Omega|, n_s)/C(n, n_s)`` (the same
   shape as Corollaries 2-3), which for this example certifies exactly one insertion.
2. P2 states ``sum_{D_sub not ⊂ Omega} Pr(mu(D'_m) = D_sub) = 1``; after deletions only,
   ``Omega = D'``, every selection from ``D'`` lies in ``Omega``, so the sum is 0. With 1, delta
   would be 1 for every rho (nothing certifiable, contradicting Jia et al.'s Corollary 2).
3. Theorem 1 concludes ``g(D') = c_1`` from ``>=`` in eq. (5); at equality the proof's bounds give
   ``Pr(c_1) >= Pr(c_2)`` only, which allows a tie (and the paper says the bounds are tight). We
   certify ``rho`` only when ``p_1 - p_2 > delta(rho)`` (strict), as Jia et al.'s eq. (4); hence
   ABSTAIN exactly when ``p_1 <= p_2`` (Algorithm 1 with ``delta(0) = 0``).

Figure 2 check: under P6 with ``n = 13007``, ``n_s = 10`` binomial selection has the smallest
``delta`` only for ``rho > n_s`` (in the modification regime ``(1-p)^rho > (1 - rho/n)^{n_s}``
exactly when ``rho > n_s``); below that it exceeds bagging with replacement by < 2e-6, which the
figure cannot show. Bagging without replacement is the largest throughout.

Chen et al. drop Jia et al.'s ``delta_l``, ``delta_s``: that is valid (their proof bounds
``Pr(f = c | D_sub)`` by 0 and 1 directly and needs no discretisation), so for bagging with
replacement under P6 this certificate equals Jia et al.'s without those terms.

Numerics: ``delta`` is evaluated in log space (``log1p``; for bagging without replacement a
cumulative sum of ``log(y / (y - n_s))`` outward from ``n``, or the direct sum over the ``n_s``
factors when the range is wide), the radius is found by a vectorised binary search over samples
whose upper bracket end doubles until ``delta`` exceeds the gap (no artificial upper limit;
``delta`` is nondecreasing because the attack sets grow with ``rho``), and every comparison keeps
the margin :data:`CERT_TOL` (conservative).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from ..errors import PoisonCertError
from ._binomial import CERT_TOL, check_size, check_vote_counts, simuem_bounds
from ._common import Certificate, check_alpha
from .bagging import _check_bounds, _root_constants, largest_certified

__all__ = [
    "SCHEMES",
    "POISONING_MODELS",
    "MODEL_UNITS",
    "selection_delta",
    "selection_ratio",
    "random_selection_radius",
    "random_selection",
]

SCHEMES = ("bagging_without_replacement", "bagging_with_replacement", "binomial")
_SCHEME_ALIASES = {
    "bagging_without_replacement": SCHEMES[0], "without_replacement": SCHEMES[0], "bagging_wor": SCHEMES[0], "scheme1": SCHEMES[0],
    "bagging_with_replacement": SCHEMES[1], "with_replacement": SCHEMES[1], "bagging": SCHEMES[1],
    "scheme2": SCHEMES[1],
    "binomial": SCHEMES[2], "binomial_selection": SCHEMES[2], "scheme3": SCHEMES[2],
}

POISONING_MODELS = ("P1", "P2", "P3", "P4", "P5", "P6")
#: Unit of the radius under each poisoning model.
MODEL_UNITS = {
    "P1": "insertions",
    "P2": "deletions",
    "P3": "modifications",
    "P4": "insertions+modifications",
    "P5": "deletions+modifications",
    "P6": "modifications+max(insertions,deletions)",
}
_MODEL_ALIASES = {
    "p1": "P1", "insert": "P1", "insertion": "P1", "insertions": "P1",
    "p2": "P2", "delete": "P2", "deletion": "P2", "deletions": "P2",
    "p3": "P3", "modify": "P3", "modification": "P3", "modifications": "P3",
    "p4": "P4", "insert+modify": "P4", "insertion+modification": "P4", "insertions+modifications": "P4",
    "p5": "P5", "delete+modify": "P5", "deletion+modification": "P5", "deletions+modifications": "P5",
    "p6": "P6", "insert+delete+modify": "P6", "insertion+deletion+modification": "P6",
    "insertions+deletions+modifications": "P6", "general": "P6", "any": "P6",
}


def _scheme(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _SCHEME_ALIASES:
        raise PoisonCertError(f"unknown random selection scheme {name!r}; choose one of {', '.join(SCHEMES)}")
    return _SCHEME_ALIASES[key]


def _model(name: str) -> str:
    key = str(name).strip().lower().replace(" ", "").replace("/", "+").replace(",", "+")
    if key not in _MODEL_ALIASES:
        raise PoisonCertError(
            f"unknown poisoning model {name!r}; choose P1..P6 or insert, delete, modify, insert+modify,"
            " delete+modify, general"
        )
    return _MODEL_ALIASES[key]


def _setup(scheme: str, train_size: int, subsample_size: int, clean_size: int) -> tuple[str, int, int]:
    scheme = _scheme(scheme)
    total = check_size(train_size, "train_size", 1)
    n_c = check_size(clean_size, "clean_size", 0)
    ns = check_size(subsample_size, "subsample_size", 1)
    n = total - n_c
    if n < 1:
        raise PoisonCertError(
            f"clean_size ({n_c}) must be smaller than train_size ({total}): nothing would be left to select from"
        )
    if scheme != "bagging_with_replacement" and ns > n:
        raise PoisonCertError(
            f"subsample_size ({ns}) exceeds the {n} selectable (suspect) training examples;"
            f" {scheme} needs subsample_size <= train_size - clean_size"
        )
    return scheme, n, ns


def _log_ratio_fn(scheme: str, n: int, ns: int, x_lo: int, x_hi: int, n_points: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> log R(x)`` valid for integer ``x`` in ``[x_lo, x_hi]`` (``x_lo <= n <= x_hi``).

    ``n_points``: about how many ``x`` one call evaluates; for bagging without replacement it
    decides between a table over ``[x_lo, x_hi]`` (a same-sign cumulative sum of
    ``log(y / (y - n_s))`` outward from ``n``) and the direct sum
    ``sum_{j < n_s} log1p((x - n) / (n - j))`` (``n_s`` vector operations per call).
    """
    if scheme == "bagging_with_replacement":
        def f(x):
            with np.errstate(divide="ignore"):
                return ns * np.log1p((np.asarray(x, dtype=np.float64) - n) / n)
        return f
    if scheme == "binomial":
        lq = math.log1p(-ns / n) if ns < n else -math.inf

        def f(x):
            e = n - np.asarray(x, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                return np.where(e == 0, 0.0, e * lq)
        return f
    # without replacement: log C(x, ns) - log C(n, ns)
    if x_hi - x_lo > 64 * ns * max(n_points, 1):
        denominators = n - np.arange(ns, dtype=np.float64)

        def f(x):
            x = np.asarray(x, dtype=np.int64)
            valid = x >= ns  # then (x - j) / (n - j) > 0 for every j < ns
            d = np.where(valid, x - n, 0).astype(np.float64)
            out = np.zeros(x.shape)
            for den in denominators:
                out += np.log1p(d / den)
            return np.where(valid, out, -np.inf)
        return f
    up = np.arange(n + 1, x_hi + 1, dtype=np.float64)
    t_up = np.log1p(ns / (up - ns))  # up > n >= ns; C(y, ns) / C(y-1, ns) = y / (y - ns)
    down = np.arange(x_lo + 1, n + 1, dtype=np.float64)
    t_down = np.full(down.shape, np.inf)
    ok = down > ns
    t_down[ok] = np.log1p(ns / (down[ok] - ns))
    below = -np.cumsum(t_down[::-1])[::-1]  # log R(x) for x = x_lo .. n-1
    table = np.concatenate([below, [0.0], np.cumsum(t_up)])

    def f(x):
        return table[np.asarray(x, dtype=np.int64) - x_lo]
    return f


def selection_ratio(x: ArrayLike, scheme: str, train_size: int, subsample_size: int, clean_size: int = 0) -> np.ndarray:
    """``R(x)`` for the scheme: ``(x/n)^{n_s}``, ``C(x, n_s)/C(n, n_s)`` or ``(1 - n_s/n)^{n - x}``."""
    scheme, n, ns = _setup(scheme, train_size, subsample_size, clean_size)
    x = np.asarray(x, dtype=np.int64)
    if x.size and x.min() < 0:
        raise PoisonCertError("dataset sizes x must be >= 0")
    hi = max(n, int(x.max()) if x.size else n) + 1
    return np.exp(_log_ratio_fn(scheme, n, ns, 0 if x.size == 0 else min(n, int(x.min())), hi)(x))


def _delta(rho: np.ndarray, scheme: str, n: int, ns: int, model: str) -> np.ndarray:
    rho = np.asarray(rho, dtype=np.int64)
    rmax = int(rho.max()) if rho.size else 0
    log_r = _log_ratio_fn(scheme, n, ns, max(0, n - rmax), n + rmax + 1, rho.size)

    def R(x):
        with np.errstate(over="ignore"):
            return np.exp(log_r(x))

    rc = np.minimum(rho, n)
    if model == "P1":
        return R(n + rho) - 1.0
    if model == "P2":
        return 1.0 - R(n - rc)
    if model in ("P3", "P5"):
        return 2.0 - 2.0 * R(n - rc)

    # P4, P6: max over m in [n, n + rho] of 1 + R(m) - 2 R(max(m - rho, 0)); every candidate is a
    # feasible m, so the max over a superset of the true argmax is exact.
    def f(m):
        return 1.0 + R(m) - 2.0 * R(np.maximum(m - rho, 0))

    cands = [np.full_like(rho, n), n + rho, np.clip(rho, n, n + rho)]
    if scheme == "bagging_with_replacement" and ns >= 2:
        # unimodal, continuous maximum at rho / (1 - (1/2)^(1/(ns-1))) (Jia et al. eq. 7)
        c, _ = _root_constants(ns)
        fl = np.floor(rho / c).astype(np.int64)
        cands += [np.clip(fl + j, n, n + rho) for j in (-1, 0, 1, 2)]
    elif scheme == "bagging_without_replacement":
        # f(m+1) - f(m) = [C(m, ns-1) - 2 C(m - rho, ns-1)] / C(n, ns) (Pascal's rule): its sign
        # is that of 1 - 2 C(m-rho, ns-1)/C(m, ns-1), a ratio nondecreasing in m, so f rises then
        # falls. Binary search for the first m with f(m+1) < f(m).
        lo = np.full_like(rho, n)
        hi = n + rho
        while True:
            j = lo < hi
            if not j.any():
                break
            mid = (lo + hi) // 2
            fall = (f(mid + 1) - f(mid)) < 0
            hi = np.where(j & fall, mid, hi)
            lo = np.where(j & ~fall, mid + 1, lo)
        cands += [np.clip(lo + j, n, n + rho) for j in (-1, 0, 1)]
    # binomial: f(m) = (1-p)^(n-m) (1 - 2 (1-p)^rho) for m >= rho, increasing in m below rho:
    # the maximum is at n, rho or n + rho (already candidates).
    return np.max(np.stack([f(m) for m in cands]), axis=0)


def selection_delta(
    rho: ArrayLike, scheme: str, train_size: int, subsample_size: int, poisoning_model: str = "P6", clean_size: int = 0
) -> np.ndarray:
    """``delta(rho)`` of Corollaries 1-3 under a poisoning model (Chen Fig. 2 plots P6).

    ``p_1 - p_2 > delta(rho)`` certifies attacks of size ``rho`` (in the unit of the model).
    ``n = train_size - clean_size`` is the size of the suspect part. Vectorised over ``rho``.
    Bagging without replacement uses the corrected Corollary 1 (module docstring).
    """
    scheme, n, ns = _setup(scheme, train_size, subsample_size, clean_size)
    model = _model(poisoning_model)
    rho = np.asarray(rho)
    if rho.size and (not np.all(np.isfinite(rho.astype(np.float64))) or np.any(rho < 0)
                     or np.any(rho != np.round(rho))):
        raise PoisonCertError("rho must be whole numbers >= 0")
    return _delta(rho.astype(np.int64), scheme, n, ns, model)


def random_selection_radius(
    p_lower: ArrayLike,
    p_upper: ArrayLike,
    scheme: str,
    train_size: int,
    subsample_size: int,
    poisoning_model: str = "P6",
    clean_size: int = 0,
) -> np.ndarray:
    """Largest ``rho`` with ``p_1 - p_2 > delta(rho)`` (Theorem 1, Algorithm 1 line 5), per sample.

    -1 (ABSTAIN) where ``p_1 <= p_2``; 0 where the gap is positive but within the float margin.
    """
    scheme, n, ns = _setup(scheme, train_size, subsample_size, clean_size)
    model = _model(poisoning_model)
    pl, ps = _check_bounds(p_lower, p_upper)
    abstain = ~(pl > ps)
    gap_eff = pl - ps - CERT_TOL
    radius = np.where(abstain, -1, 0).astype(np.int64)
    live = ~abstain & (gap_eff > 0)
    if not live.any():
        return radius
    cap = n if model in ("P2", "P3", "P5") else None  # delta is constant for rho >= n
    radius[live] = largest_certified(lambda r: _delta(r, scheme, n, ns, model), gap_eff[live], cap=cap)
    return radius


def random_selection(
    counts: ArrayLike,
    scheme: str,
    train_size: int,
    subsample_size: int,
    alpha: float,
    poisoning_model: str = "P6",
    *,
    clean_size: int = 0,
    alpha_split: str = "chen",
    n_models: int | None = None,
    test_set_size: int | None = None,
) -> Certificate:
    """Chen et al.'s certified prediction (Algorithm 1) for every test sample, from vote counts.

    ``counts``: (n_test, n_classes) votes of the T base models. ``train_size``: ``|D|``
    including the ``clean_size`` known-clean examples that every base model sees;
    ``subsample_size``: ``n_s`` drawn from the suspect part (binomial: ``p = n_s / n``).

    ``alpha_split``: ``"chen"`` (default, eqs. 13-14): ``p_1`` at ``alpha/2`` and ``p_2`` at
    ``alpha/2``, confidence ``1 - alpha`` per test sample; ``"jia"``: Jia et al.'s SimuEM,
    ``alpha / (e c)`` for each of the ``c`` class bounds, confidence ``1 - alpha`` for the whole
    test set of ``e = test_set_size`` samples at once. (Chen's Bonferroni argument covers two
    fixed classes; ``c_1``, ``c_2`` are chosen from the same votes, which the class-wise split of
    ``"jia"`` covers for any number of classes.)

    Returns a :class:`Certificate` with ``radius`` in the unit of ``poisoning_model``
    (:data:`MODEL_UNITS`), -1 = ABSTAIN; ``prediction`` = ``c_1`` (also where abstaining).
    """
    scheme, n, ns = _setup(scheme, train_size, subsample_size, clean_size)
    model = _model(poisoning_model)
    alpha = check_alpha(alpha)
    counts = check_vote_counts(counts, n_models)
    split = str(alpha_split).strip().lower()
    e = counts.shape[0] if test_set_size is None else check_size(test_set_size, "test_set_size", 1)
    if e < counts.shape[0]:
        raise PoisonCertError(
            f"test_set_size ({e}) is smaller than the number of samples being certified ({counts.shape[0]})"
        )
    if split == "chen":
        alpha_each = alpha / 2.0
    elif split == "jia":
        alpha_each = alpha / (e * counts.shape[1])
    else:
        raise PoisonCertError(f"unknown alpha_split {alpha_split!r}; choose 'chen' (eqs. 13-14) or 'jia' (SimuEM)")
    top, runner, p1, p2 = simuem_bounds(counts, alpha_each)
    radius = random_selection_radius(p1, p2, scheme, n + int(clean_size), ns, model, clean_size)
    return Certificate(
        top,
        radius,
        unit=MODEL_UNITS[model],
        detail={"runner_up": runner, "p_lower": p1, "p_upper": p2},
    )
