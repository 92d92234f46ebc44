"""SS-DPA semi-supervised base learners (RotNet features + per-partition heads) and the App. B
binary 2-means method with its closed-form certificate (DPA paper, papers/000)."""

import inspect
import itertools
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from poisoncert.certify.binary import binary_kmeans, binary_kmeans_counts  # noqa: E402
from poisoncert.certify.dpa import dpa, dpa_from_counts  # noqa: E402
from poisoncert.certify._common import plurality, vote_counts  # noqa: E402
from poisoncert.data import canonical_order  # noqa: E402
from poisoncert.errors import PoisonCertError  # noqa: E402
from poisoncert.partition import make_partitions  # noqa: E402
from poisoncert.semisup import (  # noqa: E402
    ExtractorConfig,
    HeadConfig,
    KMeansConfig,
    assign_clusters,
    binary_kmeans_base_votes,
    binary_kmeans_fit,
    extract_features,
    kmeans2,
    train_extractor,
    train_heads,
    unique_sorted_images,
)

TINY = ExtractorConfig(width=8, epochs=2, batch_size=128, crop_pad=1, seed=3)
# half the default training, enough for the checks below
SMALL = ExtractorConfig(width=16, epochs=6, batch_size=128, seed=0)  # default: 12 epochs, batch 64


def _same_state(a, b):
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    for k in ("mean", "std", "feature_mean", "feature_std"):
        assert np.array_equal(a[k], b[k]), k
    assert a["images_sha256"] == b["images_sha256"]


def _partitions(x, y, k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = make_partitions(x, y, "ssdpa", k)
    return [p.members(i) for i in range(p.n_models)], [int(s) for s in p.seeds]


# ---------------------------------------------------------------------------------------------- extractor


@pytest.fixture(scope="module")
def tiny_state(digits):
    return train_extractor(digits.train_images, TINY)


def test_extractor_order_duplicates_and_rerun_invariant(digits, tiny_state):
    x = digits.train_images
    perm = np.random.default_rng(0).permutation(len(x))
    shuffled = train_extractor(x[perm], TINY)  # a second training run, on another order
    _same_state(tiny_state, shuffled)
    dup = train_extractor(np.concatenate([x[perm], x[:100]]), TINY)  # the same *set* of images
    _same_state(tiny_state, dup)
    f = extract_features(tiny_state, digits.test_images)
    assert f.dtype == np.float32 and f.shape == (len(digits.test_images), tiny_state["n_features"])
    assert np.array_equal(f, extract_features(shuffled, digits.test_images))
    # per-image rows do not depend on the order of the images passed in
    tperm = np.random.default_rng(1).permutation(len(digits.test_images))
    assert np.array_equal(extract_features(tiny_state, digits.test_images[tperm]), f[tperm])


def test_extractor_is_label_free(digits, tiny_state):
    assert "labels" not in " ".join(inspect.signature(train_extractor).parameters)
    x, y = digits.train_images, digits.train_labels
    y2 = y.copy()
    y2[::7] = (y2[::7] + 3) % 10  # flip many labels
    # the pipeline's canonical order (pixels, then label) changes with labels; the extractor must not
    a = train_extractor(x[canonical_order(x, y2)], TINY)
    _same_state(tiny_state, a)
    assert np.array_equal(extract_features(a, x), extract_features(tiny_state, x))


def test_extractor_differs_with_seed_and_checks_input(digits, tiny_state):
    other = train_extractor(digits.train_images, ExtractorConfig(width=8, epochs=2, batch_size=128, crop_pad=1, seed=4))
    assert not torch.equal(other["weights"]["fc.weight"], tiny_state["weights"]["fc.weight"])
    with pytest.raises(PoisonCertError):
        train_extractor(digits.train_images.astype(np.float32), TINY)
    with pytest.raises(PoisonCertError):
        extract_features(tiny_state, np.zeros((2, 1, 9, 9), np.uint8))
    u = unique_sorted_images(digits.train_images)
    assert len(u) <= len(digits.train_images)


# ---------------------------------------------------------------------------------------------- heads


@pytest.fixture(scope="module")
def features(digits):
    state = train_extractor(digits.train_images, SMALL)
    return extract_features(state, digits.train_images), extract_features(state, digits.test_images)


def test_flipping_one_label_changes_exactly_one_head(digits, features):
    ftr, fte = features
    x, y = digits.train_images, digits.train_labels
    k = 25
    members, seeds = _partitions(x, y, k)
    logits = train_heads(ftr, y, members, seeds, fte, 10)
    assert logits.shape == (k, len(fte), 10) and logits.dtype == np.float32
    for j in (0, 500, 1437):
        y2 = y.copy()
        y2[j] = (y2[j] + 1) % 10
        members2, seeds2 = _partitions(x, y2, k)
        owner = next(i for i, m in enumerate(members) if j in m)
        for i in range(k):  # SS-DPA partitions do not move under label flips (eq. 7)
            assert np.array_equal(np.sort(members[i]), np.sort(members2[i]))
        logits2 = train_heads(ftr, y2, members2, seeds2, fte, 10)
        changed = [i for i in range(k) if not np.array_equal(logits[i], logits2[i])]
        assert changed == [owner]


def test_head_depends_only_on_its_partition_and_seed(digits, features):
    ftr, fte = features
    y = digits.train_labels
    members, seeds = _partitions(digits.train_images, y, 10)
    cfg = HeadConfig(hidden=16, steps=60)
    full = train_heads(ftr, y, members, seeds, fte, 10, cfg)
    rng = np.random.default_rng(0)
    # alone, with its members in another order, next to other (garbage) partitions
    alone = train_heads(ftr, y, [rng.permutation(members[3])], [seeds[3]], fte, 10, cfg)
    assert np.array_equal(alone[0], full[3])
    mixed = train_heads(ftr, y, [members[7][:5], members[3]], [99, seeds[3]], fte, 10, cfg)
    assert np.array_equal(mixed[1], full[3])
    # the seed matters for a hidden-layer head
    reseeded = train_heads(ftr, y, [members[3]], [seeds[3] + 1], fte, 10, cfg)
    assert not np.array_equal(reseeded[0], full[3])


def test_empty_partition_gives_zero_logits_and_warns(features, digits):
    ftr, fte = features
    with pytest.warns(UserWarning, match="empty"):
        out = train_heads(ftr, digits.train_labels, [np.arange(20), np.zeros(0, np.int64)], [0, 1], fte[:5], 10)
    assert np.all(out[1] == 0) and np.any(out[0] != 0)


def test_head_accuracy_on_digits(digits, features):
    ftr, fte = features
    y, yt = digits.train_labels, digits.test_labels
    acc = {}
    for k in (10, 25, 50):
        members, seeds = _partitions(digits.train_images, y, k)
        logits = train_heads(ftr, y, members, seeds, fte, 10)
        base = float((logits.argmax(axis=2) == yt[None]).mean())
        cert = dpa(logits.transpose(1, 0, 2), unit="label flips")
        acc[k] = (base, float((cert.prediction == yt).mean()))
    print("SS-DPA digits (k: mean base acc, ensemble acc):", acc)
    assert acc[10][0] > 0.5 and acc[25][0] > 0.4 and acc[50][0] > 0.3
    assert acc[10][1] > 0.7


# ---------------------------------------------------------------------------------------------- App. B


def _digits17(digits, split):
    x, y = getattr(digits, f"{split}_images"), getattr(digits, f"{split}_labels")
    m = (y == 1) | (y == 7)
    return x[m], (y[m] == 7).astype(np.int64)


def test_kmeans_is_a_function_of_the_point_set(digits):
    x, _ = _digits17(digits, "train")
    mu = kmeans2(x)
    perm = np.random.default_rng(0).permutation(len(x))
    assert np.array_equal(mu, kmeans2(np.concatenate([x[perm], x[:30]])))
    assert mu.shape == (2, 64)
    # ties go to the first centroid
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    assert assign_clusters(np.array([[0.0, 0.0], [1.0, 0.0]]), pts).tolist() == [0, 1, 0]


def test_closed_form_matches_the_literal_base_classifiers(digits):
    xtr, ytr = _digits17(digits, "train")
    xte, _ = _digits17(digits, "test")
    v = binary_kmeans_base_votes(xtr, ytr, xte)  # (n_test, m): f_i(x) of App. B
    counts = vote_counts(v, 2)
    fit = binary_kmeans_fit(xtr, xte)
    assert np.array_equal(binary_kmeans_counts(fit["train_clusters"], ytr, fit["test_clusters"]), counts)
    c = binary_kmeans(fit["train_clusters"], ytr, fit["test_clusters"])
    ref = dpa_from_counts(counts, unit="label flips")
    assert np.array_equal(c.prediction, ref.prediction) and np.array_equal(c.radius, ref.radius)
    assert c.unit == "label flips"


def _tiny_instance(rng, m, n_test=4):
    """Two blobs of 2x2 images, labels = blob with some noise; a few test images anywhere."""
    blob = rng.integers(0, 2, m)
    centers = np.array([[30, 40, 200, 210], [220, 200, 20, 50]])
    x = np.clip(centers[blob] + rng.integers(-25, 26, (m, 4)), 0, 255).astype(np.uint8).reshape(m, 1, 2, 2)
    noise = rng.random(m) < rng.choice([0.0, 0.2, 0.45])
    y = np.where(noise, 1 - blob, blob).astype(np.int64)
    xt = rng.integers(0, 256, (n_test, 1, 2, 2)).astype(np.uint8)
    return x, y, xt


def test_binary_certificate_brute_force(rng):
    """Enumerate every set of <= radius+1 label flips and rerun the whole method (clustering too)."""
    cfg = KMeansConfig(n_init=2)
    seen_radii = set()
    for _ in range(10):
        m = int(rng.integers(3, 8))
        x, y, xt = _tiny_instance(rng, m)
        if len(unique_sorted_images(x)) < 2:
            continue
        fit = binary_kmeans_fit(x, xt, cfg)
        cert = binary_kmeans(fit["train_clusters"], y, fit["test_clusters"])
        r_max = int(cert.radius.max())
        changed_at = np.full(len(xt), np.iinfo(np.int64).max)
        for size in range(0, r_max + 2):
            for flips in itertools.combinations(range(m), size):
                y2 = y.copy()
                y2[list(flips)] ^= 1
                pred = plurality(vote_counts(binary_kmeans_base_votes(x, y2, xt, cfg), 2))
                changed = pred != cert.prediction
                changed_at[changed] = np.minimum(changed_at[changed], size)
        # sound: no attack of size <= radius changes the prediction; tight: one of size radius+1 does
        assert np.all(changed_at > cert.radius)
        assert np.all(changed_at == cert.radius + 1)
        seen_radii.update(cert.radius.tolist())
    assert len(seen_radii) >= 2


def test_binary_certificate_by_hand():
    # n[a, y]: cluster 0 has labels {0,0,0,1}, cluster 1 has {1,1,0}; m = 7, A = 3 + 2 = 5
    tc = np.array([0, 0, 0, 0, 1, 1, 1])
    y = np.array([0, 0, 0, 1, 1, 1, 0])
    c = binary_kmeans(tc, y, np.array([0, 1]))
    assert c.detail["counts"].tolist() == [[5, 2], [2, 5]]
    assert c.prediction.tolist() == [0, 1]
    assert c.radius.tolist() == [1, 1]  # floor(3/2), floor((3-1)/2)
    with pytest.raises(PoisonCertError):
        binary_kmeans(tc, y + 1, np.array([0]))


def test_binary_kmeans_on_digits_1_vs_7(digits):
    xtr, ytr = _digits17(digits, "train")
    xte, yte = _digits17(digits, "test")
    fit = binary_kmeans_fit(xtr, xte)
    cert = binary_kmeans(fit["train_clusters"], ytr, fit["test_clusters"])
    acc = float((cert.prediction == yte).mean())
    print(f"App. B on digits 1/7: m={len(ytr)}, clean acc {acc:.3f}, radius {sorted(set(cert.radius.tolist()))}")
    assert acc > 0.8
    # App. B: every image has the same certificate (up to the 1[c' < c] tie-break term)
    assert cert.radius.max() - cert.radius.min() <= 1
    assert cert.radius.min() > len(ytr) // 4
