"""poisoncert.ensemble: the scikit-learn certified ensemble (issue 22).

* scikit-learn's estimator checks pass (DPA, FA, DPA* with ROE aggregation);
* partitions, canonical order and seeds are the workflow's (uint8: pixel sums, bit-identical
  engine logits); float rows are keyed by a hash of their bytes, never their label;
* certify = poisoncert.registry.compute on the same scores, under the scheme's threat model;
* poison-and-retrain against the estimator: an attack of the certified size, refitting only the
  models the footprint reaches, never changes the prediction; inflated by one it does;
* bad inputs: one PoisonCertError line.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from poisoncert import registry
from poisoncert.data import load_dataset
from poisoncert.ensemble import PartitionAggregationClassifier as PAC
from poisoncert.ensemble import poison_check
from poisoncert.errors import PoisonCertError
from poisoncert.partition import byte_hash, make_partitions
from poisoncert.scores import read_scores, write_scores


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X[::2], y[::2], X[1::2], y[1::2]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# no check is skipped: every check scikit-learn runs on a classifier passes
@parametrize_with_checks([
    PAC(DecisionTreeClassifier(), k=3),
    PAC(DecisionTreeClassifier(), k=2, scheme="fa", d=2),
    PAC(DecisionTreeClassifier(), k=2, scheme="dpa_star", d=2),  # ROE aggregation: no predict_proba
])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-partition warnings on the checks' tiny data sets
        check(estimator)


def test_predict_proba_only_for_plurality():
    assert hasattr(PAC(scheme="dpa"), "predict_proba")
    assert hasattr(PAC(scheme="dpa_star", d=2, certificate="dpa"), "predict_proba")
    assert not hasattr(PAC(scheme="dpa_star", d=2), "predict_proba")  # DPA*+ROE
    assert not hasattr(PAC(scheme="dpa", certificate="dpa_roe"), "predict_proba")


@pytest.mark.parametrize("scheme, d, certificate", [("dpa", 1, None), ("dpa", 1, "dpa_roe"), ("fa", 2, None), ("fa", 2, "fa_roe"),
                                                    ("dpa_star", 2, None), ("dpa_star", 2, "dpa"), ("ssdpa", 1, None)])
def test_certify_is_the_registrys_certificate(cancer, scheme, d, certificate):
    X, y, Xt, yt = cancer
    clf = PAC(DecisionTreeClassifier(max_depth=4), k=6, scheme=scheme, d=d, certificate=certificate).fit(X, y)
    cert = clf.certify(Xt, yt)
    name = certificate or registry.scheme(scheme).default_certificate
    ref = registry.compute(scheme, name, clf.scores(Xt), clf.meta_, "supervised")
    assert cert.certificate == name and cert.unit == ref.unit == registry.scheme(scheme).unit
    assert np.array_equal(cert.radius, ref.radius)
    assert np.array_equal(cert.prediction, clf.classes_[ref.prediction])
    assert np.array_equal(cert.prediction, clf.predict(Xt))
    acc = clf.certified_accuracy(Xt, yt, [0, 1, 2])
    assert acc[0] == pytest.approx(np.mean((cert.prediction == yt) & (cert.radius >= 0))) and acc[0] > 0.85 and np.all(np.diff(acc) <= 0)


def test_uint8_images_get_the_workflows_partitions_and_seeds(digits):
    clf = PAC(DecisionTreeClassifier(), k=7, scheme="fa", d=3, seed=5).fit(digits.train_images, digits.train_labels)
    ref = make_partitions(digits.train_images, digits.train_labels, "fa", 7, 3, seed_base=5)
    assert clf.hash_ == "pixel_sum"
    assert np.array_equal(clf.partitions_.indices, ref.indices) and np.array_equal(clf.partitions_.bounds, ref.bounds)
    assert np.array_equal(clf.partitions_.seeds, ref.seeds) and clf.meta_["offsets"] == ref.offsets


def test_float_rows_are_keyed_by_their_bytes_not_their_label(cancer):
    X, y, _, _ = cancer
    k = 9
    a = PAC(DecisionTreeClassifier(), k=k).fit(X, y)
    b = PAC(DecisionTreeClassifier(), k=k).fit(X, 1 - y)  # every label flipped: same partitions as sets of samples
    bucket = np.empty(len(y), np.int64)
    for m in range(k):
        bucket[a.partitions_.members(m)] = m
        assert sorted(a.partitions_.members(m)) == sorted(b.partitions_.members(m))
    assert np.array_equal(bucket, byte_hash(np.ascontiguousarray(X, "<f8")) % k)
    assert a.hash_ == "bytes" and PAC(DecisionTreeClassifier(), k=k).fit(X.astype(np.float32), y).partitions_.sizes().sum() == len(y)


def test_random_state_is_the_partitions_seed_and_n_jobs_changes_nothing(cancer):
    X, y, Xt, _ = cancer
    base = SGDClassifier(random_state=123, max_iter=20, tol=None)
    one = PAC(base, k=4, seed=10).fit(X, y)
    assert [m.random_state for m in one.estimators_] == [10, 11, 12, 13]
    two = PAC(base, k=4, seed=10, n_jobs=2).fit(X, y)
    assert np.array_equal(one.scores(Xt), two.scores(Xt))


class _GlobalRandom(ClassifierMixin, BaseEstimator):
    """A classifier whose randomness escapes any random_state: numpy's global generator."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.w_ = np.random.standard_normal((X.shape[1], len(self.classes_)))
        return self

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]

    def predict_proba(self, X):
        z = X @ self.w_
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def test_uncontrolled_randomness_is_refused_deterministic_is_accepted(cancer):
    X, y, _, _ = cancer
    X = (X - X.mean(0)) / X.std(0)  # moderate scores: two random weight draws give different probabilities
    with pytest.raises(PoisonCertError, match="not a function of its training set and seed") as exc:
        PAC(_GlobalRandom(), k=3).fit(X, y)
    assert "\n" not in str(exc.value)
    PAC(KNeighborsClassifier(1), k=3).fit(X[:60], y[:60])  # no random_state, deterministic: accepted


def test_empty_and_one_class_partitions_follow_the_engines_convention():
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.array([0, 0, 0, 1, 1, 1])
    with pytest.warns(UserWarning, match="empty training set"):
        clf = PAC(DecisionTreeClassifier(), k=6, hash="bytes").fit(X, y)
    sizes = clf.partitions_.sizes()
    s = clf.scores(X)
    for m in range(6):
        if sizes[m] == 0:
            assert clf.estimators_[m] is None and not s[:, m].any()  # zero logits: a vote for classes_[0]
        elif len(set(y[clf.partitions_.members(m)])) == 1:  # one class: a constant model voting for it
            assert (s[:, m].argmax(1) == y[clf.partitions_.members(m)[0]]).all()


def _new_label_attack(classes):
    """A review's counter-example: labels {1, 2}, empty partitions; one poison labelled 0 lands in partition 0."""
    rng = np.random.default_rng(0)
    y = np.array([1, 2] * 20)
    X = rng.normal(size=(40, 3)) + 4.0 * y[:, None]  # two separated clusters: confident votes
    with pytest.warns(UserWarning, match="empty training set"):
        clf = PAC(DecisionTreeClassifier(random_state=0), k=K_EMPTY, hash="bytes", classes=classes).fit(X, y)
    empty = np.flatnonzero(clf.partitions_.sizes() == 0)
    assert empty.size >= 2
    target = int(np.flatnonzero(clf.partitions_.sizes() > 0)[0])
    for step in range(1, 100000):  # a near-copy of X[0] keyed into a non-empty partition
        x = X[0].copy()
        x[0] += step * 1e-9
        if int(byte_hash(x[None].astype("<f8"))[0]) % K_EMPTY == target:
            break
    return clf, X, y, x


K_EMPTY = 30


def test_inferred_classes_with_empty_partitions_are_not_certified():
    """Unsound before: with classes from y, one poison of a new smaller label flipped every empty
    partition's vote (they vote classes_[0]); a certified radius-2 sample flipped."""
    clf, X, y, x = _new_label_attack(None)
    poisoned = PAC(DecisionTreeClassifier(random_state=0), k=K_EMPTY, hash="bytes")
    with pytest.warns(UserWarning):
        poisoned.fit(np.vstack([X, x]), np.append(y, 0))
    base, after = clf.scores(X).argmax(2), poisoned.scores(X).argmax(2)
    assert (clf.classes_[base] != poisoned.classes_[after]).any(axis=0).sum() > 1  # the attack reaches beyond one model
    with pytest.raises(PoisonCertError, match="declare the label set"):
        clf.certify(X)


def test_declared_classes_keep_one_poison_in_one_partition():
    clf, X, y, x = _new_label_attack([0, 1, 2])
    cert = clf.certify(X)
    poisoned = PAC(DecisionTreeClassifier(random_state=0), k=K_EMPTY, hash="bytes", classes=[0, 1, 2])
    with pytest.warns(UserWarning):
        poisoned.fit(np.vstack([X, x]), np.append(y, 0))
    changed = (clf.scores(X) != poisoned.scores(X)).any(axis=(0, 2))
    assert changed.sum() <= 1  # one inserted sample reaches one partition
    held = cert.radius >= 1
    assert held.sum() >= 10  # not vacuous
    assert np.array_equal(poisoned.predict(X)[held], cert.prediction[held])
    with pytest.raises(PoisonCertError, match="not one of the declared classes"):
        PAC(k=3, classes=[1, 2]).fit(X, np.append(y[:-1], 0))


def test_scores_are_the_public_format(cancer, tmp_path):
    X, y, Xt, yt = cancer
    clf = PAC(DecisionTreeClassifier(max_depth=4), k=5, scheme="fa", d=2).fit(X, y)
    write_scores(tmp_path / "s.npz", clf.scores(Xt), np.searchsorted(clf.classes_, yt), clf.meta_)
    s, labels, meta = read_scores(tmp_path / "s.npz")
    assert np.array_equal(registry.compute("fa", "fa", s, meta).radius, clf.certify(Xt).radius)


# ---------------------------------------------------------------------------------------------- poison and retrain


#: every partition scheme of the registry the estimator trains (d = 2 where the scheme has a d)
TRAINED = [(s.name, 2 if s.uses_d else 1) for s in registry.SCHEMES.values() if not s.selection and s.trains]


def test_the_estimator_covers_dpa_fa_dpa_star():
    assert {"dpa", "fa", "dpa_star"} <= {name for name, _ in TRAINED}


@pytest.mark.parametrize("scheme, d", TRAINED)
def test_poison_and_retrain_within_the_radius_holds(cancer, scheme, d):
    X, y, Xt, yt = cancer
    clf = PAC(DecisionTreeClassifier(), k=8, scheme=scheme, d=d).fit(X, y)
    for cert in registry.scheme(scheme).certificates:
        outcomes = poison_check(clf, X, y, Xt, yt, n_targets=4, certificate=cert)
        assert outcomes and all(o.held for o in outcomes), [(o.radius, o.new_prediction) for o in outcomes]
        reach = d  # one poison reaches at most d models (FA: its spread, DPA*: the seeds of its partition)
        assert all(o.n_poisons == o.radius and 1 <= o.models_changed <= o.n_poisons * reach for o in outcomes)


@pytest.mark.parametrize("scheme, d", TRAINED)
def test_poison_and_retrain_fails_when_the_radius_is_inflated_by_one(cancer, scheme, d):
    X, y, Xt, yt = cancer
    clf = PAC(DecisionTreeClassifier(), k=8, scheme=scheme, d=d).fit(X, y)
    outcomes = poison_check(clf, X, y, Xt, yt, n_targets=12, radius_of=lambda c: np.where(c.radius >= 0, c.radius + 1, c.radius))
    assert any(not o.held for o in outcomes)


def test_poison_check_with_a_seeded_learner_refits_it_bit_for_bit(cancer):
    X, y, Xt, yt = cancer
    clf = PAC(SGDClassifier(max_iter=20, tol=None), k=6).fit(X, y)
    assert all(o.held for o in poison_check(clf, X, y, Xt, yt, n_targets=3))


def test_engine_cnn_is_the_workflows_engine_and_passes_the_poison_check(digits):
    pytest.importorskip("torch")
    from poisoncert.ensemble import EngineCNN
    from poisoncert.train import TrainConfig, train_shard

    ds = digits
    clf = PAC(EngineCNN(epochs=1), k=6).fit(ds.train_images, ds.train_labels)
    parts = make_partitions(ds.train_images, ds.train_labels, "dpa", 6)
    ref = train_shard([(ds.train_images[parts.members(m)], ds.train_labels[parts.members(m)]) for m in range(6)], list(parts.seeds),
                      ds.test_images, 10, TrainConfig(epochs=1), device="cpu", progress=False)
    assert np.array_equal(clf.scores(ds.test_images), ref.transpose(1, 0, 2))  # bit for bit the workflow's logits
    outcomes = poison_check(clf, ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, n_targets=2)
    assert all(o.held for o in outcomes)


# ---------------------------------------------------------------------------------------------- bad inputs


def _fit(X, y, **kw):
    return PAC(DecisionTreeClassifier(), **kw).fit(X, y)


_X = np.random.default_rng(0).standard_normal((40, 3))
_Y = np.arange(40) % 2


@pytest.mark.parametrize("call, match", [
    (lambda: _fit(_X[:, 0], _Y, k=2), "2D array"),
    (lambda: _fit(_X, _Y, k=41), "larger than the training set"),
    (lambda: _fit(np.where(_X > 1, np.nan, _X), _Y, k=2), "NaN"),
    (lambda: _fit(_X, np.zeros(40), k=2), "one class"),
    (lambda: _fit(_X, _Y[:30], k=2), "inconsistent numbers of samples"),
    (lambda: _fit(_X, _X[:, 0], k=2), "Unknown label type"),
    (lambda: _fit(_X, _Y, k=0), "k must be an integer >= 1"),
    (lambda: _fit(_X, _Y, k=2, d=2), "has no d"),
    (lambda: _fit(_X, _Y, k=2, scheme="bagging"), "not a partition scheme"),
    (lambda: _fit(_X, _Y, k=2, scheme="nope"), "unknown scheme"),
    (lambda: _fit(_X, _Y, k=2, scheme="fa", d=2, certificate="dpa"), "not sound"),
    (lambda: _fit(_X, _Y, k=2, hash="pixel_sum"), "uint8"),
    (lambda: _fit(_X, _Y, k=2).predict(_X[:, :2]), "X has 2 features"),
    (lambda: _fit(_X, _Y, k=2).certify(_X, _Y[:5]), "one label per sample"),
    (lambda: _fit(_X, _Y, k=2).certify(_X).certified_accuracy([0]), "without y"),
    (lambda: PAC(k=2).predict(_X), "not fitted"),
    (lambda: PAC(object(), k=2).fit(_X, _Y), "scikit-learn classifier"),
    (lambda: _fit(np.array([["a"] * 3] * 40), _Y, k=2), "."),
])
def test_bad_inputs_give_one_line(call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PoisonCertError, match=match) as exc:
            call()
    assert "\n" not in str(exc.value)


def test_clone_keeps_parameters_and_drops_fitted_state(cancer):
    X, y, _, _ = cancer
    clf = PAC(DecisionTreeClassifier(), k=4, scheme="fa", d=2, offsets=[0, 3]).fit(X, y)
    c = clone(clf)
    assert c.get_params()["offsets"] == [0, 3] and not hasattr(c, "estimators_")
    assert clf.meta_["offsets"] == [0, 3]
