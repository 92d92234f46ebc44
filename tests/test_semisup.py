"""SS-DPA semi-supervised base learners (label-free RotNet / SimCLR extractors + per-partition heads)
and the App. B binary 2-means method with its closed-form certificate (DPA paper, papers/000).

Determinism contract of every extractor and head variant: a pure function of its training set (as a
set: order and duplicates do not matter; labels never reach an extractor) and its seed, shard-
invariant (a head does not see the other partitions) and bit-identical on a rerun. The paper-sized
variants run at tiny widths on a few hundred digits here."""

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
from poisoncert.learners.heads import HeadConfig, LogisticHeadConfig, SGDHeadConfig, train_base_heads, train_heads  # noqa: E402
from poisoncert.learners.extractors import ExtractorConfig, extract_features, extractor_config, nt_xent, train_extractor, unique_sorted_images  # noqa: E402
from poisoncert.learners.kmeans import KMeansConfig, assign_clusters, binary_kmeans_base_votes, binary_kmeans_fit, kmeans2  # noqa: E402

#: the light CPU RotNet (what the digits twins use; its pre-nin defaults were width 16, 3 blocks,
#: 12 epochs, batch 64, cosine, no crops)
LIGHT = dict(arch="light", n_blocks=3, lr_schedule="cosine", crop_pad=0)
TINY = ExtractorConfig(**{**LIGHT, "width": 8, "epochs": 2, "batch_size": 128, "crop_pad": 1, "seed": 3})
# half the light learner's training, enough for the checks below
SMALL = ExtractorConfig(**{**LIGHT, "width": 16, "epochs": 6, "batch_size": 128, "seed": 0})
#: the paper's RotNet (nin stages, conv2 maps, step schedule, crops, flips) at a tiny width
TINY_NIN = ExtractorConfig(arch="nin", width=8, n_blocks=3, epochs=2, batch_size=64, lr_milestones=(1,), crop_pad=2, hflip=True, seed=5)
#: SimCLR's ResNet-18 (fixed size) for one short epoch, with every augmentation on
TINY_SIMCLR = ExtractorConfig(arch="resnet18", epochs=1, batch_size=32, lr=0.05, nesterov=False, lr_schedule="cosine",
                              warmup_epochs=1, crop_pad=0, hflip=True, seed=6)


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
    other = train_extractor(digits.train_images, ExtractorConfig(**{**LIGHT, "width": 8, "epochs": 2, "batch_size": 128, "crop_pad": 1, "seed": 4}))
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
    cfg = LogisticHeadConfig(hidden=16, steps=60)
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


# ---------------------------------------------------------------------------------------------- the paper's learners

N_SUB = 240  # digits used by the paper-sized variants (at tiny widths)


def _sub(digits, n=N_SUB, n_test=60):
    return digits.train_images[:n], digits.train_labels[:n], digits.test_images[:n_test]


@pytest.fixture(scope="module")
def nin_state(digits):
    return train_extractor(_sub(digits)[0], TINY_NIN)


@pytest.fixture(scope="module")
def simclr_state(digits):
    return train_extractor(_sub(digits, 96)[0], TINY_SIMCLR)


def test_nin_extractor_and_head_are_the_reference_architecture():
    """Gidaris' 4-stage NetworkInNetwork: 5x5 192/160/96, max-pool, 5x5 192, avg-pool, 3x3 stages;
    conv2 maps are 192x7x7 on MNIST and 192x8x8 on CIFAR-10; the head is NiN ConvBlock3 (DPA 2.3.1)."""
    from torch import nn

    from poisoncert.learners.extractors import _build_extractor
    from poisoncert.learners.heads import _build_head

    cfg = ExtractorConfig()
    for c, size, maps in ((1, 28, 7), (3, 32, 8)):
        net = _build_extractor(cfg, c, size).eval()
        with torch.no_grad():
            assert net.features(torch.zeros(2, c, size, size)).shape == (2, 192, maps, maps)
            assert net(torch.zeros(2, c, size, size)).shape == (2, 4)
    convs = [m for m in net.stages[0] if isinstance(m, nn.Conv2d)]
    assert [(m.kernel_size[0], m.out_channels) for m in convs] == [(5, 192), (1, 160), (1, 96)]
    assert [type(s[-1]).__name__ for s in net.stages] == ["MaxPool2d", "AvgPool2d", "ReLU", "ReLU"]
    assert [m.kernel_size[0] for m in net.stages[1] if isinstance(m, nn.Conv2d)][0] == 5
    head = _build_head("nin_block", (192, 7, 7), 10, SGDHeadConfig())
    hconv = [m for m in head if isinstance(m, nn.Conv2d)]
    assert [(m.kernel_size[0], m.in_channels, m.out_channels) for m in hconv] == [(3, 192, 192), (1, 192, 192), (1, 192, 192)]
    assert head(torch.zeros(2, 192, 7, 7)).shape == (2, 10)
    assert _build_extractor(ExtractorConfig(arch="resnet18"), 3, 32).features(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("which", ["nin", "simclr"])
def test_paper_extractors_are_functions_of_the_image_set(digits, nin_state, simclr_state, which):
    """Order, duplicates and labels do not matter; a rerun is bit-identical; the seed matters."""
    state, cfg, n = (nin_state, TINY_NIN, N_SUB) if which == "nin" else (simclr_state, TINY_SIMCLR, 96)
    x = _sub(digits, n)[0]
    perm = np.random.default_rng(0).permutation(len(x))
    again = train_extractor(np.concatenate([x[perm], x[:10]]), cfg)  # the same set, another order, duplicates
    _same_state(state, again)
    assert extractor_config(state) == cfg and cfg.learner == ("rotnet" if which == "nin" else "simclr")
    assert state["feature_shape"] == ([8, 2, 2] if which == "nin" else [512]) and np.isfinite(state["history"]).all()
    raw = extract_features(state, digits.test_images[:40], standardize=False)
    assert raw.shape == (40, *state["feature_shape"])
    tperm = np.random.default_rng(1).permutation(40)
    assert np.array_equal(extract_features(again, digits.test_images[:40][tperm], standardize=False), raw[tperm])
    other = train_extractor(x, ExtractorConfig(**{**asdict_(cfg), "seed": cfg.seed + 1}))
    assert any(not torch.equal(other["weights"][k], state["weights"][k]) for k in state["weights"])


def asdict_(cfg):
    import dataclasses

    return dataclasses.asdict(cfg)


#: tiny SGD heads: 2 epochs, crops and flips on, a narrow NiN block
TINY_SGD = SGDHeadConfig(epochs=2, batch_size=16, lr_milestones=(1,), crop_padding=1, hflip=True, width=8)


@pytest.mark.parametrize("which", ["nin_block", "linear"])
def test_sgd_heads_flip_one_label_changes_exactly_one_head_and_are_shard_invariant(digits, nin_state, simclr_state, which):
    state = nin_state if which == "nin_block" else simclr_state
    head = HeadConfig(kind=which, nin_block=TINY_SGD, linear=TINY_SGD)
    assert head.resolved(extractor_config(state).arch) == which
    x, y, xt = _sub(digits, 120 if which == "linear" else N_SUB)
    k = 4 if which == "linear" else 6
    members, seeds = _partitions(x, y, k)
    logits = train_base_heads(state, x, y, members, seeds, xt, 10, head)
    assert logits.shape == (k, len(xt), 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
    j = 17
    y2 = y.copy()
    y2[j] = (y2[j] + 1) % 10
    members2, seeds2 = _partitions(x, y2, k)
    owner = next(i for i, m in enumerate(members) if j in m)
    changed = [i for i in range(k) if not np.array_equal(logits[i], train_base_heads(state, x, y2, [members2[i]], [seeds2[i]], xt, 10, head)[0])]
    assert changed == [owner]
    rng = np.random.default_rng(0)
    # alone, in another order, next to another partition, in another shard position: the same bits
    mixed = train_base_heads(state, x, y, [members[0][:5], rng.permutation(members[2])], [99, seeds[2]], xt, 10, head)
    assert np.array_equal(mixed[1], logits[2])
    reseeded = train_base_heads(state, x, y, [members[2]], [seeds[2] + 1], xt, 10, head)
    assert not np.array_equal(reseeded[0], logits[2])


def test_nin_block_heads_learn_and_empty_partitions_vote_zero(digits, nin_state):
    x, y, xt = _sub(digits)
    yt = digits.test_labels[: len(xt)]
    head = HeadConfig(nin_block=SGDHeadConfig(epochs=20, batch_size=32, lr=0.1, lr_milestones=(14,), crop_padding=0, width=16))
    with pytest.warns(UserWarning, match="empty"):
        out = train_base_heads(nin_state, x, y, [np.arange(len(x)), np.zeros(0, np.int64)], [0, 1], xt, 10, head)
    assert np.all(out[1] == 0)
    acc = float((out[0].argmax(1) == yt).mean())
    print(f"nin_block head on {len(x)} digits, tiny RotNet: test acc {acc:.2f}")
    assert acc > 0.25  # chance is 0.1; the extractor had 8 steps


def test_head_config_kinds_and_checks(nin_state, tiny_state):
    assert HeadConfig().resolved("nin") == "nin_block" and HeadConfig().resolved("light") == "logistic"
    assert HeadConfig().resolved("resnet18") == "linear"
    with pytest.raises(PoisonCertError, match="nin_block needs the feature maps"):
        HeadConfig(kind="nin_block").resolved("light")
    with pytest.raises(PoisonCertError):
        HeadConfig.from_dict({"nin_block": {"epochs": 0}})
    with pytest.raises(PoisonCertError):
        HeadConfig.from_dict({"kind": "svm"})
    with pytest.raises(PoisonCertError):
        ExtractorConfig(arch="vgg")


def test_logistic_head_on_the_light_extractor_is_train_heads(digits, tiny_state):
    """The light learner through train_base_heads (the train stage's path) is the old logistic path."""
    x, y, xt = digits.train_images, digits.train_labels, digits.test_images
    members, seeds = _partitions(x, y, 10)
    f = extract_features(tiny_state, np.concatenate([x, xt]))
    ref = train_heads(f[: len(x)], y, members, seeds, f[len(x):], 10)
    assert np.array_equal(train_base_heads(tiny_state, x, y, members, seeds, xt, 10, HeadConfig()), ref)


def test_nt_xent_prefers_matching_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 16, generator=g)
    matched = nt_xent(torch.cat([z, z + 0.01 * torch.randn(8, 16, generator=g)]), 0.5)
    shuffled = nt_xent(torch.cat([z, z[torch.randperm(8, generator=g)]]), 0.5)
    assert float(matched) < float(shuffled)


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
