"""Random-selection schemes (Jia et al.; Chen et al.): reproducible draws with the right distribution."""

import numpy as np
import pytest
from scipy import stats

from poisoncert.errors import PoisonCertError
from poisoncert.partition import make_selections


@pytest.mark.parametrize("scheme", ["bagging", "bagging_wor", "binomial"])
def test_draws_are_reproducible_and_order_free(digits, rng, scheme):
    x, y = digits.train_images, digits.train_labels
    a = make_selections(x, y, scheme, 40, 6, seed_base=3)
    b = make_selections(x, y, scheme, 40, 6, seed_base=3)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.bounds, b.bounds)
    perm = rng.permutation(len(y))
    c = make_selections(x[perm], y[perm], scheme, 40, 6, seed_base=3)
    for m in range(6):
        assert np.array_equal(x[a.members(m)], x[perm][c.members(m)])
    d = make_selections(x, y, scheme, 40, 6, seed_base=4)
    assert not np.array_equal(a.indices[: len(d.indices)], d.indices[: len(a.indices)])


def test_model_draw_does_not_depend_on_number_of_models(digits):
    x, y = digits.train_images, digits.train_labels
    few = make_selections(x, y, "bagging", 25, 3)
    many = make_selections(x, y, "bagging", 25, 9)
    for m in range(3):
        assert np.array_equal(few.members(m), many.members(m))


def test_bagging_with_replacement_distribution(digits):
    """Each draw is uniform over the n samples: per-model multiplicities are Binomial(n_s, 1/n)."""
    x, y = digits.train_images, digits.train_labels
    n, n_s, t = len(y), 50, 400
    sel = make_selections(x, y, "bagging", n_s, t)
    assert np.all(sel.sizes() == n_s)
    hits = np.bincount(sel.indices, minlength=n)  # total over T models: Binomial(T*n_s, 1/n) each
    expected = t * n_s / n
    chi2 = ((hits - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, n - 1) > 1e-4
    dup = sum(len(sel.members(m)) - len(np.unique(sel.members(m))) for m in range(t))
    assert dup > 0  # with replacement: some models see a sample twice


def test_bagging_without_replacement_and_binomial(digits):
    x, y = digits.train_images, digits.train_labels
    n, n_s, t = len(y), 60, 300
    wor = make_selections(x, y, "bagging_wor", n_s, t)
    assert all(len(np.unique(wor.members(m))) == n_s for m in range(t))
    binom = make_selections(x, y, "binomial", n_s, t)
    sizes = binom.sizes()
    # |D_sub| ~ Binomial(n, n_s/n): mean n_s, variance n_s (1 - n_s/n)
    assert abs(sizes.mean() - n_s) < 4 * np.sqrt(n_s * (1 - n_s / n) / t)
    assert all(len(np.unique(binom.members(m))) == sizes[m] for m in range(t))


def test_known_clean_part_is_in_every_model(digits):
    x, y = digits.train_images, digits.train_labels
    sel = make_selections(x, y, "bagging_wor", 20, 5, clean_classes=[3, 4])
    clean = set(np.flatnonzero(np.isin(y, [3, 4])).tolist())
    for m in range(5):
        mem = sel.members(m)
        assert clean <= set(mem.tolist())
        assert np.sum(~np.isin(y[mem], [3, 4])) == 20  # n_s drawn from D^p only
    assert sel.meta()["n_clean"] == len(clean) and sel.meta()["n_poisonable"] == len(y) - len(clean)
    counted = make_selections(x, y, "bagging", 20, 2, clean_count=100)
    assert counted.meta()["n_clean"] == 100 and np.all(counted.sizes() == 120)


def test_balance_evens_out_classes(digits):
    x, y = digits.train_images, digits.train_labels
    sel = make_selections(x, y, "bagging", 30, 50, clean_classes=[0], balance=True, balance_size=2000)
    share_of_zero = np.mean([np.mean(y[sel.members(m)] == 0) for m in range(50)])
    # unbalanced, class 0 (all of D^c, ~150 samples) would be ~83% of each set; balanced it is ~1/10
    assert 0.05 < share_of_zero < 0.2


def test_bad_selection_parameters(digits):
    x, y = digits.train_images, digits.train_labels
    with pytest.raises(PoisonCertError, match="must lie in"):
        make_selections(x, y, "bagging_wor", 5000, 2)
    with pytest.raises(PoisonCertError, match="T must be >= 1"):
        make_selections(x, y, "bagging", 5, 0)
    with pytest.raises(PoisonCertError, match="nothing is left"):
        make_selections(x, y, "bagging", 5, 2, clean_classes=list(range(10)))
