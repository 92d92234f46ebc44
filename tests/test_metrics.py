"""poisoncert.certify.metrics (DPA Section 3's certified accuracy and median radius) and
poisoncert.certify.binary (DPA App. B's closed-form 2-means votes), against direct definitions."""

import numpy as np
import pytest

from poisoncert.certify import binary_kmeans, binary_kmeans_counts
from poisoncert.certify.metrics import certified_accuracy, mean_base_accuracy, median_certified_radius, summary_metrics
from poisoncert.errors import PoisonCertError


def _direct_certified_accuracy(pred, radius, labels, r):
    return np.mean([(p == y) and (rr >= r) for p, rr, y in zip(pred, radius, labels)])


def test_certified_accuracy_matches_its_definition(rng):
    pred = rng.integers(0, 3, 200)
    labels = rng.integers(0, 3, 200)
    radius = rng.integers(0, 20, 200)
    radii = np.arange(0, 25)
    got = certified_accuracy(pred, radius, labels, radii)
    want = [_direct_certified_accuracy(pred, radius, labels, r) for r in radii]
    np.testing.assert_allclose(got, want)


def test_median_is_the_largest_radius_with_at_least_half_certified(rng):
    for _ in range(50):
        n = int(rng.integers(1, 30))
        pred, labels, radius = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 10, n)
        acc = [_direct_certified_accuracy(pred, radius, labels, r) for r in range(12)]
        ok = [r for r in range(12) if acc[r] >= 0.5]
        assert median_certified_radius(pred, radius, labels) == (max(ok) if ok else None)


def test_median_is_none_below_half_clean_accuracy():
    assert median_certified_radius(np.array([0, 1, 1]), np.array([5, 5, 5]), np.array([1, 0, 1])) is None


def test_summary_curve_reaches_zero_past_the_largest_radius():
    m = summary_metrics(np.array([0, 0]), np.array([3, 1]), np.array([0, 0]), [0, 2])
    assert m["curve"]["radius"] == [0, 1, 2, 3, 4]
    assert m["curve"]["certified_accuracy"] == [1.0, 1.0, 0.5, 0.5, 0.0]


def test_mean_base_accuracy_refuses_unequal_model_counts():
    with pytest.raises(PoisonCertError, match="same, non-zero number of models"):
        mean_base_accuracy(np.array([[3, 1], [1, 1]]), np.array([0, 1]))


def _brute_force_votes(tc, y, xc):
    """Each App. B base classifier sees one labelled sample (cluster a, label y): it labels
    cluster a with y and the other cluster with 1 - y."""
    votes = np.zeros((len(xc), 2), dtype=np.int64)
    for a, yy in zip(tc, y):
        votes[np.arange(len(xc)), np.where(xc == a, yy, 1 - yy)] += 1
    return votes


def test_binary_kmeans_closed_form_equals_one_model_per_sample(rng):
    for _ in range(20):
        m, n = int(rng.integers(1, 40)), int(rng.integers(1, 15))
        tc, y, xc = rng.integers(0, 2, m), rng.integers(0, 2, m), rng.integers(0, 2, n)
        np.testing.assert_array_equal(binary_kmeans_counts(tc, y, xc), _brute_force_votes(tc, y, xc))


def test_binary_kmeans_radius_survives_that_many_label_flips(rng):
    """App. B's unit is label flips: flipping r <= radius training labels keeps every prediction."""
    tc, y, xc = rng.integers(0, 2, 25), rng.integers(0, 2, 25), np.array([0, 1])
    cert = binary_kmeans(tc, y, xc)
    for i in range(2):
        r = int(cert.radius[i])
        for _ in range(30):
            flipped = y.copy()
            idx = rng.choice(25, size=r, replace=False)
            flipped[idx] = 1 - flipped[idx]
            assert binary_kmeans(tc, flipped, xc).prediction[i] == cert.prediction[i]
