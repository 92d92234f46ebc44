"""Poison-and-retrain check: the attack is real, within-radius attacks never win, and the check can fail."""

import numpy as np
import pytest

from poisoncert import attack, certify
from poisoncert.attack import craft_poisons, poison_check
from poisoncert.data import Dataset
from poisoncert.partition import make_partitions, pixel_sum_hash


def test_crafted_poisons_land_in_distinct_buckets(digits):
    img = digits.test_images[0]
    for n_buckets in (7, 50):
        p = craft_poisons(img, 7, n_buckets)
        sums = pixel_sum_hash(p)
        assert len(set((sums % n_buckets).tolist())) == 7
        assert np.abs(p.astype(int) - img.astype(int)).sum() == sum(range(7))  # near-copies
    with pytest.raises(Exception, match="distinct buckets"):
        craft_poisons(img, 8, 7)


def test_poison_check_refuses_datasets_hashed_on_source_images(digits):
    """GTSRB keeps its photos' own pixel sums (train_pixel_sums): poisons crafted through the stored pixels would
    not land in the buckets they aim at, so the check says so instead of proving nothing."""
    from poisoncert.errors import PoisonCertError

    ds = Dataset("gtsrb48", digits.train_images, digits.train_labels, digits.test_images, digits.test_labels, 10,
                 train_pixel_sums=pixel_sum_hash(digits.train_images) * 3)
    with pytest.raises(PoisonCertError, match="hashes its source images"):
        poison_check(ds, np.zeros((len(ds.test_labels), 5, 10), np.float32), {"scheme": "dpa", "k": 5}, lambda *a: None)


def _nearest_neighbour(ds):
    """A deterministic learner of its training set: one-hot logits of the nearest training image's label."""

    def train_fn(train_sets, seeds):
        out = []
        test = ds.test_images.reshape(len(ds.test_images), -1).astype(np.int64)
        for x, y in train_sets:
            logits = np.zeros((len(test), ds.n_classes), np.float32)
            if len(y):
                flat = x.reshape(len(x), -1).astype(np.int64)
                dist = ((test[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
                # nearest; among equal distances the canonical-order first (order-free for a set)
                logits[np.arange(len(test)), y[np.argmin(dist, axis=1)]] = 1.0
            out.append(logits)
        return np.stack(out)

    return train_fn


@pytest.fixture(scope="module")
def small(digits):
    keep = np.arange(300)
    ds = Dataset("digits-small", digits.train_images[keep], digits.train_labels[keep], digits.test_images[:60], digits.test_labels[:60], 10)
    return ds


def _ensemble(ds, scheme, k, d=1):
    parts = make_partitions(ds.train_images, ds.train_labels, scheme, k, d)
    train_fn = _nearest_neighbour(ds)
    logits = train_fn([(ds.train_images[parts.members(m)], ds.train_labels[parts.members(m)]) for m in range(parts.n_models)], list(parts.seeds))
    meta = {**parts.meta(), "seeds": parts.seeds.tolist()}
    return np.transpose(logits, (1, 0, 2)), meta, train_fn


@pytest.mark.parametrize("scheme,k,d", [("dpa", 15, 1), ("fa", 6, 3)])
def test_attacks_within_the_certificate_never_win(small, scheme, k, d):
    scores, meta, train_fn = _ensemble(small, scheme, k, d)
    outcomes = poison_check(small, scores, meta, train_fn, n_targets=6)
    assert outcomes and all(o.held for o in outcomes)
    for o in outcomes:
        assert o.models_changed <= o.n_poisons * d  # each poison reaches one partition (d models for FA)
        if scheme == "dpa":
            assert o.models_changed == o.n_poisons
        assert o.votes_to_target >= 1  # the attack is real: poisoned models do vote for the target


def test_the_check_catches_an_inflated_certificate(small, monkeypatch):
    scores, meta, train_fn = _ensemble(small, "dpa", 15)
    real = certify.dpa

    def inflated(s, unit="insertions+deletions"):
        c = real(s, unit)
        return certify.Certificate(c.prediction, np.where(c.radius >= 1, c.radius + 3, c.radius), c.unit, c.detail)

    monkeypatch.setattr(attack.certify, "dpa", inflated)
    outcomes = poison_check(small, scores, meta, train_fn, n_targets=6)
    assert any(not o.held for o in outcomes)
