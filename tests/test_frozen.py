"""The frozen-feature learner (poisoncert.learners.frozen): a pure function of its partition's set, wired end to end.

Tiny sizes: a one-epoch RotNet extractor on digits, synthetic features elsewhere; well under a
minute on 2 CPU cores. The poison-and-retrain proofs of its (scheme, certificate) pairs are in
tests/test_registry.py (CASES iterate over the registry's learners).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from poisoncert import registry
from poisoncert.cli import main
from poisoncert.config import validate_config
from poisoncert.errors import PoisonCertError
from poisoncert.learners.frozen import FrozenConfig, fit_predict

K = 4


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(7)
    y = rng.integers(0, K, size=200)
    f = rng.normal(size=(200, 6)) + 2.0 * np.eye(K, 6)[y]
    t = rng.normal(size=(50, 6)) + 2.0 * np.eye(K, 6)[rng.integers(0, K, size=50)]
    return f.astype(np.float32), y, t.astype(np.float32)


CONFIGS = [FrozenConfig(), FrozenConfig("knn", 1), FrozenConfig("knn", 7)]
IDS = ["centroid", "1-nn", "7-nn"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_a_classifier_is_a_function_of_its_own_set(feats, cfg):
    """Shuffling a partition's members, duplicating a neighbour's or changing its size and labels
    leaves every other classifier's logits bit-identical; the seed does not matter."""
    f, y, t = feats
    members = [np.arange(0, 40), np.arange(40, 45), np.arange(45, 120), np.arange(120, 200)]
    a = fit_predict(f, y, members, [0, 1, 2, 3], t, K, cfg)
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(m) for m in members]
    assert np.array_equal(a, fit_predict(f, y, shuffled, [9, 9, 9, 9], t, K, cfg))
    y2 = y.copy()
    y2[45:120] = (y2[45:120] + 1) % K  # poison partition 2's labels, and give it more members
    members2 = [members[0], members[1], np.concatenate([members[2], members[3][:30]]), members[3]]
    b = fit_predict(f, y2, members2, [0, 1, 2, 3], t, K, cfg)
    for i in (0, 1, 3):
        assert np.array_equal(a[i], b[i])
    assert not np.array_equal(a[2], b[2])
    # a classifier alone, in a shard of one, on a test set of another size: the same bits
    assert np.array_equal(fit_predict(f, y, members[3:], [3], t, K, cfg)[0], a[3])
    assert np.array_equal(fit_predict(f, y, members[3:], [3], t[:17], K, cfg)[0], a[3, :17])


def test_rules_match_brute_force(feats):
    f, y, t = feats
    idx = np.arange(30, 90)
    fb, yb, tb = f[idx].astype(np.float64), y[idx], t.astype(np.float64)
    z = fit_predict(f, y, [idx], [0], t, K)[0]
    mu = np.stack([fb[yb == c].mean(0) for c in range(K)])
    d = ((tb[:, None, :] - mu[None]) ** 2).sum(-1)
    np.testing.assert_allclose(z, -d / f.shape[1], rtol=1e-5, atol=1e-5)
    assert np.array_equal(z.argmax(1), d.argmin(1))
    z = fit_predict(f, y, [idx], [0], t, K, FrozenConfig("knn", 5))[0]
    dn = ((tb[:, None, :] - fb[None]) ** 2).sum(-1)
    votes = np.stack([np.bincount(yb[np.argsort(row, kind="stable")[:5]], minlength=K) for row in dn]) / 5
    np.testing.assert_allclose(z, votes, atol=1e-6)
    assert np.isfinite(z).all() and z.dtype == np.float32


def test_absent_classes_empty_partitions_and_bad_input(feats):
    f, y, t = feats
    only01 = np.flatnonzero(y < 2)[:10]
    z = fit_predict(f, y, [only01], [0], t, K)[0]
    assert set(z.argmax(1).tolist()) <= {0, 1} and np.isfinite(z).all()
    assert np.array_equal(z[:, 2], z[:, 3]) and (z[:, 2] < z[:, :2].min(1)).all()
    with pytest.warns(UserWarning, match="empty partition"):
        e = fit_predict(f, y, [np.arange(0), only01], [0, 1], t, K)
    assert not e[0].any()
    with pytest.raises(PoisonCertError, match="unknown classifier"):
        FrozenConfig("svm")
    with pytest.raises(PoisonCertError, match="knn_k"):
        FrozenConfig("knn", 0)
    with pytest.raises(PoisonCertError, match="partitions but"):
        fit_predict(f, y, [only01], [0, 1], t, K)


def test_frozen_learner_on_digits_beats_chance_and_refuses_insertions(digits):
    from poisoncert.learners.frozen import frozen_learner
    from poisoncert.learners.extractors import ExtractorConfig, train_extractor

    state = train_extractor(digits.train_images[:600], ExtractorConfig(arch="light", width=8, epochs=2, batch_size=128))  # label-free: any images
    fn = frozen_learner(state, digits.train_images, digits.test_images, 10)
    sets = [(digits.train_images[i::5], digits.train_labels[i::5]) for i in range(5)]
    logits = fn(sets, [0] * 5)
    acc = (logits.argmax(-1) == digits.test_labels).mean(1)
    assert (acc > 0.5).all(), acc  # chance is 10%
    with pytest.raises(PoisonCertError, match="label flips"):
        fn([(np.zeros((1,) + digits.train_images.shape[1:], np.uint8) + 3, np.array([1]))], [0])


def test_train_stage_writes_frozen_logits_with_the_label_flip_threat(tmp_path, digits):
    """poisoncert extractor + poisoncert train --learner frozen: the workflow's two jobs, by hand."""
    from poisoncert.data import Dataset, save_dataset
    from poisoncert.partition import make_partitions, save_partitions

    ds = Dataset("digits-small", digits.train_images[:300], digits.train_labels[:300], digits.test_images[:40], digits.test_labels[:40], 10)
    meta = save_dataset(ds, tmp_path / "ds.npz")
    parts = make_partitions(ds.train_images, ds.train_labels, "ssdpa", 6, 1)
    save_partitions(parts, tmp_path / "p.npz", meta["content_hash"])
    cfg = json.dumps({"arch": "light", "width": 4, "n_blocks": 2, "feature_block": 1, "epochs": 1})
    assert main(["extractor", "--dataset-file", str(tmp_path / "ds.npz"), "--out", str(tmp_path / "e.pt"), "--config", cfg, "--device", "cpu"]) == 0
    common = ["train", "--dataset-file", str(tmp_path / "ds.npz"), "--partitions", str(tmp_path / "p.npz"), "--shard-size", "4",
              "--device", "cpu", "--no-progress", "--extractor", str(tmp_path / "e.pt")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for shard in (0, 1):
            assert main([*common, "--out", str(tmp_path / f"s{shard}.npz"), "--shard", str(shard), "--learner", "frozen",
                         "--learner-config", json.dumps({"classifier": "knn", "knn_k": 3})]) == 0
        assert main([*common, "--out", str(tmp_path / "rot.npz"), "--shard", "0"]) == 0  # default: SS-DPA heads
    z = np.load(tmp_path / "s1.npz")
    m = json.loads(str(z["meta"]))
    assert m["learner"] == "frozen" and m["frozen"] == {"classifier": "knn", "knn_k": 3} and z["logits"].shape == (2, 40, 10)
    assert json.loads(str(np.load(tmp_path / "rot.npz")["meta"]))["learner"] == "rotnet"
    assert registry.ensemble_threat({"scheme": "ssdpa", "learner": m["learner"]})["unit"] == registry.LABEL_FLIPS
    # the shard's logits are the learner's, computed directly
    from poisoncert.learners.frozen import frozen_learner
    from poisoncert.stages.extractor import read_extractor

    fn = frozen_learner(read_extractor(str(tmp_path / "e.pt")), ds.train_images, ds.test_images, 10, FrozenConfig("knn", 3))
    direct = fn([(ds.train_images[parts.members(i)], ds.train_labels[parts.members(i)]) for i in (4, 5)], [4, 5])
    assert np.array_equal(direct, z["logits"])
    rc = main(["train", "--dataset-file", str(tmp_path / "ds.npz"), "--partitions", str(tmp_path / "p.npz"), "--shard-size", "4",
               "--device", "cpu", "--no-progress", "--out", str(tmp_path / "x.npz"), "--shard", "0", "--learner", "frozen"])
    assert rc == 2  # --learner frozen without --extractor
    # aggregate: the experiment's learner must be the one the shards ran, every shard the same learner
    from poisoncert.scores import read_scores
    from poisoncert.stages.aggregate import aggregate

    args = (str(tmp_path / "ds.npz"), str(tmp_path / "p.npz"))
    aggregate(*args, [str(tmp_path / f"s{i}.npz") for i in (0, 1)], str(tmp_path / "scores.npz"), {"learner": "frozen"})
    assert read_scores(tmp_path / "scores.npz")[2]["learner"] == "frozen"
    with pytest.raises(PoisonCertError, match="trained by learner 'frozen', but the experiment asks for 'rotnet'"):
        aggregate(*args, [str(tmp_path / f"s{i}.npz") for i in (0, 1)], str(tmp_path / "bad.npz"), {"learner": "rotnet"})
    with pytest.raises(PoisonCertError, match="another runtime or training configuration"):
        aggregate(*args, [str(tmp_path / "rot.npz"), str(tmp_path / "s1.npz")], str(tmp_path / "bad.npz"), {})


def test_config_accepts_frozen_and_refuses_unsound_uses():
    base = {"dataset": "digits", "scheme": "dpa", "k": [10]}
    cfg = validate_config({"experiments": {"e": {**base, "learner": "frozen", "frozen": {"classifier": "knn"}}}})
    assert cfg["experiments"]["e"]["frozen"] == {"classifier": "knn", "knn_k": 5}
    assert validate_config({"experiments": {"e": base}})["experiments"]["e"]["train"]["augment"] == "none"
    with pytest.raises(PoisonCertError, match="frozen is for schemes ssdpa and dpa, not 'fa'"):
        validate_config({"experiments": {"e": {**base, "scheme": "fa", "learner": "frozen"}}})
    with pytest.raises(PoisonCertError, match="train.hflip: a mirrored digits image"):
        validate_config({"experiments": {"e": {**base, "train": {"hflip": True}}}})
    ok = validate_config({"experiments": {"e": {**base, "dataset": "fashion_mnist", "train": {"hflip": True, "augment": "trivial_augment"}}}})
    assert ok["experiments"]["e"]["train"]["augment"] == "trivial_augment"
    with pytest.raises(PoisonCertError, match="augment"):
        validate_config({"experiments": {"e": {**base, "train": {"augment": "autoaugment"}}}})
    # the workflow's poison check retrains frozen (registry poison_checked), not the SS-DPA heads
    assert validate_config({"experiments": {"e": {**base, "learner": "frozen", "poison_check": 2}}})["experiments"]["e"]["poison_check"] == 2
    with pytest.raises(PoisonCertError, match="poison_check: .* with the learners supervised, frozen"):
        validate_config({"experiments": {"e": {**base, "learner": "rotnet", "poison_check": 2}}})


def test_shards_from_before_the_augment_option_aggregate_with_new_ones():
    """A shard recorded before TrainConfig.augment existed trained as augment: none (the same bits)."""
    import dataclasses

    from poisoncert.stages.aggregate import LATER_TRAIN_DEFAULTS, _identity
    from poisoncert.train import TrainConfig, resolve_strategy

    # every old shard ran what the strategy "grouped" runs now; the train stage records the resolved strategy
    grouped = dataclasses.replace(TrainConfig(), strategy="grouped")
    assert all(getattr(grouped, k) == v for k, v in LATER_TRAIN_DEFAULTS.items())
    new = {"runtime": {"torch": "x"}, "train": json.loads(json.dumps(dataclasses.asdict(grouped))), "learner": "supervised"}
    old = {**new, "train": {k: v for k, v in new["train"].items() if k not in LATER_TRAIN_DEFAULTS}}
    assert _identity(old) == _identity(new)
    assert _identity(old) != _identity({**new, "train": {**new["train"], "augment": "trivial_augment"}})
    assert _identity(old) != _identity({**new, "train": {**new["train"], "strategy": "dense"}})
    # small_cnn on a CPU now resolves to "stacked" (other bits): an old shard never joins a new one
    assert resolve_strategy(TrainConfig(), "cpu") == "stacked"
    assert _identity(old) != _identity({**new, "train": {**new["train"], "strategy": resolve_strategy(TrainConfig(), "cpu")}})
