"""Chen et al. Algorithm 3 (2-phase classifiers, case 3): relabelling, combination, config, balance, a run."""

import json

import numpy as np
import pytest
import yaml

from poisoncert import certify
from poisoncert.config import validate_config
from poisoncert.errors import PoisonCertError
from poisoncert.partition import make_selections
from poisoncert.two_phase import combine, phase1_labels, phase2_labels, split_classes


def test_relabelling():
    y = np.array([0, 1, 2, 3, 4, 2, 9])
    poisoned, clean = split_classes(10, [4, 0, 1, 2, 3, 5, 6, 7, 8])
    assert poisoned.tolist() == [9] and clean.tolist() == list(range(9))
    y1, n1 = phase1_labels(y, 10, list(range(9)))
    assert n1 == 2 and y1.tolist() == [1, 1, 1, 1, 1, 1, 0]  # class 9 -> 0, every clean class -> c~ = 1
    y1, n1 = phase1_labels(np.array([0, 1, 2, 3, 4]), 5, [1, 3])
    assert n1 == 4 and y1.tolist() == [0, 3, 1, 3, 2]  # poisoned 0, 2, 4 -> 0, 1, 2; clean -> 3
    y2, n2 = phase2_labels(np.array([3, 1, 1]), 5, [3, 1])
    assert n2 == 2 and y2.tolist() == [1, 0, 0]
    with pytest.raises(PoisonCertError, match="poisoned class was given"):
        phase2_labels(np.array([0]), 5, [1, 3])
    with pytest.raises(PoisonCertError, match="needs known-clean classes"):
        phase1_labels(y, 10, [])
    with pytest.raises(PoisonCertError, match="cover every class"):
        phase1_labels(np.array([0, 1]), 2, [0, 1])
    with pytest.raises(PoisonCertError, match=r"must lie in \[0, 5\)"):
        split_classes(5, [7])


def test_combination_votes_the_two_phase_prediction(rng):
    n_classes, clean = 5, [1, 3]  # poisoned 0, 2, 4 (phi_1 classes 0..2), c~ = 3
    B, n = 4, 30
    p1 = rng.normal(size=(B, n, 4))
    p2 = rng.normal(size=(n, 2))
    out = combine(p1, p2, n_classes, clean)
    assert out.shape == (B, n, n_classes) and out.dtype == np.float32 and (out.sum(axis=2) == 1).all()
    v = certify.votes(out)
    for b in range(B):
        for i in range(n):
            c1 = int(np.argmax(p1[b, i]))
            expected = [0, 2, 4][c1] if c1 < 3 else [1, 3][int(np.argmax(p2[i]))]
            assert v[b, i] == expected
    # phi_2 is shared: where every phi_1 says c~, all base models vote phi_2's class
    p1[:, :, 3] = 10.0
    v = certify.votes(combine(p1, p2, n_classes, clean))
    assert (v == np.array([1, 3])[np.argmax(p2, axis=1)][None, :]).all()
    with pytest.raises(PoisonCertError, match="phase-1 logits must have shape"):
        combine(p1[:, :, :3], p2, n_classes, clean)
    with pytest.raises(PoisonCertError, match="phase-2 logits must have shape"):
        combine(p1, p2[:, :1], n_classes, clean)


def _exp(**kw):
    base = {"dataset": "digits", "scheme": "bagging", "k": [10], "clean_classes": [0, 1, 2], "two_phase": True,
            "certificates": ["random_selection"]}
    base.update(kw)
    return {"experiments": {"t": base}}


def test_two_phase_config():
    assert validate_config(_exp())["experiments"]["t"]["two_phase"] is True
    assert validate_config({"experiments": {"x": {"dataset": "digits", "scheme": "dpa", "k": [2]}}})["experiments"]["x"]["two_phase"] is False


@pytest.mark.parametrize(
    "cfg,match",
    [
        (_exp(clean_classes=[]), r"experiments\.t\.two_phase: .*needs a random-selection scheme .* and non-empty clean_classes"),
        (_exp(scheme="dpa", certificates=["dpa"]), r"experiments\.t\.two_phase: .*random-selection scheme"),
        (_exp(clean_count=5), r"experiments\.t\.two_phase: needs clean_count: 0"),
        (_exp(clean_classes=list(range(10))), r"experiments\.t\.clean_classes: with two_phase .*leave at least one"),
        (_exp(clean_classes=[12]), r"experiments\.t\.clean_classes: \[12\] are not classes of digits \(0\.\.9\)"),
        (_exp(two_phase="yes"), r"experiments\.t\.two_phase: 'yes' is not of type 'boolean'"),
    ],
)
def test_bad_two_phase_config_is_one_line(cfg, match):
    with pytest.raises(PoisonCertError, match=match) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)


def test_balance_uses_the_merged_labels(digits):
    """With phi_1's labels, BALANCE evens out 'clean (merged)' vs each poisoned class, not the 10 classes."""
    x, y = digits.train_images, digits.train_labels
    clean = list(range(8))
    y1, _ = phase1_labels(y, 10, clean)  # 8 -> 0, 9 -> 1, clean -> 2
    sel = make_selections(x, y, "bagging", 30, 40, clean_classes=clean, balance=True, balance_size=3000, balance_labels=y1)
    share = np.bincount(y1[sel.indices], minlength=3) / len(sel.indices)
    assert np.allclose(share, 1 / 3, atol=0.03), share  # per 10 original classes the clean part would get 8/10
    plain = make_selections(x, y, "bagging", 30, 40, clean_classes=clean, balance=True, balance_size=3000)
    assert np.bincount(y1[plain.indices], minlength=3)[2] / len(plain.indices) > 0.7
    # the selections themselves (before BALANCE) are the same draws
    nb = make_selections(x, y, "bagging", 30, 40, clean_classes=clean, balance_labels=y1)
    assert np.array_equal(nb.indices, make_selections(x, y, "bagging", 30, 40, clean_classes=clean).indices)


def test_end_to_end_two_phase(repo_root, tmp_path, snakemake):
    cfg = tmp_path / "tp.yaml"
    exp = {"dataset": "digits", "scheme": "bagging", "k": [20], "n_models": 4, "clean_classes": [0, 1, 2, 3, 4, 5, 6, 7, 8],
           "balance": True, "balance_size": 60, "certificates": ["random_selection"], "train": {"epochs": 2}}
    cfg.write_text(yaml.safe_dump({"shard_size": 2, "radii": [0, 1], "experiments": {"tp": {**exp, "two_phase": True}}}))
    proc = snakemake(tmp_path, "--configfile", cfg, "--cores", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = tmp_path / "results" / "tp"
    from poisoncert.data import read_dataset
    from poisoncert.partition import read_partitions
    from poisoncert.scores import read_scores

    ds = read_dataset(tmp_path / "results" / "data" / "digits.npz")
    parts, pmeta = read_partitions(res / "k20_d1" / "partitions.npz")
    assert pmeta["two_phase"] is True and pmeta["n_clean"] == int((ds.train_labels <= 8).sum())
    # BALANCE on phi_1's classes: class 9 is about half of every balanced set
    share9 = np.mean([np.mean(ds.train_labels[parts.members(m)] == 9) for m in range(parts.n_models)])
    assert 0.3 < share9 < 0.7
    p2 = np.load(res / "phase2.npz")
    assert p2["logits"].shape == (len(ds.test_labels), 9) and p2["clean_classes"].tolist() == list(range(9))
    scores, labels, meta = read_scores(res / "k20_d1" / "scores.npz")
    assert scores.shape == (len(ds.test_labels), 4, 10) and meta["experiment"]["two_phase"] is True
    # the scores are the 2-phase votes: phi_2's class where phi_1 says c~ (index 1), class 9 otherwise
    shard0 = np.load(res / "k20_d1" / "logits" / "shard0.npz")
    assert json.loads(str(shard0["meta"]))["learner"] == "supervised"  # the registry learner; the implementation is two_phase
    v1 = np.argmax(shard0["phase1_logits"], axis=2)  # (2, n_test) in {0: class 9, 1: c~}
    v2 = np.argmax(p2["logits"], axis=1)
    expected = np.where(v1 == 1, v2[None, :], 9)
    assert np.array_equal(certify.votes(scores)[:, :2].T, expected)
    cert = json.loads((res / "k20_d1" / "certificates" / "random_selection.json").read_text())
    assert cert["n_models"] == 4 and cert["clean_accuracy"] > 0.5  # phi_2 on nine well-populated clean classes
