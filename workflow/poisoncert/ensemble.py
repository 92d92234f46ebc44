"""A scikit-learn classifier certified against data poisoning: partition, train, aggregate, certify.

:class:`PartitionAggregationClassifier` wraps any scikit-learn classifier (or the project's
torch engine, :class:`EngineCNN`) in one of the registry's deterministic schemes — DPA (DPA
paper, eq. 1 and Theorem 1), SS-DPA (eq. 7, Theorem 2), FA (FA paper, Definition 1 and
Theorem 2) and DPA* (ROE paper, Section 4.1) — and certifies its predictions with the scheme's
certificates (:func:`poisoncert.registry.compute`, so the threat model is the scheme's record):

>>> from sklearn.datasets import load_breast_cancer
>>> from sklearn.linear_model import LogisticRegression
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> X, y = load_breast_cancer(return_X_y=True)
>>> clf = PartitionAggregationClassifier(make_pipeline(StandardScaler(), LogisticRegression()), k=10)
>>> cert = clf.fit(X[::2], y[::2]).certify(X[1::2], y[1::2])
>>> cert.unit, int(cert.radius.max()) <= 5, float(cert.certified_accuracy([0])[0]) > 0.9
('insertions+deletions', True, True)

The same machinery as the workflow (:mod:`poisoncert.partition`):

* **partition key** h(t): a hash of the sample's bytes (:func:`poisoncert.partition.byte_hash`
  of the features as little-endian float64), never its label; for ``uint8`` input (images) the
  papers' pixel sum (:func:`poisoncert.partition.pixel_sum_hash`), so the partitions are the
  workflow's (``hash="auto"``; ``"bytes"`` or ``"pixel_sum"`` choose one);
* **canonical order**: each base model gets its set sorted by content
  (:func:`poisoncert.data.canonical_order`), so a model is a function of its set as a *set*;
* **seeds**: base model m gets ``seed + m`` (``same_seed``: ``seed`` for all), set on every
  parameter named ``random_state`` of the base estimator (nested ones of a pipeline too).

**Which base estimators are accepted** (the theorems need each base model to be a function of
its training set and seed): one with ``random_state`` parameters gets the partition's seed in
all of them; one without is accepted as deterministic. In both cases, with
``check_determinism=True`` (default), the first non-trivial partition is fitted a second time
and the two models' outputs on that partition must agree bit for bit; an estimator whose
randomness escapes its ``random_state`` (a global RNG, a clock, threads racing) is refused with
one :class:`~poisoncert.errors.PoisonCertError` line. The probe costs one extra fit; it can
catch, not prove, nondeterminism.

scikit-learn base estimators see samples of more than one axis (images) as flat rows.

**Base model outputs** ("logits" for the certificates): ``predict_proba`` when the base
estimator has it, else ``decision_function``, else a one-hot of ``predict``; classes a base
model never saw get probability 0 (or a score below all others). A model's vote is the argmax,
the smaller class index winning ties. A partition with no samples outputs zero logits (a vote
for ``classes_[0]``, as the workflow's engine does, with the same warning); a partition with
one class is a constant model voting for it (a function of its set, as the theorems require).

**Aggregation**: ``predict`` is the aggregation rule of the certificate (``certificate``, the
scheme's default when None): plurality vote (DPA, FA, DPA* with ``certificate="dpa"``) or
Run-Off Election (``dpa_roe``, ``fa_roe``, ``dpa_star_roe``). ``predict_proba`` (vote shares)
exists only for plurality, where its argmax is the prediction.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets

from . import attack, certify, registry
from .errors import PoisonCertError
from .partition import Partitions, byte_hash, make_partitions, pixel_sum_hash

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

__all__ = ["PartitionAggregationClassifier", "CertifiedPredictions", "EngineCNN", "poison_check", "HASHES"]

#: Partition keys: ``auto`` = ``pixel_sum`` for uint8 input (the papers' h, the workflow's partitions), else ``bytes``.
HASHES = ("auto", "pixel_sum", "bytes")


class NotFittedPoisonCertError(PoisonCertError, NotFittedError):
    """Used before ``fit``: a one-line :class:`PoisonCertError` that is also scikit-learn's ``NotFittedError``."""


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


@dataclass
class CertifiedPredictions:
    """Per-sample prediction (class labels), certified radius and its unit (what one attack step is).

    ``radius[i]``: the largest number of poisoned training samples (in ``unit``) under which the
    prediction on sample i provably cannot change; ``labels`` when given to ``certify``.
    """

    prediction: np.ndarray
    radius: np.ndarray
    unit: str
    certificate: str
    scheme: str
    footprint: str
    classes: np.ndarray
    labels: np.ndarray | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def certified_radius(self) -> np.ndarray:
        """The radius where the prediction equals the label, -1 elsewhere (needs ``labels``)."""
        if self.labels is None:
            raise PoisonCertError("certify(X) was called without y; pass the labels, certify(X, y), to score the certificates")
        return np.where(self.prediction == self.labels, self.radius, -1)

    def certified_accuracy(self, radii: Sequence[int] | np.ndarray) -> np.ndarray:
        """Fraction of samples correctly classified with radius >= r, for each r in ``radii`` (r = 0: clean accuracy)."""
        cert = self.certified_radius()
        r = np.asarray(radii, dtype=np.int64)
        if cert.size == 0:
            raise PoisonCertError("cannot compute certified accuracy on zero samples")
        return (cert[None, :] >= r.reshape(-1, 1)).mean(axis=1).reshape(r.shape)


class _Constant:
    """The base model of a one-class partition: always that class (index ``c``)."""

    def __init__(self, c: int):
        self.c = int(c)


def _model_scores(model: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    """One base model's float32 (n, n_classes) outputs on X, columns = the ensemble's class indices."""
    n = len(X)
    out = np.zeros((n, n_classes), np.float64)
    if model is None:  # empty partition: zero logits, a vote for class 0 (the engine's convention)
        return out.astype(np.float32)
    if isinstance(model, _Constant):
        out[:, model.c] = 1.0
        return out.astype(np.float32)
    cols = np.asarray(model.classes_, dtype=np.int64)
    if hasattr(model, "predict_proba"):
        out[:, cols] = np.asarray(model.predict_proba(X), dtype=np.float64)
    elif hasattr(model, "decision_function"):
        s = np.asarray(model.decision_function(X), dtype=np.float64)
        if s.ndim == 1:  # binary: class cols[1] when s > 0; s == 0 -> cols[0], the smaller index
            s = np.stack([np.zeros_like(s), s], axis=1)
        fill = s.min(axis=1, keepdims=True) - 1.0 if s.size else 0.0
        out[:] = fill
        out[:, cols] = s
    else:
        out[np.arange(n), np.asarray(model.predict(X)).astype(np.int64)] = 1.0  # fitted on class indices
    return out.astype(np.float32)


def _flat(rows: np.ndarray) -> np.ndarray:
    """Samples as flat rows (n, features), also for n = 0."""
    return rows.reshape(len(rows), int(np.prod(rows.shape[1:], dtype=np.int64)))


def _seed_params(est: Any) -> list[str]:
    """The parameters of ``est`` (nested ones included) that seed its randomness."""
    return sorted(p for p in est.get_params(deep=True) if p == "random_state" or p.endswith("__random_state"))


def _fit_one(est: Any, X: np.ndarray, y: np.ndarray, seed: int, seed_params: list[str]) -> Any:
    """One base model: a clone of ``est`` seeded with ``seed``, fitted on (X, y) (canonical order)."""
    if len(y) == 0:
        return None
    present = np.unique(y)
    if len(present) == 1:
        return _Constant(present[0])
    model = clone(est)
    if seed_params:
        model.set_params(**{p: int(seed) for p in seed_params})
    return model.fit(X, y)


class PartitionAggregationClassifier(ClassifierMixin, BaseEstimator):
    """Certified ensemble of ``estimator`` over the partitions of a deterministic scheme.

    Parameters
    ----------
    estimator : a scikit-learn classifier (default ``LogisticRegression(max_iter=1000)``) or
        :class:`EngineCNN` (the project's vectorised torch engine, uint8 images (n, C, H, W)).
    k : number of partitions (FA: k*d split buckets; DPA*: k partitions, d seeds each).
    scheme : ``dpa``, ``ssdpa``, ``fa`` or ``dpa_star`` (the registry's deterministic schemes).
    d : FA's spread / DPA*'s seeds per partition (1 for dpa, ssdpa).
    certificate : the certificate whose aggregation ``predict`` uses and ``certify`` computes
        (None: the scheme's default, :attr:`poisoncert.registry.Scheme.default_certificate`).
    offsets : FA's spread offsets R (None: the FA reference's, as the workflow).
    hash : partition key, one of :data:`HASHES`.
    seed, same_seed : model m's seed is ``seed + m`` (or ``seed`` for all).
    n_jobs : joblib workers fitting the partitions (scikit-learn estimators; processes, so a
        model cannot see another's state). None = 1.
    check_determinism : refit one partition and require identical outputs (see module doc).
    classes : the label set, declared before seeing the data (None: the labels of ``y``). With
        inferred classes, :meth:`certify` refuses an ensemble with an empty partition: an empty
        partition votes for ``classes_[0]``, and one poison with a new, smaller label would change
        all such votes at once.

    Attributes
    ----------
    classes_, n_features_in_ (2-D input), estimators_ (one per base model; None = empty
    partition), partitions_ (:class:`poisoncert.partition.Partitions`), n_models_, meta_ (the
    scores metadata the certificates read: scheme, k, d, offsets, seeds, learner).
    """

    def __init__(self, estimator: Any = None, k: int = 50, scheme: str = "dpa", d: int = 1, *, certificate: str | None = None,
                 offsets: Sequence[int] | None = None, hash: str = "auto", seed: int = 0, same_seed: bool = False,
                 n_jobs: int | None = None, check_determinism: bool = True, classes: Sequence[Any] | None = None):
        self.estimator = estimator
        self.classes = classes
        self.k = k
        self.scheme = scheme
        self.d = d
        self.certificate = certificate
        self.offsets = offsets
        self.hash = hash
        self.seed = seed
        self.same_seed = same_seed
        self.n_jobs = n_jobs
        self.check_determinism = check_determinism

    # ------------------------------------------------------------------------------------ checks

    def _base(self) -> Any:
        if self.estimator is None:
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(max_iter=1000)
        if not (hasattr(self.estimator, "fit") and (hasattr(self.estimator, "predict") or hasattr(self.estimator, "fit_partitions"))):
            raise PoisonCertError(f"estimator must be a scikit-learn classifier (fit, predict), got {type(self.estimator).__name__}")
        return self.estimator

    def _scheme_record(self) -> registry.Scheme:
        rec = registry.scheme(self.scheme)
        if rec.selection or not rec.trains:
            ok = [s.name for s in registry.SCHEMES.values() if not s.selection and s.trains]
            raise PoisonCertError(f"scheme '{rec.name}' is not a partition scheme this estimator trains; choose one of {', '.join(ok)}")
        return rec

    def _certificate_name(self, certificate: str | None = None) -> str:
        rec = self._scheme_record()
        name = certificate or self.certificate or rec.default_certificate
        rec.view(name)  # refuses a certificate the scheme's footprint does not support
        return name

    def _check_params(self) -> None:
        rec = self._scheme_record()
        for name in ("k", "d", "seed"):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < (0 if name == "seed" else 1):
                raise PoisonCertError(f"{name} must be an integer >= {0 if name == 'seed' else 1}, got {v!r}")
        if not rec.uses_d and self.d != 1:
            with_d = ", ".join(s.name for s in registry.SCHEMES.values() if s.uses_d)
            raise PoisonCertError(f"scheme '{rec.name}' has no d (got d={self.d}); d is for {with_d}")
        if self.hash not in HASHES:
            raise PoisonCertError(f"hash must be one of {', '.join(HASHES)}, got {self.hash!r}")
        self._certificate_name()

    def _validate(self, X: Any, y: Any = None, reset: bool = True):
        try:
            if y is None and reset:
                _validate_data(self, X, y, reset=True)  # raises "requires y to be passed"
            if reset:
                X, y = _validate_data(self, X, y, reset=True, allow_nd=True, dtype="numeric", ensure_all_finite=True, ensure_min_samples=1)
            else:
                X = _validate_data(self, X, reset=False, allow_nd=True, dtype="numeric", ensure_all_finite=True)
        except ValueError as exc:
            raise PoisonCertError(_one_line(exc)) from None
        if not reset and X.shape[1:] != self.sample_shape_:
            raise PoisonCertError(f"X has samples of shape {X.shape[1:]}, but the ensemble was fitted on samples of shape {self.sample_shape_}")
        return (X, y) if reset else X

    @staticmethod
    def _as_rows(X: np.ndarray, hash_name: str) -> np.ndarray:
        """The rows the base models see, and that are hashed and sorted by content."""
        if hash_name == "pixel_sum":
            if X.dtype != np.uint8:
                raise PoisonCertError(f"hash='pixel_sum' is the papers' key for uint8 images; X is {X.dtype} (use hash='bytes')")
            return X
        return np.ascontiguousarray(X, dtype="<f8") + 0.0  # one dtype and byte order; -0.0 -> 0.0

    def _keys_and_rows(self, X: np.ndarray, hash_name: str) -> tuple[np.ndarray, np.ndarray]:
        """The rows (:meth:`_as_rows`) and their partition key h(t) (SS-DPA ignores it: its key is the sorted index)."""
        rows = self._as_rows(X, hash_name)
        return rows, (pixel_sum_hash(rows) if hash_name == "pixel_sum" else byte_hash(rows))

    def _resolved_hash(self, X: np.ndarray) -> str:
        return ("pixel_sum" if X.dtype == np.uint8 else "bytes") if self.hash == "auto" else self.hash

    def _partition(self, rows: np.ndarray, keys: np.ndarray, y_enc: np.ndarray) -> Partitions:
        return make_partitions(rows, y_enc, self.scheme, int(self.k), int(self.d), list(self.offsets) if self.offsets is not None else None,
                               bool(self.same_seed), int(self.seed), pixel_sums=keys)

    def _encode(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The label set (declared ``classes``, else the labels of y) and y as indices into it."""
        if self.classes is None:
            classes, y_enc = np.unique(y, return_inverse=True)
            if len(classes) < 2:
                raise PoisonCertError(f"y has one class ({classes[0]!r}); a classifier needs at least 2 classes (or declare them: classes=...)")
            return classes, y_enc
        try:
            classes = np.asarray(self.classes)
            ok = classes.ndim == 1 and len(np.unique(classes)) == len(classes) >= 2
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise PoisonCertError(f"classes must be a list of at least 2 distinct labels, got {self.classes!r}")
        classes = np.sort(classes)
        try:
            idx = np.searchsorted(classes, y)
        except TypeError:
            raise PoisonCertError("y's labels cannot be compared with the declared classes (mixed types?)") from None
        bad = (idx >= len(classes)) | (classes[np.minimum(idx, len(classes) - 1)] != y)
        if bad.any():
            raise PoisonCertError(f"y has label {np.asarray(y)[bad].tolist()[0]!r}, which is not one of the declared classes {classes.tolist()}")
        return classes, idx

    # ------------------------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any) -> "PartitionAggregationClassifier":
        """Partition (X, y) with the scheme, fit one base model per training set (joblib ``n_jobs``)."""
        self._check_params()
        base = self._base()
        X, y = self._validate(X, y)
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise PoisonCertError(_one_line(exc)) from None
        classes, y_enc = self._encode(y)
        hash_name = self._resolved_hash(X)
        rows, keys = self._keys_and_rows(X, hash_name)
        y_enc = y_enc.astype(np.int64).ravel()
        parts = self._partition(rows, keys, y_enc)
        self.classes_ = classes
        self.hash_ = hash_name
        self.sample_shape_ = X.shape[1:]
        self.partitions_ = parts
        self.n_models_ = parts.n_models
        self.meta_ = {**{k: v for k, v in parts.meta().items() if k in ("scheme", "k", "d", "offsets", "n_models", "same_seed")},
                      "seeds": [int(s) for s in parts.seeds], "learner": "supervised", "hash": hash_name,
                      "base_estimator": type(base).__name__, "train_size": int(len(y_enc))}
        self.estimators_ = self._fit_models(base, rows, y_enc, parts, range(parts.n_models))
        if self.check_determinism:
            self._probe_determinism(base, rows, y_enc, parts)
        return self

    def _fit_models(self, base: Any, rows: np.ndarray, y_enc: np.ndarray, parts: Partitions, models: Sequence[int]) -> list[Any]:
        sets = [(rows[parts.members(m)], y_enc[parts.members(m)]) for m in models]
        seeds = [int(parts.seeds[m]) for m in models]
        if hasattr(base, "fit_partitions"):  # a batched learner (EngineCNN): all sets in one call
            return base.fit_partitions(sets, seeds, len(self.classes_), list(models))
        params = _seed_params(base)
        sets = [(_flat(xm), ym) for xm, ym in sets]  # scikit-learn estimators get images as flat rows
        if self.n_jobs in (None, 1) or len(sets) < 2:
            return [_fit_one(base, xm, ym, s, params) for (xm, ym), s in zip(sets, seeds)]
        from joblib import Parallel, delayed

        return Parallel(n_jobs=self.n_jobs)(delayed(_fit_one)(base, xm, ym, s, params) for (xm, ym), s in zip(sets, seeds))

    def _probe_determinism(self, base: Any, rows: np.ndarray, y_enc: np.ndarray, parts: Partitions) -> None:
        probe = next((m for m in range(parts.n_models) if len(np.unique(y_enc[parts.members(m)])) >= 2), None)
        if probe is None or hasattr(base, "fit_partitions"):  # the engine is deterministic by contract (poisoncert.train)
            return
        xm = _flat(rows[parts.members(probe)])
        again = self._fit_models(base, rows, y_enc, parts, [probe])[0]
        first = self.estimators_[probe]
        if not np.array_equal(_model_scores(first, xm, len(self.classes_)), _model_scores(again, xm, len(self.classes_))):
            has = "its random_state" if _seed_params(base) else "no random_state parameter"
            raise PoisonCertError(
                f"{type(base).__name__} is not a function of its training set and seed: two fits of partition {probe} with {has} disagree; "
                "give it a random_state (or make it deterministic) — the certificates need each base model to be reproducible"
            )

    # ------------------------------------------------------------------------------------ outputs

    def _rows(self, X: Any) -> np.ndarray:
        if not hasattr(self, "estimators_"):
            raise NotFittedPoisonCertError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")
        X = self._validate(X, reset=False)
        return self._as_rows(X, self.hash_)

    def _scores_of_rows(self, rows: np.ndarray, models: Sequence[int] | None = None) -> np.ndarray:
        C = len(self.classes_)
        models = range(self.n_models_) if models is None else models
        if hasattr(self.estimators_, "logits"):  # batched learner's fitted shard
            out = np.ascontiguousarray(self.estimators_.logits(rows, list(models)).transpose(1, 0, 2))
        else:
            out = np.zeros((len(rows), len(models), C), np.float32)
            rows = _flat(rows)
            for i, m in enumerate(models):
                out[:, i] = _model_scores(self.estimators_[m], rows, C)
        if not np.isfinite(out).all():
            raise PoisonCertError("a base model produced non-finite outputs; check the base estimator (its training diverged?)")
        return out

    def scores(self, X: Any) -> np.ndarray:
        """The ensemble's scores on X: float32 (n_samples, n_models, n_classes), the public scores layout
        (:mod:`poisoncert.scores`; write them with ``write_scores(path, scores, labels, clf.meta_)``)."""
        return self._scores_of_rows(self._rows(X))

    def _predict_index(self, scores: np.ndarray) -> np.ndarray:
        return registry.predict(self.scheme, self._certificate_name(), scores, self.meta_)

    def predict(self, X: Any) -> np.ndarray:
        """The aggregation of the certificate (plurality vote or Run-Off Election) over the base models."""
        scores = self.scores(X)
        return self.classes_[self._predict_index(scores)]

    def _plurality(self) -> bool:
        try:
            return registry.certificate(self._certificate_name()).aggregation == "plurality"
        except PoisonCertError:
            return False

    @available_if(_plurality)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Vote shares of the voters (DPA*: partitions); argmax = ``predict`` (smaller class index wins ties).
        Only for plurality aggregation (not ROE, whose winner is not the vote-share argmax)."""
        scores = self.scores(X)
        view = registry.scores_view(self.scheme, self._certificate_name(), scores, self.meta_)
        counts = certify.vote_counts(certify.votes(view), len(self.classes_)).astype(np.float64)
        return counts / view.shape[1]

    def certify(self, X: Any, y: Any = None, certificate: str | None = None) -> CertifiedPredictions:
        """Per-sample prediction, certified radius and unit under the scheme's threat model.

        ``certificate``: one the scheme's footprint supports (None: the estimator's). ``y``
        (optional) enables :meth:`CertifiedPredictions.certified_accuracy`.
        """
        name = self._certificate_name(certificate)
        empty = np.flatnonzero(np.asarray(self.partitions_.sizes()) == 0)
        if empty.size and self.classes is None:
            # an empty partition votes for classes_[0]; with classes inferred from y, one poison with a
            # new, smaller label would change every empty partition's vote at once (beyond the footprint)
            raise PoisonCertError(
                f"{len(empty)} base models have empty training sets and the classes were inferred from y: one poisoned sample "
                "with a new label would change all their votes; declare the label set (classes=[...]) or use a smaller k"
            )
        scores = self.scores(X)
        cert = registry.compute(self.scheme, name, scores, self.meta_, "supervised")
        labels = None
        if y is not None:
            labels = np.asarray(y)
            if labels.shape != (len(scores),):
                raise PoisonCertError(f"y must have shape ({len(scores)},) (one label per sample of X), got {labels.shape}")
        rec = registry.scheme(self.scheme)
        pred = np.asarray(cert.prediction, dtype=np.int64)
        return CertifiedPredictions(self.classes_[pred], np.asarray(cert.radius, dtype=np.int64), cert.unit, name, rec.name, rec.footprint,
                                    self.classes_, labels, dict(cert.detail))

    def certified_accuracy(self, X: Any, y: Any, radii: Sequence[int] | np.ndarray, certificate: str | None = None) -> np.ndarray:
        """Fraction of (X, y) classified correctly with a certified radius >= r, for each r in ``radii``."""
        return self.certify(X, y, certificate).certified_accuracy(radii)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


# ---------------------------------------------------------------------------------------------- torch engine


class EngineCNN(BaseEstimator):
    """The project's vectorised torch engine (:func:`poisoncert.train.train_shard`'s models) as a base learner.

    Parameters are :class:`poisoncert.train.TrainConfig` fields (``arch`` one of
    :data:`poisoncert.models.ARCHITECTURES`, ``epochs``, ``batch_size``, ``lr``, ...) and
    ``device``. Input: uint8 images (n, C, H, W). Every partition's model is trained in one
    process, vectorised over models, with the engine's determinism contract (seed = the
    partition's, canonical order, fixed group size and thread count), so it needs no probe.
    """

    def __init__(self, arch: str = "small_cnn", epochs: int = 30, batch_size: int = 16, lr: float = 0.05, device: str = "cpu",
                 train_config: dict[str, Any] | None = None):
        self.arch = arch
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.train_config = train_config

    def config(self):
        from .train import TrainConfig

        try:
            return TrainConfig(**{**(self.train_config or {}), "arch": self.arch, "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr})
        except TypeError as exc:
            raise PoisonCertError(f"EngineCNN: bad train_config: {exc}") from None

    def fit(self, X: Any, y: Any) -> "EngineCNN":  # pragma: no cover - only used through fit_partitions
        raise PoisonCertError("EngineCNN trains through PartitionAggregationClassifier (all partitions at once); use it as its estimator")

    def fit_partitions(self, sets: list[tuple[np.ndarray, np.ndarray]], seeds: list[int], n_classes: int, positions: Sequence[int]) -> "_EngineShard":
        """Train base models ``positions`` (their indices in the ensemble) on ``sets`` with ``seeds``.

        Each model sits at slot ``position % group_size`` of its group, as in
        :func:`poisoncert.train.train_shard` on the whole ensemble, so refitting a subset (the
        poison check) reproduces the other models' bits and the logits equal the workflow's.
        """
        config = self.config()
        if config.group_size < 1:
            raise PoisonCertError("EngineCNN needs train_config group_size >= 1 (a model's bits depend on its slot in its group)")
        for xm, _ in sets:
            if xm.dtype != np.uint8 or xm.ndim != 4:
                raise PoisonCertError(f"EngineCNN needs uint8 images of shape (n, C, H, W), got {xm.dtype} {xm.shape}")
        return _EngineShard.fit(sets, seeds, n_classes, list(positions), config, self.device)


class _EngineShard:
    """Trained groups of the engine (``poisoncert.train._fit``, train_shard's own steps); ``logits`` evaluates them."""

    def __init__(self, groups, where, empty, config, device, n_classes):
        self.groups, self.where, self.empty = groups, where, empty
        self.config, self.device, self.n_classes = config, device, n_classes

    def __len__(self) -> int:
        return len(self.where) + len(self.empty)

    @classmethod
    def fit(cls, sets, seeds, n_classes: int, positions: list[int], config, device: str) -> "_EngineShard":
        from . import train as engine

        shape = tuple(sets[0][0].shape[1:])
        checked = [engine._check_set(i, im, lb, shape, n_classes) for i, (im, lb) in enumerate(sets)]
        seeds = [engine._check_seed(s) for s in seeds]
        dev = engine.resolve_device(device)
        engine.keep_freed_memory()
        G = config.group_size
        blank = (np.zeros((0,) + shape, np.uint8), np.zeros(0, np.int64))
        by_group: dict[int, list[int]] = {}
        for local, pos in enumerate(positions):
            by_group.setdefault(pos // G, []).append(local)
        empty = sorted(i for i, (_, lb) in enumerate(checked) if len(lb) == 0)
        if empty:
            engine._empty_warning(empty)
        strategy = engine.resolve_strategy(config, dev)  # the engine's measured choice per (arch, device), as train_shard
        groups, where = [], {}
        with engine.deterministic_mode(config):
            for gi, (_, members) in enumerate(sorted(by_group.items())):
                g_sets, g_seeds = [blank] * G, [0] * G  # empty dummies, as train_shard pads its last group
                for local in members:
                    slot = positions[local] % G
                    g_sets[slot], g_seeds[slot] = checked[local], seeds[local]
                    where[local] = (gi, slot)
                groups.append(engine._fit(g_sets, g_seeds, shape, n_classes, config, dev, strategy))
        for i in empty:
            where.pop(i, None)
        shard = cls(groups, where, set(empty), config, device, n_classes)
        shard.strategy = strategy
        return shard

    def logits(self, rows: np.ndarray, models: Sequence[int]) -> np.ndarray:
        """float32 (len(models), n, n_classes); an empty partition's model gives zero logits (the engine's convention)."""
        import torch

        from . import train as engine

        if rows.dtype != np.uint8 or rows.ndim != 4:
            raise PoisonCertError(f"EngineCNN needs uint8 images of shape (n, C, H, W), got {rows.dtype} {rows.shape}")
        dev = engine.resolve_device(self.device)
        out = np.zeros((len(models), len(rows), self.n_classes), np.float32)
        need: dict[int, list[tuple[int, int]]] = {}
        for i, m in enumerate(models):
            if m not in self.empty:
                gi, slot = self.where[m]
                need.setdefault(gi, []).append((i, slot))
        with engine.deterministic_mode(self.config):
            test = torch.from_numpy(np.ascontiguousarray(rows)).to(dev)
            for gi, items in need.items():
                lg = engine._evaluate(self.groups[gi], test, self.config, dev, self.strategy, max(s for _, s in items) + 1)
                for i, slot in items:
                    out[i] = lg[slot]
        return out


# ---------------------------------------------------------------------------------------------- poison-and-retrain


def _contents(rows: np.ndarray, labels: np.ndarray, members: np.ndarray) -> bytes:
    return rows[members].tobytes() + labels[members].tobytes()


def _copies_in_buckets(clf: PartitionAggregationClassifier, x: np.ndarray, buckets: Sequence[int], n_buckets: int) -> np.ndarray:
    """Near-copies of row ``x`` (the classifier's own rows) whose keys fall in each of ``buckets`` (mod n_buckets)."""
    if clf.hash_ == "pixel_sum":
        h = int(pixel_sum_hash(x[None])[0])
        return attack.near_copies(x, [(int(b) - h) % n_buckets for b in buckets])
    want = {int(b): None for b in buckets}
    flat = x.reshape(-1)
    step = np.abs(flat[0]) * 1e-9 + 1e-12
    for start in range(0, 400 * n_buckets, 4096):
        cand = np.repeat(flat[None], 4096, axis=0)
        cand[:, 0] += step * np.arange(start + 1, start + 4097)
        for c, key in zip(cand, byte_hash(cand) % n_buckets):
            if int(key) in want and want[int(key)] is None:
                want[int(key)] = c
        if all(v is not None for v in want.values()):
            return np.stack([want[int(b)] for b in buckets]).reshape((len(buckets),) + x.shape)
    raise PoisonCertError(f"could not place near-copies in all of {len(buckets)} buckets")


def poison_check(clf: PartitionAggregationClassifier, X: Any, y: Any, X_test: Any, y_test: Any, n_targets: int = 3,
                 certificate: str | None = None, radius_of=None) -> list[attack.PoisonOutcome]:
    """Poison-and-retrain check (:mod:`poisoncert.attack`) of a fitted ``clf`` trained on (X, y).

    For up to ``n_targets`` correctly classified test samples with radius R >= 1: poison the
    training set with R samples inside the scheme's threat model (``insert``: R near-copies of
    the target labelled with the runner-up class, in R buckets whose models vote for the
    prediction; ``flip``: R label flips in R such models), rebuild the partitions, refit
    *only* the base models whose sets changed (plus one unchanged model, which must reproduce
    its outputs bit for bit), and report whether the prediction held. ``radius_of`` (tests)
    replaces the radii, e.g. inflated by one, to show the check then fails.
    """
    name = clf._certificate_name(certificate)
    rec = registry.scheme(clf.scheme)
    Xv, yv = clf._validate(X, y, reset=False), np.asarray(y)
    rows, keys = clf._keys_and_rows(Xv, clf.hash_)
    idx = np.searchsorted(clf.classes_, yv)
    if np.any(idx >= len(clf.classes_)) or not np.array_equal(clf.classes_[np.minimum(idx, len(clf.classes_) - 1)], yv):
        raise PoisonCertError("y has labels the classifier was not fitted on; pass the (X, y) it was fitted on")
    y_enc = idx.astype(np.int64)
    clean = clf._partition(rows, keys, y_enc)
    if not (np.array_equal(clean.indices, clf.partitions_.indices) and np.array_equal(clean.bounds, clf.partitions_.bounds)):
        raise PoisonCertError("(X, y) is not the training set this classifier was fitted on; pass the same data")
    test_rows = clf._rows(X_test)
    y_test_enc = np.searchsorted(clf.classes_, np.asarray(y_test))
    scores = clf._scores_of_rows(test_rows)
    cert = registry.compute(clf.scheme, name, scores, clf.meta_, "supervised")
    view = registry.scores_view(clf.scheme, name, scores, clf.meta_)
    radius_all = np.asarray(radius_of(cert) if radius_of is not None else cert.radius)
    order = np.flatnonzero((cert.prediction == y_test_enc) & (radius_all >= 1))
    by_radius = order[np.argsort(radius_all[order], kind="stable")]
    targets = by_radius[np.unique(np.linspace(0, len(by_radius) - 1, min(n_targets, len(by_radius))).astype(int))] if len(by_radius) else by_radius
    votes_all = certify.votes(scores)
    kind = "flip" if rec.unit == registry.LABEL_FLIPS else rec.attack
    base = clf._base()
    outcomes, verified = [], False
    for j in targets:
        R, pred = int(radius_all[j]), int(cert.prediction[j])
        target = attack._runner_up(view[j: j + 1], pred)
        weight = attack._weight(votes_all[j], pred, target)
        if kind == "insert":
            reach = attack._bucket_models(clf.scheme, int(clf.k), int(clf.d), list(clean.offsets))
            gain = np.array([weight[m].sum() for m in reach])
            buckets = np.argsort(-gain, kind="stable")[:R]
            if len(buckets) < R:
                raise PoisonCertError(f"cannot place {R} poisons in distinct buckets of {len(reach)}")
            poisons = _copies_in_buckets(clf, test_rows[j], buckets, len(reach))
            rows_p = np.concatenate([rows, poisons.astype(rows.dtype)])
            y_p = np.concatenate([y_enc, np.full(R, target, np.int64)])
            n_poisons = R
        else:
            rows_p, y_p = rows, y_enc.copy()
            dist = ((rows.reshape(len(rows), -1).astype(np.float64) - test_rows[j].reshape(-1)) ** 2).sum(axis=1)
            picks = []
            for m in np.argsort(-weight, kind="stable"):
                if weight[m] == 0 or len(picks) == R:
                    break
                members = clean.members(m)
                cand = members[y_enc[members] != target]
                if len(cand):
                    picks.append(int(cand[np.argmin(dist[cand])]))
            if len(picks) < R:
                raise PoisonCertError(f"only {len(picks)} base models can be reached by a label flip, fewer than the radius {R}")
            y_p[picks] = target
            n_poisons = len(picks)
        keys_p = clf._keys_and_rows(rows_p, clf.hash_)[1]
        poisoned = clf._partition(rows_p, keys_p, y_p)
        changed = [m for m in range(clean.n_models) if _contents(rows, y_enc, clean.members(m)) != _contents(rows_p, y_p, poisoned.members(m))]
        unaffected = [m for m in range(clean.n_models) if m not in set(changed)]
        refit = changed + ([unaffected[0]] if not verified and unaffected else [])
        new_models = clf._fit_models(base, rows_p, y_p, poisoned, refit)
        trial = PartitionAggregationClassifier.__new__(PartitionAggregationClassifier)
        trial.__dict__.update(clf.__dict__)
        trial.estimators_ = new_models
        # the whole test set, as the scores were made (the engine evaluates in fixed chunks; a chunk's size can change bits)
        new_out = trial._scores_of_rows(test_rows, range(len(refit)))[j]
        if len(refit) > len(changed):
            if not np.array_equal(new_out[-1], scores[j, unaffected[0]]):
                raise PoisonCertError("refitting an unaffected base model did not reproduce its outputs bit for bit; the base estimator is not deterministic")
            verified = True
        new_scores = scores[j: j + 1].copy()
        for i, m in enumerate(changed):
            new_scores[0, m] = new_out[i]
        new_votes = certify.votes(new_scores)[0]
        new_pred = int(registry.predict(clf.scheme, name, new_scores, clf.meta_)[0])
        outcomes.append(attack.PoisonOutcome(name, int(j), int(y_test_enc[j]), pred, R, int(target), n_poisons, len(changed),
                                             int(((new_votes == target) & (votes_all[j] != target)).sum()), new_pred))
    if not outcomes:
        raise PoisonCertError(f"{name}: no test sample is correctly classified with a certificate >= 1; nothing to attack")
    return outcomes
