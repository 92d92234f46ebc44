import random

import numpy as np
import pytest

from poisoncert.data import canonical_order
from poisoncert.errors import PoisonCertError
from poisoncert.partition import default_fa_offsets, make_partitions, pixel_sum_hash, sorted_index


def _content(x, y, idx):
    """A model's training set as an ordered list of (pixels, label) bytes."""
    return [x[i].tobytes() + bytes([y[i]]) for i in idx]


def _all_contents(parts, x, y):
    return [_content(x, y, parts.members(m)) for m in range(parts.n_models)]


@pytest.mark.parametrize("scheme,k,d", [("dpa", 10, 1), ("ssdpa", 10, 1), ("fa", 5, 3), ("dpa_star", 6, 2)])
def test_order_of_training_file_never_matters(digits, rng, scheme, k, d):
    x, y = digits.train_images, digits.train_labels
    perm = rng.permutation(len(y))
    a = make_partitions(x, y, scheme, k, d)
    b = make_partitions(x[perm], y[perm], scheme, k, d)
    assert _all_contents(a, x, y) == _all_contents(b, x[perm], y[perm])


def test_each_partition_is_in_canonical_order(digits):
    x, y = digits.train_images, digits.train_labels
    parts = make_partitions(x, y, "fa", 4, 3)
    rank = np.empty(len(y), int)
    rank[canonical_order(x, y)] = np.arange(len(y))
    for m in range(parts.n_models):
        assert np.all(np.diff(rank[parts.members(m)]) > 0)


def test_dpa_bucket_is_pixel_sum_mod_k(digits):
    x, y = digits.train_images, digits.train_labels
    parts = make_partitions(x, y, "dpa", 7)
    h = x.reshape(len(y), -1).astype(np.int64).sum(1)
    assert np.array_equal(pixel_sum_hash(x), h)
    for m in range(7):
        assert np.all(h[parts.members(m)] % 7 == m)
    assert sorted(parts.indices.tolist()) == list(range(len(y)))  # a partition of the training set
    assert parts.seeds.tolist() == list(range(7))


def test_dpa_changed_or_added_sample_moves_only_its_own_partition(digits, rng):
    x, y = digits.train_images.copy(), digits.train_labels.copy()
    k = 9
    before = _all_contents(make_partitions(x, y, "dpa", k), x, y)
    # change one sample: only its old and new partitions may change
    i = 17
    old_bucket = int(pixel_sum_hash(x[i : i + 1])[0] % k)
    x2 = x.copy()
    x2[i, 0, 3, 3] = (int(x2[i, 0, 3, 3]) + 1) % 256
    new_bucket = int(pixel_sum_hash(x2[i : i + 1])[0] % k)
    after = _all_contents(make_partitions(x2, y, "dpa", k), x2, y)
    changed = {m for m in range(k) if before[m] != after[m]}
    assert changed == {old_bucket, new_bucket}
    # add one sample: only its partition changes
    x3 = np.concatenate([x, x[:1]])
    y3 = np.concatenate([y, [(y[0] + 1) % 10]])
    after = _all_contents(make_partitions(x3, y3, "dpa", k), x3, y3)
    changed = {m for m in range(k) if before[m] != after[m]}
    assert changed == {int(pixel_sum_hash(x[:1])[0] % k)}


def test_ssdpa_label_flip_changes_exactly_one_partition(digits, rng):
    x, y = digits.train_images, digits.train_labels
    k = 11
    before = make_partitions(x, y, "ssdpa", k)
    sizes = before.sizes()
    assert sizes.max() - sizes.min() <= 1 + 0  # sorted-index partitions are balanced
    for i in rng.choice(len(y), 5, replace=False):
        y2 = y.copy()
        y2[i] = (y2[i] + 3) % 10
        after = make_partitions(x, y2, "ssdpa", k)
        a, b = _all_contents(before, x, y), _all_contents(after, x, y2)
        assert sum(a[m] != b[m] for m in range(k)) == 1
        assert all(np.array_equal(np.sort(before.members(m)), np.sort(after.members(m))) for m in range(k))


def test_sorted_index_shares_index_between_duplicates():
    x = np.array([[5], [1], [5], [3]], dtype=np.uint8).reshape(4, 1, 1, 1)
    assert sorted_index(x).tolist() == [2, 0, 2, 1]


def test_fa_every_sample_reaches_d_models_and_every_model_gets_d_buckets(digits):
    x, y = digits.train_images, digits.train_labels
    k, d = 6, 4
    parts = make_partitions(x, y, "fa", k, d)
    kd = k * d
    assert parts.n_models == kd and len(parts.offsets) == d
    counts = np.bincount(parts.indices, minlength=len(y))
    assert np.all(counts == d)
    split = pixel_sum_hash(x) % kd
    for i in range(kd):
        buckets = set(split[parts.members(i)].tolist())
        assert buckets == {(i - r) % kd for r in parts.offsets}


def test_fa_d1_offset0_is_dpa_on_kd(digits):
    x, y = digits.train_images, digits.train_labels
    fa = make_partitions(x, y, "fa", 12, 1, offsets=[0])
    dpa = make_partitions(x, y, "dpa", 12)
    assert np.array_equal(fa.indices, dpa.indices) and np.array_equal(fa.bounds, dpa.bounds)


def test_default_fa_offsets_match_reference():
    random.seed(999999999 + 208)
    assert default_fa_offsets(50, 16) == random.sample(range(50 * 16), 16)
    assert len(set(default_fa_offsets(1200, 32))) == 32


def test_dpa_star_repeats_partitions_with_distinct_seeds(digits):
    x, y = digits.train_images, digits.train_labels
    star = make_partitions(x, y, "dpa_star", 5, 3)
    dpa = make_partitions(x, y, "dpa", 5)
    for p in range(5):
        for j in range(3):
            assert np.array_equal(star.members(p * 3 + j), dpa.members(p))
    assert len(set(star.seeds.tolist())) == 15


def test_same_seed_switch(digits):
    parts = make_partitions(digits.train_images, digits.train_labels, "dpa", 4, same_seed=True, seed_base=7)
    assert parts.seeds.tolist() == [7, 7, 7, 7]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"scheme": "dpa", "k": 0}, "k must be a positive integer"),
        ({"scheme": "fa", "k": 3, "d": 0}, "d must be a positive integer"),
        ({"scheme": "dpa", "k": 5000}, "larger than the training set"),
        ({"scheme": "fa", "k": 500, "d": 4}, r"k\*d=2000 is larger"),
        ({"scheme": "bogus", "k": 3}, "unknown scheme"),
        ({"scheme": "fa", "k": 3, "d": 2, "offsets": [1, 1]}, "distinct"),
        ({"scheme": "fa", "k": 3, "d": 2, "offsets": [1, 6]}, r"\[0, 6\)"),
    ],
)
def test_bad_parameters(digits, kwargs, match):
    with pytest.raises(PoisonCertError, match=match):
        make_partitions(digits.train_images, digits.train_labels, **kwargs)


def test_empty_partitions_warn():
    x = np.zeros((3, 1, 2, 2), np.uint8)
    with pytest.warns(UserWarning, match="empty training set"):
        parts = make_partitions(x, np.array([0, 1, 0]), "dpa", 3)
    assert parts.sizes().tolist() == [3, 0, 0]
