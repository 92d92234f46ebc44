"""Chen et al.'s randomized-selection certificates (papers/004): Theorem 1, Corollaries 1-3, P1-P6."""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import certify_monotone as monotone

from poisoncert.certify._binomial import clopper_pearson_lower, clopper_pearson_upper
from poisoncert.certify.bagging import (
    bagging_radius,
    bagging_radius_delete_only,
    bagging_radius_insert_only,
    bagging_radius_modify_only,
)
from poisoncert.certify.selection import (
    MODEL_UNITS,
    POISONING_MODELS,
    SCHEMES,
    random_selection,
    random_selection_radius,
    selection_delta,
    selection_ratio,
)
from poisoncert.errors import PoisonCertError

WITHOUT, WITH, BINOMIAL = SCHEMES


# ---------------------------------------------------------------------------------------------
# exact references (fractions)
# ---------------------------------------------------------------------------------------------
def ratio_exact(x: int, scheme: str, n: int, ns: int) -> Fraction:
    """R(x) = 1/pi for |D'| = x; = Pr(mu(D) inside a fixed x-subset of D) for x <= n."""
    if scheme == WITH:
        return Fraction(x, n) ** ns
    if scheme == WITHOUT:
        return Fraction(math.comb(x, ns), math.comb(n, ns))
    if ns == n:  # p = 1: every example is selected
        return Fraction(int(x == n)) if x <= n else math.inf
    return (1 - Fraction(ns, n)) ** (n - x)


def attacks(model: str, rho: int, n: int):
    """(modified a, deleted d, inserted i) allowed by the poisoning model with intensity rho."""
    for a in range(min(rho, n) + 1):
        for d in range(n - a + 1):
            for i in range(rho + 1):
                ok = {
                    "P1": a == d == 0,
                    "P2": a == i == 0 and d <= rho,
                    "P3": d == i == 0,
                    "P4": d == 0 and a + i <= rho,
                    "P5": i == 0 and a + d <= rho,
                    "P6": a + max(d, i) <= rho,
                }[model]
                if ok:
                    yield a, d, i


def delta_exact(rho: int, scheme: str, n: int, ns: int, model: str) -> Fraction:
    """Eq. (45) with pi_1 = pi_2 maximised over every attack the model allows.

    sum_{not in Omega} Pr(mu(D)) = 1 - R(|Omega|); (1/pi) sum_{not in Omega} Pr(mu(D')) = R(m) - R(|Omega|)
    with m = n - d + i and |Omega| = n - a - d.
    """
    return max(
        1 + ratio_exact(n - d + i, scheme, n, ns) - 2 * ratio_exact(n - a - d, scheme, n, ns)
        for a, d, i in attacks(model, rho, n)
    )


def chen_literal_delta(rho: int, scheme: str, n: int, ns: int) -> Fraction:
    """Corollaries 2 and 3 exactly as printed (P6): max over m in [n - rho, n + rho]."""
    out = []
    for m in range(max(n - rho, 0), n + rho + 1):
        if scheme == WITH:  # 1 + (m/n)^ns - 2 ((max(m, n) - rho)/n)^ns
            out.append(1 + Fraction(m, n) ** ns - 2 * Fraction(max(max(m, n) - rho, 0), n) ** ns)
        else:  # 1 + (1-p)^(n-m) - 2 (1-p)^(min(n-m, 0) + rho)
            q = 1 - Fraction(ns, n)
            out.append(1 + q ** (n - m) - 2 * q ** min(min(n - m, 0) + rho, n))
    return max(out)


def chen_literal_corollary1_p1(rho: int, n: int, ns: int) -> Fraction:
    """Corollary 1 as printed (pi inverted) under P1 (|Omega| = n, m in [n, n + rho])."""
    c = lambda x: Fraction(math.comb(x, ns))  # noqa: E731
    return max(
        1 - c(n) / c(n) + c(n) / c(m) - c(n) * c(n) / c(m) ** 2 for m in range(n, n + rho + 1)
    )


def radius_exact(pl: float, ps: float, scheme: str, n: int, ns: int, model: str) -> int:
    if not pl > ps:
        return -1
    gap = Fraction(pl) - Fraction(ps)
    r = 0
    while delta_exact(r + 1, scheme, n, ns, model) < gap:
        r += 1
        if model in ("P2", "P3", "P5") and r == n:
            break
    return r


# ---------------------------------------------------------------------------------------------
# delta(rho) against the exact formulas
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("model", POISONING_MODELS)
@pytest.mark.parametrize("n,ns", [(6, 1), (8, 3), (10, 2), (7, 7)])
def test_delta_matches_exact_enumeration(scheme, model, n, ns):
    rho = np.arange(0, 9)
    got = selection_delta(rho, scheme, n, ns, model)
    want = [float(delta_exact(int(r), scheme, n, ns, model)) for r in rho]
    assert got[0] == 0.0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.all(got[1:] >= got[:-1] - 1e-15)  # nondecreasing (inf allowed)


@pytest.mark.parametrize("scheme", [WITH, BINOMIAL])
@pytest.mark.parametrize("n,ns", [(6, 1), (9, 3), (12, 5)])
def test_p6_delta_is_corollaries_2_and_3_as_printed(scheme, n, ns):
    for rho in range(0, 2 * n):
        assert delta_exact(rho, scheme, n, ns, "P6") == chen_literal_delta(rho, scheme, n, ns)


def test_printed_corollary_1_is_unsound_and_the_correction_is_not():
    # D = {u, v}, n_s = 1, f = label of the selected example, both labelled 0: p_1 = 1, p_2 = 0.
    n, ns = 2, 1
    for rho in range(1, 30):  # the printed formula never exceeds 1/4 for insertions
        assert chen_literal_corollary1_p1(rho, n, ns) <= Fraction(1, 4)
    # inserting 3 examples labelled 1: Pr(0) = 2/5 < Pr(1) = 3/5 -> the prediction flips
    assert Fraction(2, 5) < Fraction(3, 5)
    # corrected delta certifies exactly one insertion (with 2 insertions Pr(0) = Pr(1) = 1/2: a tie)
    assert random_selection_radius([1.0], [0.0], WITHOUT, n, ns, "P1").tolist() == [1]
    assert selection_delta([1, 2], WITHOUT, n, ns, "P1").tolist() == [0.5, 1.0]


def test_p5_is_p3_and_p6_is_p4():
    rho = np.arange(0, 400)
    for scheme in SCHEMES:
        for n, ns in [(13007, 10), (500, 30)]:
            d = {m: selection_delta(rho, scheme, n, ns, m) for m in POISONING_MODELS}
            assert np.array_equal(d["P5"], d["P3"]) and np.array_equal(d["P6"], d["P4"])
            slack = 1e-12 * np.abs(d["P6"]) + 1e-15
            assert np.all(d["P1"] <= d["P6"] + slack) and np.all(d["P3"] <= d["P6"] + slack)


@pytest.mark.parametrize("model", POISONING_MODELS)
def test_without_replacement_table_and_direct_sum_agree(model):
    rho = np.arange(0, 3000, 7)
    table = selection_delta(rho, WITHOUT, 5000, 3, model)  # one call over a narrow range: table
    direct = np.array([selection_delta([r], WITHOUT, 5000, 3, model)[0] for r in rho])  # wide: direct sum
    np.testing.assert_allclose(table, direct, rtol=1e-11, atol=1e-12)


def test_ratio():
    assert selection_ratio([0, 3, 5, 7], WITH, 5, 2).tolist() == pytest.approx([0, 9 / 25, 1, 49 / 25])
    assert selection_ratio([1, 3, 5, 7], WITHOUT, 5, 2).tolist() == pytest.approx([0, 3 / 10, 1, 21 / 10])
    assert selection_ratio([0, 5, 7], BINOMIAL, 5, 2).tolist() == pytest.approx([0.6**5, 1, 0.6**-2])


def test_figure_2_ordering_of_the_schemes():
    # Chen Fig. 2 (P6): n = 13007, n_s = 10: binomial lowest, without replacement highest;
    # n = 50000, n_s = 1000: nearly the same. (Precisely: in the modification regime binomial
    # is below bagging with replacement iff rho > n_s, since (1 - n_s/n)^rho > (1 - rho/n)^n_s
    # exactly then; for rho < n_s it is above by < 2e-6 here, invisible in the figure.)
    rho = np.arange(1, 700)
    d = {s: selection_delta(rho, s, 13007, 10, "P6") for s in SCHEMES}
    assert np.all(d[WITH] <= d[WITHOUT] + 1e-15)
    assert np.all(d[BINOMIAL][10:] <= d[WITH][10:]) and np.all(d[BINOMIAL][:9] > d[WITH][:9])
    assert np.max(d[BINOMIAL][:9] - d[WITH][:9]) < 2e-6
    assert d[BINOMIAL][-1] < d[WITH][-1] < d[WITHOUT][-1] < 1
    rho = np.arange(1, 30)
    d = {s: selection_delta(rho, s, 50000, 1000, "P6") for s in SCHEMES}
    assert np.max(np.abs(d[BINOMIAL] - d[WITHOUT])) < 0.02


# ---------------------------------------------------------------------------------------------
# radius: exact reference, Jia's corollaries, properties
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("model", POISONING_MODELS)
def test_radius_matches_exact_reference(scheme, model):
    n, ns = 9, 2
    rng = np.random.default_rng(len(model) + SCHEMES.index(scheme))
    pl = rng.uniform(0, 1, 25)
    ps = rng.uniform(0, 1, 25) * (1 - pl)
    pl[:3], ps[:3] = [0.6, 0.999, 0.4], [0.6, 0.0, 0.5]
    got = random_selection_radius(pl, ps, scheme, n, ns, model)
    want = [radius_exact(a, b, scheme, n, ns, model) for a, b in zip(pl.tolist(), ps.tolist())]
    assert got.tolist() == want


def test_with_replacement_equals_jia_without_delta_terms():
    # n^k > 2^200, so Jia's delta_l, delta_s are negligible: P6 = Jia general = Corollary 1,
    # P3 = Corollary 1, P2 = Corollary 2, P1 = Corollary 3.
    rng = np.random.default_rng(3)
    pl = rng.uniform(0.3, 1, 500)
    ps = np.minimum(rng.uniform(0, 0.5, 500), 1 - pl)
    for n, k in [(60000, 30), (13007, 100), (50000, 1000)]:
        rs = lambda m: random_selection_radius(pl, ps, WITH, n, k, m)  # noqa: E731
        assert np.array_equal(rs("P6"), bagging_radius(pl, ps, n, k))
        assert np.array_equal(rs("P3"), bagging_radius_modify_only(pl, ps, n, k))
        assert np.array_equal(rs("P2"), bagging_radius_delete_only(pl, ps, n, k))
        assert np.array_equal(rs("P1"), bagging_radius_insert_only(pl, ps, n, k))


def test_clean_part_shrinks_the_attackable_set():
    counts = np.array([[800, 150, 50], [990, 10, 0]])
    a = random_selection(counts, BINOMIAL, 13007, 10, 0.001, "P6", clean_size=3007)
    b = random_selection(counts, BINOMIAL, 10000, 10, 0.001, "P6")
    assert np.array_equal(a.radius, b.radius)
    c = random_selection(counts, BINOMIAL, 13007, 10, 0.001, "P6")
    assert np.all(a.radius <= c.radius)  # fewer suspect examples, each one weighs more


def test_alpha_split():
    counts = np.array([[800, 150, 50], [500, 400, 100], [990, 10, 0]])
    chen = random_selection(counts, WITH, 60000, 30, 0.001, "P6")
    assert np.allclose(chen.detail["p_lower"], clopper_pearson_lower(counts.max(1), 1000, 0.0005))
    up = clopper_pearson_upper(np.sort(counts, 1)[:, -2], 1000, 0.0005)
    assert np.allclose(chen.detail["p_upper"], np.minimum(up, 1 - chen.detail["p_lower"]))
    jia = random_selection(counts, WITH, 60000, 30, 0.001, "P6", alpha_split="jia")
    assert np.allclose(jia.detail["p_lower"], clopper_pearson_lower(counts.max(1), 1000, 0.001 / 9))
    assert np.all(jia.radius <= chen.radius)
    assert chen.unit == MODEL_UNITS["P6"] and chen.prediction.tolist() == [0, 0, 0]


@pytest.mark.parametrize("name,model", [("insertion", "P1"), ("delete", "P2"), ("Modification", "P3"),
                                         ("insert+modify", "P4"), ("deletion+modification", "P5"),
                                         ("general", "P6"), ("p6", "P6")])
def test_readable_model_names(name, model):
    counts = np.array([[900, 100]])
    assert random_selection(counts, WITHOUT, 1000, 10, 0.01, name).unit == MODEL_UNITS[model]


def test_large_n_and_unbounded_search():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pl, ps = np.array([0.99, 0.7, 0.55]), np.array([0.005, 0.2, 0.45])
        for scheme in SCHEMES:
            for model in POISONING_MODELS:
                r = random_selection_radius(pl, ps, scheme, 60000, 100, model)
                assert r[0] > r[1] > r[2] >= 0
        # insertion only with n_s = 1: radius ~ gap * n, far beyond the first bracket
        r = random_selection_radius([0.99], [0.005], WITH, 10**7, 1, "P1")
        assert r[0] == 9849999  # < n gap = 9850000 (strict); Jia: 9849997 (its delta terms at n^k = 1e7)
        assert bagging_radius_insert_only([0.99], [0.005], 10**7, 1)[0] == 9849997
        assert random_selection_radius([0.99], [0.005], WITHOUT, 10**7, 1, "P1")[0] == r[0]  # R(x) = x/n too
        # binomial: (1 - 1/n)^-rho - 1 < gap  <=>  rho < log(1 + gap) / -log(1 - 1/n)
        rb = random_selection_radius([0.99], [0.005], BINOMIAL, 10**7, 1, "P1")[0]
        assert rb == math.ceil(math.log1p(0.985) / -math.log1p(-1e-7)) - 1 == 6856188
        # binomial deletion: deleting every suspect example can be certified (f(D^c alone) = c_1)
        assert random_selection_radius([0.9], [0.05], BINOMIAL, 3, 1, "P2").tolist() == [3]


counts_strategy = monotone.counts_strategy(4, 50)


@settings(max_examples=40, deadline=None)
@given(counts_strategy, st.integers(0, 3), st.sampled_from(SCHEMES), st.sampled_from(POISONING_MODELS))
def test_more_votes_for_the_top_class_never_lower_the_radius(v, j, scheme, model):
    monotone.check_more_votes_never_lower_the_radius(
        lambda c, a: random_selection(c, scheme, 5000, 20, a, model), v, j
    )


@settings(max_examples=40, deadline=None)
@given(counts_strategy, st.floats(1e-6, 0.5), st.floats(1e-6, 0.5), st.sampled_from(SCHEMES))
def test_larger_alpha_never_lowers_the_radius_and_abstain_iff_bounds_cross(v, a1, a2, scheme):
    monotone.check_larger_alpha_never_lowers_the_radius(
        lambda c, a: random_selection(c, scheme, 5000, 20, a), v, a1, a2
    )


# ---------------------------------------------------------------------------------------------
# simulation: tiny suspect set + clean part, majority-label base learner, exact probabilities
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def exact_probs(hist, scheme, ns, p, clean):
    """Pr(majority label of mu(D^p) ∪ D^c = j); ``p`` is the fixed binomial probability."""
    c = len(hist)
    m = sum(hist)
    probs = [Fraction(0)] * c
    if scheme == BINOMIAL:
        space = itertools.product(*[range(h + 1) for h in hist])
    else:
        space = (comp for comp in itertools.product(range(ns + 1), repeat=c) if sum(comp) == ns)
    for comp in space:
        if scheme == WITH:
            w = Fraction(math.factorial(ns))
            for cj, hj in zip(comp, hist):
                w *= Fraction(hj, m) ** cj / math.factorial(cj)
        elif scheme == WITHOUT:
            w = Fraction(math.prod(math.comb(hj, cj) for cj, hj in zip(comp, hist)), math.comb(m, ns))
        else:
            w = Fraction(1)
            for cj, hj in zip(comp, hist):
                w *= math.comb(hj, cj) * p**cj * (1 - p) ** (hj - cj)
        votes = [cj + kj for cj, kj in zip(comp, clean)]
        probs[int(np.argmax(votes))] += w
    return probs


def poisoned(hist, model, rho):
    """Label histograms of D'^p for every attack of the model with intensity <= rho."""
    c = len(hist)
    for rem in itertools.product(*[range(min(h, rho) + 1) for h in hist]):
        for add in itertools.product(range(rho + 1), repeat=c):
            r_, a_ = sum(rem), sum(add)
            ok = {
                "P1": r_ == 0 and a_ <= rho,
                "P2": a_ == 0 and r_ <= rho,
                "P3": r_ == a_ <= rho,
                "P4": r_ <= a_ <= rho,
                "P5": a_ <= r_ <= rho,
                "P6": max(r_, a_) <= rho,
            }[model]
            if ok:
                yield tuple(h - r + a for h, r, a in zip(hist, rem, add))


CASES = [((9, 3), 3, (0, 0)), ((10, 2), 2, (0, 0)), ((8, 4), 3, (2, 0)), ((8, 2, 2), 2, (0, 0, 1)), ((7, 5), 1, (1, 0))]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_simulation_certified_radius_is_sound(scheme):
    radii = []
    for hist, ns, clean in CASES:
        n = sum(hist)
        p = Fraction(ns, n)
        probs = exact_probs(hist, scheme, ns, p, clean)
        assert sum(probs) == 1
        l = max(range(len(probs)), key=lambda j: (probs[j], -j))
        pl = float(probs[l])
        ps = float(max(q for j, q in enumerate(probs) if j != l))
        for model in POISONING_MODELS:
            r = int(random_selection_radius([pl], [ps], scheme, n + sum(clean), ns, model, sum(clean))[0])
            radii.append(r)
            for h in poisoned(hist, model, r):
                m = sum(h)
                # the certificate never covers a D' on which the scheme cannot run
                assert (scheme == WITHOUT and m >= ns) or (scheme == WITH and m >= 1) or scheme == BINOMIAL
                q = exact_probs(h, scheme, ns, p, clean)
                assert all(q[l] > q[j] for j in range(len(q)) if j != l), (hist, model, r, h)
    assert max(radii) >= 2


def test_simulation_with_monte_carlo_votes():
    # Algorithm 2 + Algorithm 1 with binomial selection on 12 suspect and 2 clean examples
    labels = np.array([0] * 9 + [1] * 3)
    clean = (1, 0)
    n, ns, n_models = labels.size, 3, 4000
    rng = np.random.default_rng(1)
    sel = rng.random((n_models, n)) < ns / n
    ones = (sel & (labels == 1)).sum(1)
    zeros = (sel & (labels == 0)).sum(1) + clean[0]
    votes = (ones > zeros).astype(np.int64)
    counts = np.bincount(votes, minlength=2)[None]
    for model in POISONING_MODELS:
        cert = random_selection(counts, BINOMIAL, n + sum(clean), ns, 0.001, model, clean_size=sum(clean))
        assert cert.prediction[0] == 0 and cert.radius[0] >= 1
        for h in poisoned((9, 3), model, int(cert.radius[0])):
            q = exact_probs(h, BINOMIAL, ns, Fraction(ns, n), clean)
            assert q[0] > q[1]


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0, 1, -0.5, 2, float("nan")])
def test_bad_alpha(alpha):
    with pytest.raises(PoisonCertError, match="alpha"):
        random_selection(np.array([[5, 1]]), WITH, 100, 10, alpha)


def test_bad_inputs():
    good = np.array([[5, 1], [4, 2]])
    with pytest.raises(PoisonCertError, match="sums to"):
        random_selection(np.array([[5, 1], [4, 3]]), WITH, 100, 10, 0.01)
    with pytest.raises(PoisonCertError, match="sums to"):
        random_selection(good, WITH, 100, 10, 0.01, n_models=5)
    for scheme in (WITHOUT, BINOMIAL):
        with pytest.raises(PoisonCertError, match="subsample_size"):
            random_selection(good, scheme, 100, 101, 0.01)
        with pytest.raises(PoisonCertError, match="subsample_size"):
            random_selection(good, scheme, 100, 60, 0.01, clean_size=50)
    assert random_selection(good, WITH, 100, 101, 0.01).radius.shape == (2,)  # allowed with replacement
    with pytest.raises(PoisonCertError, match="train_size"):
        random_selection(good, WITH, -3, 10, 0.01)
    with pytest.raises(PoisonCertError, match="subsample_size"):
        random_selection(good, WITH, 100, 0, 0.01)
    with pytest.raises(PoisonCertError, match="clean_size"):
        random_selection(good, WITH, 100, 10, 0.01, clean_size=-1)
    with pytest.raises(PoisonCertError, match="clean_size"):
        random_selection(good, WITH, 100, 10, 0.01, clean_size=100)
    with pytest.raises(PoisonCertError, match="unknown random selection scheme"):
        random_selection(good, "bootstrap", 100, 10, 0.01)
    with pytest.raises(PoisonCertError, match="unknown poisoning model"):
        random_selection(good, WITH, 100, 10, 0.01, "P7")
    with pytest.raises(PoisonCertError, match="unknown poisoning model"):
        random_selection(good, WITH, 100, 10, 0.01, "clean-label")
    with pytest.raises(PoisonCertError, match="alpha_split"):
        random_selection(good, WITH, 100, 10, 0.01, alpha_split="holm")
    with pytest.raises(PoisonCertError, match="rho"):
        selection_delta([-1], WITH, 100, 10)
    with pytest.raises(PoisonCertError, match="whole number"):
        random_selection(good, WITH, 100.5, 10, 0.01)
