"""DPA (papers/000 Theorem 1): hand-computed cases, brute-force soundness and tightness, bad input."""

import numpy as np
import pytest

from certify_bruteforce import Ensemble, dpa_units
from poisoncert.certify import dpa, dpa_from_counts
from poisoncert.certify.dpa import certv1_dpa
from poisoncert.errors import PoisonCertError


def _scores_from_votes(v, n_classes):
    v = np.asarray(v)
    s = np.zeros((1, len(v), n_classes))
    s[0, np.arange(len(v)), v] = 1.0
    return s


@pytest.mark.parametrize(
    "counts, pred, radius",
    [
        # rho = floor((n_c - max_{c'!=c}(n_c' + 1[c' < c])) / 2)
        ([5, 3, 0], 0, 1),  # (5 - 3) / 2
        ([3, 5, 0], 1, 0),  # (5 - (3 + 1)) / 2 = 0.5 -> 0: class 0 < 1 wins ties
        ([4, 4, 0], 0, 0),  # tie goes to the smaller index; runner-up 1 > 0 -> (4-4)/2 = 0
        ([0, 4, 4], 1, 0),
        ([2, 6, 2], 1, 1),  # max(2+1, 2+0) = 3 -> floor(3/2)
        ([10, 0, 0], 0, 5),
        ([1, 9, 0], 1, 3),  # 9 - (1+1) = 7 -> 3
        ([3, 3, 3], 0, 0),
        ([0, 0, 7], 2, 3),  # 7 - (0+1) = 6 -> 3
    ],
)
def test_theorem1_hand_computed(counts, pred, radius):
    cert = dpa_from_counts(np.array([counts]))
    assert cert.prediction[0] == pred
    assert cert.radius[0] == radius
    v = np.repeat(np.arange(len(counts)), counts)
    cert2 = dpa(_scores_from_votes(v, len(counts)))
    assert cert2.prediction[0] == pred and cert2.radius[0] == radius


def test_logit_ties_vote_for_smaller_class():
    s = np.array([[[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.0, 2.0, 2.0]]])
    # votes 0, 1, 1 -> class 1 with 2 votes; runner-up 0 (< 1): (2 - 1 - 1)/2 = 0
    cert = dpa(s)
    assert cert.prediction[0] == 1 and cert.radius[0] == 0


def test_certv1_is_the_dpa_step():
    g = np.arange(-3, 40)
    # Lemma 3.5 of 003 vs Theorem 1 of 000 through gap = adjusted gap + 1
    assert np.array_equal(certv1_dpa(g)[g >= 1], np.floor_divide(g[g >= 1] - 1, 2))
    assert (certv1_dpa(g)[g <= 0] == -1).all()


def test_bruteforce_sound_and_tight():
    """Any cert partitions cannot change the prediction; some cert + 1 partitions can (DPA is tight)."""
    rng = np.random.default_rng(0)
    n_cases = 0
    for _ in range(600):
        k = int(rng.integers(1, 8))
        c = int(rng.integers(2, 5))
        logits = rng.integers(0, 3, (k, c)).astype(float)  # many logit and count ties
        cert = dpa(logits[None])
        r = int(cert.radius[0])
        ens = Ensemble(logits, dpa_units(k))
        assert ens.plurality() == cert.prediction[0]
        assert ens.can_change(r, "plurality") is False
        if r + 1 <= k:
            assert ens.can_change(r + 1, "plurality") is True
        n_cases += 1
    assert n_cases == 600


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.zeros((3, 4)), "shape"),
        (np.zeros((0, 4, 3)), "empty"),
        (np.array([[[np.nan, 0.0]]]), "NaN"),
        (np.array([[[np.inf, 0.0]]]), "NaN/inf"),
        (np.array([[["a", "b"]]]), "real numbers"),
    ],
)
def test_bad_input(bad, msg):
    with pytest.raises(PoisonCertError, match=msg):
        dpa(bad)
