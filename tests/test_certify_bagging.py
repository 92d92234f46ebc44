"""Jia, Cao & Gong's bagging certificate (papers/002): Theorem 1, eqs. 5-7, Corollaries 1-3."""

from __future__ import annotations

import itertools
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import certify_monotone as monotone

from poisoncert.certify._binomial import (
    clopper_pearson_lower,
    clopper_pearson_upper,
    simuem_bounds,
)
from poisoncert.certify.bagging import (
    bagging,
    bagging_gap,
    bagging_radius,
    bagging_radius_delete_only,
    bagging_radius_insert_only,
    bagging_radius_modify_only,
    jia_argmax_poisoned_size,
    jia_objective,
)
from poisoncert.errors import PoisonCertError

ATTACKS = ("general", "modify", "delete", "insert")


# ---------------------------------------------------------------------------------------------
# exact reference: Theorem 1 in integer arithmetic (eq. 4 multiplied by n^k)
# ---------------------------------------------------------------------------------------------
def exact_radius(pl: float, ps: float, n: int, k: int, attack: str = "general") -> int:
    if not pl > ps:
        return -1
    big = n**k
    a = math.floor(Fraction(pl) * big)  # p_l - delta_l = a / n^k
    b = math.ceil(Fraction(ps) * big)  # p_s + delta_s = b / n^k

    def sizes(r):
        if attack == "modify":
            return [n]
        if attack == "delete":
            return [max(n - r, 0)]
        if attack == "insert":
            return [n + r]
        return range(max(n - r, 0), n + r + 1)

    def holds(r):  # (n'/n)^k - 2 (m/n)^k + 1 - (a - b)/n^k < 0, times n^k
        return max(q**k - 2 * max(max(n, q) - r, 0) ** k + big for q in sizes(r)) < a - b

    if not holds(0):
        return 0
    r = 0
    while holds(r + 1):
        r += 1
    return r


def test_exact_reference_matches_on_a_hand_case():
    # n = 4, k = 2, p_l = 0.8, p_s = 0.2: n^k = 16, floor(12.8) = 12, ceil(3.2) = 4, gap = 8/16.
    # r = 1, n' = 4: 1 - 2 (3/4)^2 + 1 = 7/8 > 1/2 -> fails already at r = 1; r* = 0.
    assert exact_radius(0.8, 0.2, 4, 2) == 0
    assert bagging_radius([0.8], [0.2], 4, 2).tolist() == [0]
    # Corollary 1 by hand with n = 100, k = 1, p_l = 0.9, p_s = 0.1. As binary fractions
    # 0.9 = 0.90000000000000002..., 0.1 = 0.10000000000000000555..., so floor(100 p_l) = 90 and
    # ceil(100 p_s) = 11 (delta_s = 0.0099...): gap = 0.79, r* = ceil(100 * 0.79 / 2 - 1) = 39.
    assert bagging_gap([0.9], [0.1], 100, 1)[0] == 0.79
    r = exact_radius(0.9, 0.1, 100, 1, "modify")
    assert r == 39
    assert bagging_radius_modify_only([0.9], [0.1], 100, 1).tolist() == [39]
    assert bagging_radius([0.9], [0.1], 100, 1, "modify").tolist() == [39]


@pytest.mark.parametrize("n,k", [(1, 1), (2, 3), (5, 1), (6, 2), (12, 3), (20, 4), (40, 2), (9, 6)])
@pytest.mark.parametrize("attack", ATTACKS)
def test_search_matches_exact_integer_arithmetic(n, k, attack):
    rng = np.random.default_rng(n * 100 + k)
    pl = rng.uniform(0, 1, 60)
    ps = rng.uniform(0, 1, 60) * (1 - pl)
    pl[:5] = [0.5, 0.75, 1.0, 0.3, 0.999]
    ps[:5] = [0.5, 0.25, 0.0, 0.31, 0.0]
    got = bagging_radius(pl, ps, n, k, attack)
    want = [exact_radius(a, b, n, k, attack) for a, b in zip(pl.tolist(), ps.tolist())]
    assert got.tolist() == want


def test_delta_terms_matter_for_small_n_and_are_exact():
    # n^k = 8: p_l = 0.74 -> floor(5.92)/8 = 0.625; p_s = 0.26 -> ceil(2.08)/8 = 0.375; gap = 0.25
    assert bagging_gap([0.74], [0.26], 2, 3)[0] == pytest.approx(0.25, abs=0)
    # without the delta terms the gap would be 0.48
    assert bagging_gap([0.74], [0.26], 60000, 30)[0] == pytest.approx(0.48)


def test_argmax_eq7_matches_brute_force():
    for n, k in [(10, 2), (10, 5), (30, 3), (50, 10), (7, 1), (25, 40)]:
        for r in range(0, 3 * n):
            cand = np.arange(max(n - r, 0), n + r + 1)
            vals = jia_objective(cand, r, n, k)
            best = jia_argmax_poisoned_size(r, n, k)
            assert jia_objective(best, r, n, k) == pytest.approx(vals.max(), rel=1e-12, abs=1e-12), (n, k, r)
            assert n - r <= best <= n + r


def test_eq7_cases():
    n, k = 1000, 11
    c = 1 - 0.5 ** (1 / (k - 1))
    u = 2 ** (1 / (k - 1)) - 1
    assert jia_argmax_poisoned_size(int(n * c), n, k) == n  # case I
    assert jia_argmax_poisoned_size(int(n * u) + 1, n, k) == n + int(n * u) + 1  # case III
    r = int((n * c + n * u) / 2)  # case II: interior, floor or ceil of r / c
    assert jia_argmax_poisoned_size(r, n, k) in (math.floor(r / c), math.ceil(r / c))


# ---------------------------------------------------------------------------------------------
# Corollaries 1-3 and the general search
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(60000, 30), (60000, 100), (50000, 1000), (13007, 10), (1000, 1), (500, 2)])
def test_corollaries_agree_with_the_search(n, k):
    rng = np.random.default_rng(k)
    pl = rng.uniform(0.2, 1, 300)
    ps = np.minimum(rng.uniform(0, 0.5, 300), 1 - pl)
    for attack, closed in [
        ("modify", bagging_radius_modify_only),
        ("delete", bagging_radius_delete_only),
        ("insert", bagging_radius_insert_only),
    ]:
        assert np.array_equal(bagging_radius(pl, ps, n, k, attack), closed(pl, ps, n, k)), attack
    general = bagging_radius(pl, ps, n, k)
    cor = [f(pl, ps, n, k) for f in (bagging_radius_modify_only, bagging_radius_delete_only, bagging_radius_insert_only)]
    assert np.all(general <= np.minimum.reduce(cor))
    # Appendix D case I: while r + 1 <= n (1 - (1/2)^(1/(k-1))) the worst n' is n, so the general
    # certificate is Corollary 1's.
    if k >= 2:
        case1 = cor[0] + 1 <= n * (1 - 0.5 ** (1 / (k - 1)))
        assert np.array_equal(general[case1], cor[0][case1])
        assert case1.sum() > 100


def test_general_equals_corollary_1_since_the_gap_is_at_most_one():
    # Corollary 1's X = n (1 - (1 - gap/2)^(1/k)) <= n (1 - 2^(-1/k)) < n (1 - 2^(-1/(k-1))) for
    # gap <= 1, so every r <= r*_1 is in case I of eq. (7), where the worst n' is n; and n' = n is
    # one of the general candidates. Hence the general r* is Corollary 1's for every input.
    rng = np.random.default_rng(7)
    pl = np.concatenate([rng.uniform(0, 1, 400), [1.0, 0.999999]])
    ps = np.concatenate([rng.uniform(0, 1, 400) * (1 - pl[:400]), [0.0, 0.0]])
    for n, k in [(100, 2), (7, 3), (60000, 30), (1000, 1), (50, 200)]:
        assert np.array_equal(bagging_radius(pl, ps, n, k), bagging_radius_modify_only(pl, ps, n, k))
    # the insertion candidates of eq. (7) do win once the excess is above 1 (beyond any certificate)
    n, k, r = 100, 2, 60
    assert jia_argmax_poisoned_size(r, n, k) > n
    assert jia_objective(jia_argmax_poisoned_size(r, n, k), r, n, k) > jia_objective(n, r, n, k) > 1


def test_large_n_is_stable_and_needs_no_upper_limit():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaps = np.linspace(0.01, 0.98, 50)
        pl = 0.5 + gaps / 2
        ps = 0.5 - gaps / 2
        for n, k in [(60000, 30), (60000, 100), (50000, 1000), (10**7, 5)]:
            r = bagging_radius(pl, ps, n, k)
            assert np.all(np.diff(r) >= 0) and r[-1] > r[0] >= 0
            assert np.array_equal(r, bagging_radius_modify_only(pl, ps, n, k))
        # insertion-only with k = 1: r* ~ gap * n, far above any fixed bracket
        r = bagging_radius([0.99], [0.005], 10**8, 1, "insert")
        assert r[0] == bagging_radius_insert_only([0.99], [0.005], 10**8, 1)[0]
        assert r[0] > 9 * 10**7


# ---------------------------------------------------------------------------------------------
# Clopper-Pearson / SimuEM (eqs. 5-6) and Algorithm 1
# ---------------------------------------------------------------------------------------------
def test_clopper_pearson_definition():
    n_tr, a = 50, 0.01
    for x in range(n_tr + 1):
        lo = clopper_pearson_lower(x, n_tr, a)
        up = clopper_pearson_upper(x, n_tr, a)
        if x == 0:
            assert lo == 0
        else:  # Pr(Bin(N, lo) >= x) = alpha
            assert stats.binom.sf(x - 1, n_tr, lo) == pytest.approx(a, rel=1e-8)
        if x == n_tr:
            assert up == 1
        else:  # Pr(Bin(N, up) <= x) = alpha
            assert stats.binom.cdf(x, n_tr, up) == pytest.approx(a, rel=1e-8)
        assert lo < x / n_tr < up or (x == 0 and lo == 0) or (x == n_tr and up == 1)


def test_bagging_splits_alpha_over_test_set_and_classes():
    counts = np.array([[900, 60, 40], [600, 350, 50], [340, 330, 330], [1000, 0, 0]])
    alpha = 0.001
    cert = bagging(counts, 60000, 30, alpha)
    each = alpha / (4 * 3)
    assert np.allclose(cert.detail["p_lower"], clopper_pearson_lower(counts.max(1), 1000, each))
    up = clopper_pearson_upper(np.sort(counts, 1)[:, -2], 1000, each)
    assert np.allclose(cert.detail["p_upper"], np.minimum(up, 1 - cert.detail["p_lower"]))
    assert cert.prediction.tolist() == [0, 0, 0, 0]
    assert cert.detail["runner_up"].tolist() == [1, 1, 1, 1]
    assert np.array_equal(cert.radius, bagging_radius(cert.detail["p_lower"], cert.detail["p_upper"], 60000, 30))
    assert cert.radius[2] == -1 and cert.radius[0] > cert.radius[1] >= 0
    assert cert.unit == "modifications+max(insertions,deletions)"
    # certifying in chunks with the full test-set size gives the same certificates
    part = bagging(counts[:2], 60000, 30, alpha, test_set_size=4)
    assert np.array_equal(part.radius, cert.radius[:2])
    assert bagging(counts, 60000, 30, alpha, attack="delete").unit == "deletions"


def test_ties_go_to_the_smaller_class():
    cert = bagging(np.array([[10, 40, 40, 10]]), 1000, 10, 0.01)
    assert cert.prediction.tolist() == [1] and cert.detail["runner_up"].tolist() == [2]
    assert cert.radius.tolist() == [-1]


counts_strategy = monotone.counts_strategy(5, 60)


@settings(max_examples=60, deadline=None)
@given(counts_strategy, st.integers(0, 4), st.sampled_from([(60000, 30), (100, 3), (13007, 10)]))
def test_more_votes_for_the_top_class_never_lower_the_radius(v, j, nk):
    n, k = nk
    monotone.check_more_votes_never_lower_the_radius(lambda c, a: bagging(c, n, k, a), v, j)


@settings(max_examples=60, deadline=None)
@given(counts_strategy, st.floats(1e-6, 0.5), st.floats(1e-6, 0.5))
def test_larger_alpha_never_lowers_the_radius_and_abstain_iff_bounds_cross(v, a1, a2):
    monotone.check_larger_alpha_never_lowers_the_radius(lambda c, a: bagging(c, 60000, 30, a), v, a1, a2)


def test_monotonicity_checks_fire_on_a_certificate_that_breaks_them():
    """The shared helpers are not vacuous: a radius that falls with more top votes or a larger alpha fails."""
    real = lambda c, a: bagging(c, 60000, 30, a)  # noqa: E731

    def falls_with_top_votes(c, a):
        cert = real(c, a)
        cert.radius[:] = 10**6 - int(np.max(c))
        return cert

    def falls_with_alpha(c, a):
        cert = real(c, a)
        cert.radius[:] = np.where(cert.radius >= 0, int(1 / a), -1)
        return cert

    with pytest.raises(AssertionError):
        monotone.check_more_votes_never_lower_the_radius(falls_with_top_votes, [30, 5, 1], 1)
    with pytest.raises(AssertionError):
        monotone.check_larger_alpha_never_lowers_the_radius(falls_with_alpha, [50, 1], 0.01, 0.1)


# ---------------------------------------------------------------------------------------------
# simulation: a tiny training set and a deterministic base learner, exact label probabilities
# ---------------------------------------------------------------------------------------------
def majority(votes) -> int:
    return int(np.argmax(votes))  # ties to the smaller label


def exact_probs_with_replacement(hist, k):
    """Pr(majority label of k draws with replacement = j) for a dataset with label histogram ``hist``."""
    m = sum(hist)
    c = len(hist)
    probs = [Fraction(0)] * c
    for comp in itertools.product(range(k + 1), repeat=c):
        if sum(comp) != k:
            continue
        p = Fraction(math.factorial(k))
        for cj, hj in zip(comp, hist):
            p *= Fraction(hj, m) ** cj / math.factorial(cj)
        probs[majority(comp)] += p
    return probs


def poisoned_histograms(hist, r):
    """Label histograms of every D' in B(D, r): remove R and add A examples, max(|R|, |A|) <= r."""
    c = len(hist)
    removals = [rem for rem in itertools.product(*[range(min(h, r) + 1) for h in hist]) if sum(rem) <= r]
    additions = [add for add in itertools.product(range(r + 1), repeat=c) if sum(add) <= r]
    seen = set()
    for rem in removals:
        for add in additions:
            h = tuple(hj - rj + aj for hj, rj, aj in zip(hist, rem, add))
            if h not in seen:
                seen.add(h)
                yield h


def simulate(hist, k) -> int:
    """Certify with the exact probabilities as bounds; check every D' in B(D, r*) keeps the label."""
    n = sum(hist)
    probs = exact_probs_with_replacement(hist, k)
    assert sum(probs) == 1
    l = max(range(len(probs)), key=lambda j: (probs[j], -j))
    pl = float(probs[l])
    ps = float(max(p for j, p in enumerate(probs) if j != l))
    r_star = int(bagging_radius([pl], [ps], n, k)[0])
    assert r_star == exact_radius(pl, ps, n, k)
    checked = 0
    for h in poisoned_histograms(hist, r_star):
        if sum(h) == 0:
            continue
        q = exact_probs_with_replacement(h, k)
        assert all(q[l] > q[j] for j in range(len(q)) if j != l), (h, q)
        checked += 1
    assert checked >= 1
    return r_star


def test_simulation_certified_radius_is_sound():
    radii = [simulate(h, k) for h, k in [((10, 2), 3), ((9, 3), 2), ((8, 2, 2), 3), ((11, 1), 4), ((7, 5), 1)]]
    assert max(radii) >= 2


def test_simulation_with_monte_carlo_votes():
    # full Algorithm 1: N subsamples drawn from the tiny training set, votes, SimuEM, Theorem 1
    labels = np.array([0] * 10 + [1] * 2)
    n, k, n_models = labels.size, 3, 4000
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, size=(n_models, k))
    votes = (labels[idx].sum(axis=1) * 2 > k).astype(np.int64)  # majority, ties to 0
    counts = np.bincount(votes, minlength=2)[None]
    cert = bagging(counts, n, k, 0.001)
    assert cert.prediction[0] == 0 and cert.radius[0] >= 1
    for h in poisoned_histograms((10, 2), int(cert.radius[0])):
        if sum(h):
            q = exact_probs_with_replacement(h, k)
            assert q[0] > q[1]


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_alpha(alpha):
    with pytest.raises(PoisonCertError, match="alpha"):
        bagging(np.array([[5, 1]]), 100, 10, alpha)


def test_bad_inputs():
    good = np.array([[5, 1], [4, 2]])
    with pytest.raises(PoisonCertError, match="sums to"):
        bagging(np.array([[5, 1], [4, 3]]), 100, 10, 0.01)
    with pytest.raises(PoisonCertError, match="sums to"):
        bagging(good, 100, 10, 0.01, n_models=7)
    with pytest.raises(PoisonCertError, match="negative"):
        bagging(np.array([[7, -1]]), 100, 10, 0.01)
    with pytest.raises(PoisonCertError, match="train_size"):
        bagging(good, -5, 10, 0.01)
    with pytest.raises(PoisonCertError, match="train_size"):
        bagging(good, 0, 10, 0.01)
    with pytest.raises(PoisonCertError, match="subsample_size"):
        bagging(good, 100, -1, 0.01)
    with pytest.raises(PoisonCertError, match="subsample_size"):
        bagging(good, 100, 2.5, 0.01)
    with pytest.raises(PoisonCertError, match="unknown bagging attack"):
        bagging(good, 100, 10, 0.01, attack="flip")
    with pytest.raises(PoisonCertError, match="test_set_size"):
        bagging(good, 100, 10, 0.01, test_set_size=1)
    with pytest.raises(PoisonCertError, match="p_lower"):
        bagging_radius([1.2], [0.1], 100, 10)
    with pytest.raises(PoisonCertError, match="shape"):
        bagging(np.array([5, 1]), 100, 10, 0.01)
    # with replacement, a subsample may be larger than the training set
    assert bagging(good, 10, 50, 0.01).radius.shape == (2,)


def test_simuem_single_class():
    top, runner, pl, ps = simuem_bounds(np.array([[10]]), 0.01)
    assert top.tolist() == [0] and runner.tolist() == [-1] and ps.tolist() == [0.0] and pl[0] > 0
