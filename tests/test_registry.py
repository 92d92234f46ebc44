"""The registry: every (scheme, certificate) pair is sound end to end, and everything reads the one record.

* the two counter-examples of issue 10 (DPA on a DPA* ensemble; a certificate the scheme does not
  support) give their true radius or a one-line refusal, through the CLI;
* every deterministic pair of the registry is proved by poison-and-retrain with a real,
  deterministic learner, and each proof is shown to fail when the certificate is inflated by one;
* the config schema's enums and defaults agree with the registry and the dataclasses.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from poisoncert import attack, certify, registry
from poisoncert.cli import main
from poisoncert.config import load_schema
from poisoncert.data import Dataset
from poisoncert.errors import PoisonCertError
from poisoncert.partition import make_partitions
from poisoncert.scores import write_scores

# ---------------------------------------------------------------------------------------------- counter-examples


def _certify_cli(tmp_path, scores, labels, meta, *flags):
    path = tmp_path / "scores.npz"
    write_scores(path, scores, labels, meta)
    out = tmp_path / "c.json"
    rc = main(["certify", str(path), *flags, "--out-csv", str(tmp_path / "c.csv"), "--out-json", str(out), "--radii", "0,1"])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


@pytest.mark.parametrize("k,d,true_radius", [(2, 2, 1), (50, 4, 25)])
def test_dpa_on_a_dpa_star_ensemble_counts_partitions_not_seeds(tmp_path, k, d, true_radius):
    scores = np.zeros((1, k * d, 3), np.float32)
    scores[..., 0] = 1  # every seed model votes class 0
    rc, summary = _certify_cli(tmp_path, scores, np.array([0]), {"scheme": "dpa_star", "k": k, "d": d}, "--certificate", "dpa")
    assert rc == 0
    csv = np.genfromtxt(tmp_path / "c.csv", delimiter=",", names=True)
    assert int(csv["radius"]) == true_radius  # one poison reaches a partition: all d seeds of it
    assert summary["threat_model"]["scheme"] == "dpa_star" and not summary["threat_model"]["assumed"]


def test_dpa_star_baseline_predicts_with_the_averaged_logits(tmp_path):
    # 2 partitions x 2 seeds; the seeds of partition 0 disagree, averaging decides for class 1
    s = np.array([[[0.6, 0.4], [0.0, 1.0], [0.9, 0.1], [0.0, 1.0]]], np.float32)
    cert = registry.compute("dpa_star", "dpa", s, {"k": 2, "d": 2})
    assert cert.prediction.tolist() == [1]  # averaged: p0 = (0.3, 0.7) -> 1, p1 = (0.45, 0.55) -> 1
    assert certify.dpa(s).prediction.tolist() == [0]  # the old plurality over 4 seed votes (2 vs 2, tie to 0)


@pytest.mark.parametrize("cert", ["dpa", "dpa_roe"])
def test_fa_scores_refuse_dpa_style_certificates(tmp_path, capsys, cert):
    scores = np.zeros((1, 4, 3), np.float32)
    scores[..., 0] = 1
    rc, _ = _certify_cli(tmp_path, scores, np.array([0]), {"scheme": "fa", "k": 2, "d": 2, "offsets": [0, 1]}, "--certificate", cert)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not sound for a 'fa' ensemble" in err[0] and "allowed: fa, fa_roe" in err[0]
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "c.json").exists()
    rc, summary = _certify_cli(tmp_path, scores, np.array([0]), {"scheme": "fa", "k": 2, "d": 2, "offsets": [0, 1]}, "--certificate", "fa")
    assert rc == 0 and summary["median_certified_radius"] == 1  # the true radius: one bucket reaches 2 of 4 models


def test_bagging_refuses_an_ensemble_with_a_known_clean_part(tmp_path, capsys):
    counts_votes = np.zeros((1, 100, 2), np.float32)
    counts_votes[:, :95, 0] = 1
    counts_votes[:, 95:, 1] = 1
    meta = {"scheme": "bagging", "k": 50, "train_size": 1000, "n_clean": 900}
    rc, _ = _certify_cli(tmp_path, counts_votes, np.array([0]), meta, "--certificate", "bagging")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "known-clean" in err[0] and "random_selection" in err[0]
    rc, summary = _certify_cli(tmp_path, counts_votes, np.array([0]), meta, "--certificate", "random_selection")
    assert rc == 0


def test_scores_without_a_scheme_get_the_documented_default_and_say_so(tmp_path, capsys):
    scores = np.zeros((2, 5, 2), np.float32)
    scores[:, :, 0] = 1
    rc, summary = _certify_cli(tmp_path, scores, np.array([0, 0]), {}, "--certificate", "dpa")
    assert rc == 0 and summary["threat_model"] == {**summary["threat_model"], "scheme": "dpa", "assumed": True}
    assert "assumed dpa" in capsys.readouterr().out
    # --scheme names the real footprint: 5 DPA* seed models of k=5 partitions, d=1, or refuse
    rc, summary = _certify_cli(tmp_path, scores, np.array([0, 0]), {}, "--certificate", "fa", "--scheme", "fa", "--k", "5", "--d", "1", "--offsets", "0")
    assert rc == 0 and summary["threat_model"] == {**summary["threat_model"], "scheme": "fa", "assumed": False}
    rc, _ = _certify_cli(tmp_path, scores, np.array([0, 0]), {}, "--certificate", "fa")
    assert rc == 2 and "not sound for a 'dpa' ensemble" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- every pair, end to end


def _nearest_neighbour(ds: Dataset):
    """A deterministic learner, a pure function of its training set as a set: one-hot vote of the nearest image's label."""
    test = ds.test_images.reshape(len(ds.test_images), -1).astype(np.int64)

    def retrain_fn(train_sets, seeds):
        out = np.zeros((len(train_sets), len(test), ds.n_classes), np.float32)
        for b, (x, y) in enumerate(train_sets):
            if len(y):
                flat = x.reshape(len(x), -1).astype(np.int64)
                dist = ((test[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
                out[b, np.arange(len(test)), y[np.argmin(dist, axis=1)]] = 1.0  # ties: canonical order
        return out

    return retrain_fn


@pytest.fixture(scope="module")
def small(digits):
    return Dataset("digits-small", digits.train_images[:300], digits.train_labels[:300], digits.test_images[:60], digits.test_labels[:60], 10)


@pytest.fixture(scope="module")
def small17(digits):
    keep = np.flatnonzero(np.isin(digits.train_labels, [1, 7]))[:120]
    tkeep = np.flatnonzero(np.isin(digits.test_labels, [1, 7]))[:40]
    lut = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
    return Dataset("digits17-small", digits.train_images[keep], lut[digits.train_labels[keep]], digits.test_images[tkeep], lut[digits.test_labels[tkeep]], 2)


#: (scheme, k, d) of the ensembles the proofs run on.
SIZES = {"dpa": (15, 1), "ssdpa": (15, 1), "fa": (6, 3), "dpa_star": (10, 2), "binary_kmeans": (None, 1)}

#: Every deterministic (scheme, certificate, learner) the registry allows: a record without a proof fails here.
CASES = [
    (s, c, lr)
    for s, c in registry.deterministic_pairs()
    for lr in registry.LEARNERS
    if s in registry.LEARNERS[lr].schemes
]


def test_every_deterministic_pair_has_a_case():
    assert {(s, c) for s, c, _ in CASES} == set(registry.deterministic_pairs())
    assert set(SIZES) == {s for s, _ in registry.deterministic_pairs()}, "a new deterministic scheme needs its proof sizes here"
    assert ("dpa_star", "dpa") in registry.deterministic_pairs() and ("ssdpa", "dpa") in registry.deterministic_pairs()


#: A tiny RotNet extractor for the frozen-feature learner's proofs (8x8 digits, one epoch).
TINY_EXTRACTOR = {"width": 4, "n_blocks": 2, "feature_block": 1, "epochs": 1, "batch_size": 64}
_EXTRACTORS: dict[str, dict] = {}


def _frozen(ds):
    """The real frozen-feature learner (poisoncert.learners.frozen), with its extractor trained once on ds's unlabeled images."""
    from poisoncert.learners.frozen import frozen_learner
    from poisoncert.learners.extractors import ExtractorConfig, train_extractor

    if ds.name not in _EXTRACTORS:
        _EXTRACTORS[ds.name] = train_extractor(ds.train_images, ExtractorConfig(**TINY_EXTRACTOR))
    return frozen_learner(_EXTRACTORS[ds.name], ds.train_images, ds.test_images, ds.n_classes)


def _ensemble(ds, scheme, learner):
    from poisoncert.stages.kmeans_scores import kmeans_learner

    k, d = SIZES[scheme]
    k = len(ds.train_labels) if k is None else k
    parts = make_partitions(ds.train_images, ds.train_labels, scheme, k, d)
    if learner == "binary_kmeans":
        retrain_fn = kmeans_learner(ds.train_images, ds.test_images)[0]
    elif learner == "frozen":
        retrain_fn = _frozen(ds)
    else:
        retrain_fn = _nearest_neighbour(ds)
    logits = retrain_fn([(ds.train_images[parts.members(m)], ds.train_labels[parts.members(m)]) for m in range(parts.n_models)], list(parts.seeds))
    meta = {**parts.meta(), "seeds": parts.seeds.tolist(), "learner": learner}
    if scheme == "binary_kmeans":  # the stage's own scores and fit (cluster assignments for the closed form)
        from poisoncert.stages.kmeans_scores import kmeans_votes

        scores, info = kmeans_votes(ds.train_images, ds.train_labels, ds.test_images)
        assert np.array_equal(scores, np.transpose(logits, (1, 0, 2)))
        return scores, {**meta, "binary_kmeans": info["binary_kmeans"]}, retrain_fn
    return np.ascontiguousarray(np.transpose(logits, (1, 0, 2))), meta, retrain_fn


@pytest.mark.parametrize("scheme,cert,learner", CASES, ids=[f"{s}-{c}-{lr}" for s, c, lr in CASES])
def test_poison_and_retrain_within_the_certificate_holds(small, small17, scheme, cert, learner):
    ds = small17 if scheme == "binary_kmeans" else small
    scores, meta, retrain_fn = _ensemble(ds, scheme, learner)
    outcomes = attack.poison_check(ds, scores, meta, retrain_fn, n_targets=8, certificate=cert)
    assert len(outcomes) >= 3, "too few certified samples to attack"
    assert all(o.held for o in outcomes), [o for o in outcomes if not o.held]
    unit = registry.threat_unit(scheme, learner)
    for o in outcomes:
        assert o.n_poisons == o.radius  # an attack of exactly the certified size ...
        assert o.models_changed >= 1  # ... that really changed base models ...
        # ... and moved votes: one flipped label always moves a nearest-neighbour vote; a class mean
        # moves less, so for the frozen nearest-centroid learner some attacks move none
        assert o.votes_to_target >= 1 or learner == "frozen"
        if scheme != "fa":
            assert o.models_changed <= o.n_poisons * (SIZES[scheme][1] if scheme == "dpa_star" else 1)
    assert any(o.votes_to_target >= 1 for o in outcomes)
    assert unit == (registry.LABEL_FLIPS if scheme in ("ssdpa", "binary_kmeans") or registry.LEARNERS[learner].sees_unlabeled_train else registry.INSERTIONS)


@pytest.mark.parametrize("scheme,cert,learner", CASES, ids=[f"{s}-{c}-{lr}" for s, c, lr in CASES])
def test_the_proof_fails_when_the_certificate_is_inflated_by_one(small, small17, scheme, cert, learner):
    ds = small17 if scheme == "binary_kmeans" else small
    scores, meta, retrain_fn = _ensemble(ds, scheme, learner)
    outcomes = attack.poison_check(ds, scores, meta, retrain_fn, n_targets=30, certificate=cert, radius_of=lambda c: np.where(c.radius >= 0, c.radius + 1, c.radius))
    assert any(not o.held for o in outcomes), f"an attack one past the {cert} radius never won on {scheme}: the proof could not catch an inflated certificate"


def test_the_check_notices_a_learner_that_is_not_the_one_that_made_the_scores(small):
    scores, meta, retrain_fn = _ensemble(small, "dpa", "supervised")

    def other(train_sets, seeds):
        return retrain_fn(train_sets, seeds)[:, :, ::-1].copy()

    with pytest.raises(PoisonCertError, match="bit for bit"):
        attack.poison_check(small, scores, meta, other, n_targets=2)


def test_predict_is_the_certificates_own_aggregation(rng):
    for scheme, cert in registry.deterministic_pairs():
        if scheme == "binary_kmeans":
            continue
        k, d = SIZES[scheme]
        meta = {"k": k, "d": d, "offsets": certify.default_fa_offsets(k, d)}
        scores = rng.integers(0, 4, size=(200, k * d, 4)).astype(np.float32)
        assert np.array_equal(registry.predict(scheme, cert, scores, meta), registry.compute(scheme, cert, scores, meta).prediction), (scheme, cert)


# ---------------------------------------------------------------------------------------------- one source of truth


def test_schema_enums_are_the_registry():
    schema = load_schema()
    exp = schema["$defs"]["experiment"]["properties"] if "$defs" in schema else schema["definitions"]["experiment"]["properties"]
    assert exp["scheme"]["enum"] == list(registry.SCHEMES)
    assert exp["dataset"]["enum"] == list(registry.DATASETS)
    assert exp["learner"]["enum"] == [n for n in registry.LEARNERS if n != "binary_kmeans"]
    assert exp["certificates"]["items"]["enum"] == list(registry.CERTIFICATES)
    from poisoncert.augment import AUGMENTATIONS
    from poisoncert.learners.frozen import CLASSIFIERS

    defs = schema["$defs"]
    assert defs["train"]["properties"]["augment"]["enum"] == list(AUGMENTATIONS)
    assert exp["frozen"]["properties"]["classifier"]["enum"] == list(CLASSIFIERS)
    # every learner's own config block is a schema key of the experiment
    assert all(lr.config_key in exp for lr in registry.LEARNERS.values() if lr.config_key)


def test_learners_that_read_an_extractor_are_certified_against_label_flips():
    for lr in registry.LEARNERS.values():
        if lr.needs_extractor:
            assert lr.sees_unlabeled_train
            assert all(registry.threat_unit(s, lr.name) == registry.LABEL_FLIPS for s in lr.schemes)
    assert registry.LEARNERS["frozen"].needs_extractor and registry.LEARNERS["rotnet"].needs_extractor
    with pytest.raises(PoisonCertError, match="sees them unlabeled"):
        registry.Learner("x", "", ("dpa",), extractor_archs=("light",))


def _schema_train(schema):
    defs = schema.get("$defs") or schema.get("definitions")
    exp = defs["experiment"]["properties"]
    return defs["train"]["properties"], exp["extractor"]["properties"], exp["frozen"]["properties"]


def _schema_configs():
    """(dataclass, default instance, schema properties) of every config object the schema documents."""
    from poisoncert.learners.frozen import FrozenConfig
    from poisoncert.learners.extractors import ExtractorConfig
    from poisoncert.learners.heads import HeadConfig
    from poisoncert.train import TrainConfig

    schema = load_schema()
    train, extractor, frozen = _schema_train(schema)
    head = (schema.get("$defs") or schema.get("definitions"))["experiment"]["properties"]["head"]["properties"]
    h = HeadConfig()
    return [(TrainConfig, TrainConfig(), train), (ExtractorConfig, ExtractorConfig(), extractor), (FrozenConfig, FrozenConfig(), frozen)] + [
        (type(getattr(h, name)), getattr(h, name), head[name]["properties"]) for name in ("nin_block", "linear", "logistic")]


def test_schema_defaults_are_the_dataclass_defaults():
    from poisoncert.learners.heads import HeadConfig

    head = (load_schema().get("$defs") or {})["experiment"]["properties"]["head"]["properties"]
    assert set(head) == {f.name for f in dataclasses.fields(HeadConfig)} and head["kind"]["default"] == HeadConfig().kind
    for cls, instance, props in _schema_configs():
        # cpu_threads is the top-level train_threads (the rule's threads), not a per-experiment key
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "cpu_threads"}
        assert set(props) == set(fields), f"{cls.__name__}: schema keys {sorted(set(props) ^ set(fields))} differ"
        for name, f in fields.items():
            default = getattr(instance, name)  # the instance's: nested configs (HeadConfig.linear) have their own defaults
            default = list(default) if isinstance(default, tuple) else default
            assert props[name]["default"] == default, f"{cls.__name__}.{name}: schema {props[name]['default']!r} vs dataclass {default!r}"
            assert props[name].get("description"), f"{cls.__name__}.{name} has no description in the schema"


def test_datasets_are_the_registry():
    from poisoncert import data

    assert set(data.DATASETS) == set(registry.DATASETS)
    for name in ("digits", "digits17"):
        ds = data.load_dataset(name)
        rec = registry.dataset(name)
        assert (len(ds.train_labels), len(ds.test_labels), ds.n_classes, ds.image_shape) == (rec.n_train, rec.n_test, rec.n_classes, rec.image_shape)


def test_schema_bounds_are_the_dataclass_bounds():
    """At each integer minimum of the schema the dataclass accepts the value and refuses one less."""
    for cls, _, props in _schema_configs():
        for name, p in props.items():
            if p.get("type") == "integer" and "minimum" in p and name not in ("seed", "feature_block", "n_blocks"):
                cls(**{name: p["minimum"]})
                with pytest.raises(PoisonCertError):
                    cls(**{name: p["minimum"] - 1})
            if "exclusiveMaximum" in p:
                with pytest.raises(PoisonCertError):
                    cls(**{name: p["exclusiveMaximum"]})


def test_flags_cannot_replace_the_recorded_threat_model(tmp_path, capsys):
    scores = np.zeros((1, 20, 3), np.float32)
    scores[..., 0] = 1
    meta = {"scheme": "dpa_star", "k": 10, "d": 2}
    rc, summary = _certify_cli(tmp_path, scores, np.array([0]), meta, "--certificate", "dpa")
    assert rc == 0 and summary["median_certified_radius"] == 5
    for flags in (("--scheme", "dpa"), ("--k", "20", "--d", "1")):
        rc, _ = _certify_cli(tmp_path, scores, np.array([0]), meta, "--certificate", "dpa", *flags)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "contradicts the scores file" in err[0], err
    rc, summary = _certify_cli(tmp_path, scores, np.array([0]), {"scheme": "dpa_star"}, "--certificate", "dpa", "--k", "10", "--d", "2")
    assert rc == 0 and summary["median_certified_radius"] == 5  # flags supply what the file lacks


@pytest.mark.parametrize("meta,match", [
    ({"scheme": "dpa", "k": 10}, "hold 20 base models, but a 'dpa' ensemble with k = 10 has 10"),
    ({"k": 10, "d": 2}, "has no d, but the scores metadata records d = 2"),
    ({"scheme": "ssdpa", "d": 2}, "has no d"),
    ({"scheme": "fa", "k": 10, "d": 2, "offsets": []}, "needs the FA spread offsets"),
    ({"scheme": "bagging", "k": 5, "n_models": 19, "train_size": 100}, "'bagging' ensemble with T = 19 has 19"),
])
def test_scores_must_match_the_recorded_layout(meta, match):
    scores = np.zeros((1, 20, 3), np.float32)
    scores[..., 0] = 1
    cert = "bagging" if meta.get("scheme") == "bagging" else ("fa" if meta.get("scheme") == "fa" else "dpa")
    with pytest.raises(PoisonCertError, match=match):
        registry.compute(registry.ensemble_threat(meta)["scheme"], cert, scores, meta)


def test_a_poison_check_with_nothing_to_attack_fails(small):
    scores, meta, retrain_fn = _ensemble(small, "dpa", "supervised")
    with pytest.raises(PoisonCertError, match="nothing to attack"):
        attack.poison_check(small, scores, meta, retrain_fn, n_targets=3, radius_of=lambda c: np.zeros_like(c.radius))
