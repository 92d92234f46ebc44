"""One record per scheme, certificate, learner and dataset: the one place each meaning lives.

Everything else reads these records: config validation (:mod:`poisoncert.config`), the certify
stage and CLI (:mod:`poisoncert.stages.certify`), the report's labels (:mod:`poisoncert.report`),
the poison-and-retrain check (:mod:`poisoncert.attack`) and the Snakemake target lists
(``rules/common.smk``). Adding a scheme or a certificate is one record here plus its tests; a
test (``tests/test_registry.py``) iterates over :data:`SCHEMES` so that no (scheme, certificate)
pair goes without an end-to-end poison-and-retrain proof.

**Threat footprint.** A scheme's record states what *one* poisoned training sample can reach.
A deterministic certificate is sound for an ensemble only under that footprint, so each scheme
lists the certificates valid for it and the *view* of the scores each is computed on:

* ``models``: every base model is one voter (DPA, SS-DPA, FA, App. B);
* ``partition_mean``: DPA* (ROE paper Section 4.1) averages the logits of the d seeds of each
  partition, so the k partitions are the voters (``certify.dpa_star_logits``). One poison
  reaches one partition, i.e. all d seeds of it: DPA on the k*d seed models as separate voters
  would count it d times too few, which is unsound.

A learner that sees every *unlabeled* training image (SS-DPA's label-free extractor, also under
the frozen-feature learner) lets an inserted image reach every base model, so its ensembles are
certified against label flips only (:func:`threat_unit`).

>>> SCHEMES["dpa_star"].view("dpa")
'partition_mean'
>>> SCHEMES["fa"].view("dpa")
Traceback (most recent call last):
...
poisoncert.errors.PoisonCertError: certificate 'dpa' is not sound for a 'fa' ensemble (one poison reaches the d base models spread from one split bucket); allowed: fa, fa_roe
>>> SCHEMES["fa"].n_models(k=50, d=16)
800
>>> threat_unit("dpa", "rotnet"), threat_unit("ssdpa", "simclr"), threat_unit("dpa", "frozen")
('label flips', 'label flips', 'label flips')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from . import certify, splits
from .errors import PoisonCertError

__all__ = [
    "INSERTIONS",
    "LABEL_FLIPS",
    "DEFAULT_SCHEME",
    "Scheme",
    "CertificateRecord",
    "Learner",
    "DatasetRecord",
    "SCHEMES",
    "CERTIFICATES",
    "PARAMETER_DEFAULTS",
    "LEARNERS",
    "SIMCLR_DEFAULTS",
    "DATASETS",
    "scheme",
    "certificate",
    "certificate_parameters",
    "dataset",
    "threat_unit",
    "ensemble_threat",
    "recorded",
    "compute",
    "predict",
    "learner",
    "default_learner",
    "deterministic_pairs",
    "scores_view",
]

INSERTIONS = "insertions+deletions"
LABEL_FLIPS = "label flips"
#: The threat model of a scores file that names no scheme: one base model per poisoned sample.
DEFAULT_SCHEME = "dpa"


# ---------------------------------------------------------------------------------------------- certificates


def _need(meta: Mapping[str, Any], keys: tuple[str, ...], flags: Mapping[str, str]) -> list[Any]:
    missing = [k for k in keys if meta.get(k) is None]
    if missing:
        how = [flags[k] for k in missing if k in flags]
        hint = f" (or on the command line: {', '.join(how)})" if how else ""
        raise PoisonCertError(f"this certificate needs {', '.join(missing)} in the scores metadata{hint}")
    return [meta[k] for k in keys]


#: Metadata key -> the ``poisoncert certify`` flag that supplies it.
FLAGS: dict[str, str] = {
    "k": "--k",
    "d": "--d",
    "offsets": "--offsets",
    "train_size": "--train-size",
    "subsample_size": "--subsample-size",
    "alpha": "--alpha",
    "poisoning_model": "--poisoning-model",
    "n_clean": "--clean-size",
    "scheme": "--scheme",
}


#: Certificate parameters -> the value a certificate uses when neither the scores metadata nor the
#: recorded experiment config sets one (the config schema's defaults).
def _schema_parameter_defaults() -> dict[str, Any]:
    """The config schema's defaults of ``experiments.<name>.alpha``, ``poisoning_model`` and
    ``clean_count`` (one source: read from the schema, not restated here)."""
    import yaml

    from .package_data import package_path

    with open(package_path("schemas", "config.schema.yaml"), encoding="utf-8") as fh:
        experiment = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["$defs"]["experiment"]["properties"]
    return {"alpha": experiment["alpha"]["default"], "poisoning_model": experiment["poisoning_model"]["default"],
            "n_clean": experiment["clean_count"]["default"]}


PARAMETER_DEFAULTS: dict[str, Any] = _schema_parameter_defaults()


def _meta_value(meta: Mapping[str, Any], key: str, default: Any) -> Any:
    """A value from the scores metadata, else from the recorded experiment config, else ``default``."""
    if meta.get(key) is not None:
        return meta[key]
    value = (meta.get("experiment") or {}).get(key)
    return default if value is None else value


def _cert_dpa(scores: np.ndarray, meta: Mapping[str, Any]) -> certify.Certificate:
    return certify.dpa(scores)


def _cert_dpa_roe(scores: np.ndarray, meta: Mapping[str, Any]) -> certify.Certificate:
    return certify.dpa_roe(scores)


def _fa_layout(meta: Mapping[str, Any]) -> tuple[int, int, list[int]]:
    """k, d and the spread offsets R of an FA ensemble (all required: other offsets, other ensemble)."""
    k, d, offsets = _need(meta, ("k", "d", "offsets"), FLAGS)
    if not offsets:
        raise PoisonCertError("this certificate needs the FA spread offsets R (d values) in the scores metadata (or on the command line: --offsets)")
    return k, d, offsets


def _cert_fa(scores: np.ndarray, meta: Mapping[str, Any]) -> certify.Certificate:
    return certify.fa(scores, *_fa_layout(meta))


def _cert_fa_roe(scores: np.ndarray, meta: Mapping[str, Any]) -> certify.Certificate:
    return certify.fa_roe(scores, *_fa_layout(meta))


def _fa_statistics(scores: np.ndarray, labels: np.ndarray, meta: Mapping[str, Any]) -> dict[str, Any]:
    """FA Table 2 (Pr[r up], delta r over the DPA-style bound on the same kd models), the
    DPA-style bound's certified-accuracy curve (FA Figure 4: Theorem 2 minus it, same models) and
    Table 3 (distributional certified accuracy under one poison, FA Theorem 4 / App. D)."""
    k, d, offsets = _fa_layout(meta)
    stats = certify.fa_improvement_stats(scores, k, d, offsets, labels)
    dist = certify.fa_certified_accuracy(scores, labels, k, d, offsets, attack_size=1)
    naive = np.asarray(stats["radius_dpa_style"])  # -1 where misclassified
    radius = np.arange(int(naive.max(initial=0)) + 2)
    curve = certify.certified_accuracy(labels, naive, labels, radius)  # naive is already -1 where wrong
    return {
        "pr_radius_up": stats["pr_up"],
        "mean_radius_increase": stats["delta_r"],
        "curve_dpa_style": {"radius": radius.tolist(), "certified_accuracy": curve.tolist()},
        "certified_accuracy_distributional": {"1": dist.accuracy},
    }


def _selection_sizes(scores: np.ndarray, meta: Mapping[str, Any]) -> tuple[np.ndarray, int, int, float]:
    counts = certify.vote_counts(certify.votes(scores), scores.shape[2])
    (train_size,) = _need(meta, ("train_size",), FLAGS)
    subsample = meta.get("subsample_size") or _need(meta, ("k",), {"k": "--k or --subsample-size"})[0]
    return counts, int(train_size), int(subsample), certify.check_alpha(_meta_value(meta, "alpha", PARAMETER_DEFAULTS["alpha"]))


def _cert_bagging(scores: np.ndarray, meta: Mapping[str, Any]) -> certify.Certificate:
    if int(meta.get("n_clean") or 0):
        raise PoisonCertError(
            f"Jia's bagging certificate has no known-clean part, but this ensemble has {meta['n_clean']} known-clean samples "
            "in every selection; use --certificate random_selection (Chen et al.), which counts them"
        )
    counts, n, k, alpha = _selection_sizes(scores, meta)
    return certify.bagging(counts, n, k, alpha)


def _cert_random_selection(scores: np.ndarray, meta: Mapping[str, Any]) -> certify.Certificate:
    counts, n, k, alpha = _selection_sizes(scores, meta)
    (name,) = _need(meta, ("scheme",), FLAGS)
    model = _meta_value(meta, "poisoning_model", PARAMETER_DEFAULTS["poisoning_model"])
    return certify.random_selection(counts, name, n, k, alpha, model, clean_size=int(meta.get("n_clean") or 0))


def _cert_binary_kmeans(scores: np.ndarray, meta: Mapping[str, Any]) -> certify.Certificate:
    (fit,) = _need(meta, ("binary_kmeans",), FLAGS)
    try:
        tc, y, xc = (np.asarray(fit[key], dtype=np.int64) for key in ("train_clusters", "train_labels", "test_clusters"))
    except (KeyError, TypeError, ValueError):
        raise PoisonCertError("the binary_kmeans metadata must hold train_clusters, train_labels and test_clusters (integer lists)") from None
    if scores.shape[:2] != (len(xc), len(y)) or scores.shape[2] != 2:
        raise PoisonCertError(
            f"scores of shape {scores.shape} do not belong to the stored 2-means fit ({len(xc)} test samples, {len(y)} base classifiers, 2 classes)"
        )
    cert = certify.binary_kmeans(tc, y, xc)
    if not np.array_equal(certify.vote_counts(certify.votes(scores), 2), cert.detail["counts"]):
        raise PoisonCertError("the votes in these scores disagree with the stored 2-means cluster assignments; the scores file was altered")
    return cert


@dataclass(frozen=True)
class CertificateRecord:
    """A certificate: how it is computed from (a view of) the scores, and how it is shown.

    ``compute(scores, meta)`` runs on the view of the scores that the ensemble's scheme names
    (:meth:`Scheme.view`); ``needs`` are the metadata keys it reads; ``unit`` is fixed for the
    stochastic certificates and ``None`` for the deterministic ones, whose unit is the
    ensemble's threat unit (:func:`threat_unit`); ``baseline`` is the certificate of plain DPA
    voting on the same ensemble (on the same k with d = 1 when ``baseline_d1``: FA), for the
    improvement figures; ``statistics`` adds a paper's
    extra numbers to the summary; ``parameters`` are the :data:`PARAMETER_DEFAULTS` keys it reads
    (recorded in the summary: they change its numbers).
    """

    name: str
    label: str
    paper: str
    compute: Callable[[np.ndarray, Mapping[str, Any]], certify.Certificate]
    needs: tuple[str, ...] = ()
    unit: str | None = None
    aggregation: str = "plurality"
    baseline: str | None = None
    statistics: Callable[[np.ndarray, np.ndarray, Mapping[str, Any]], dict[str, Any]] | None = None
    parameters: tuple[str, ...] = ()
    #: the baseline is certificate ``baseline`` on the same k with d = 1 (FA: DPA voting on the k partitions of the split)
    baseline_d1: bool = False
    #: the certificate counts a known-clean part D^c in every selection (Jia's bagging has none)
    known_clean: bool = True

    @property
    def deterministic(self) -> bool:
        return self.unit is None


CERTIFICATES: dict[str, CertificateRecord] = {
    c.name: c
    for c in (
        CertificateRecord("dpa", "DPA", "000, Theorem 1 (Theorem 2 for sorted partitions)", _cert_dpa),
        CertificateRecord("fa", "FA", "001, Theorem 2", _cert_fa, needs=("k", "d", "offsets"), statistics=_fa_statistics,
                          baseline="fa", baseline_d1=True),
        CertificateRecord("dpa_roe", "DPA+ROE", "003, Theorem 3.4, Lemmas 3.5-3.6", _cert_dpa_roe, aggregation="roe", baseline="dpa"),
        CertificateRecord("fa_roe", "FA+ROE", "003, Theorem 3.4, Lemmas 3.7-3.8", _cert_fa_roe, needs=("k", "d", "offsets"), aggregation="roe",
                          baseline="fa", baseline_d1=True),
        CertificateRecord("dpa_star_roe", "DPA*+ROE", "003, Section 4.1 and Theorem 3.4", _cert_dpa_roe, aggregation="roe", baseline="dpa"),
        CertificateRecord(
            "bagging", "bagging (Jia)", "002, Theorem 1 with SimuEM (eqs. 5-6)", _cert_bagging,
            needs=("train_size", "k"), unit="modified+deleted+inserted (Jia B(D, r))", parameters=("alpha",), known_clean=False,
        ),
        CertificateRecord(
            "random_selection", "random selection (Chen)", "004, Theorem 1, Corollaries 1-3", _cert_random_selection,
            needs=("train_size", "k", "scheme"), unit="poisoned samples (Chen poisoning model)",
            parameters=("alpha", "poisoning_model", "n_clean"),
        ),
        CertificateRecord("binary_kmeans", "App. B 2-means", "000, Appendix B (closed form)", _cert_binary_kmeans, needs=("binary_kmeans",)),
    )
}


# ---------------------------------------------------------------------------------------------- schemes


def _view_models(scores: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    return scores


def _view_partition_mean(scores: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    k, d = _need(meta, ("k", "d"), FLAGS)
    return certify.dpa_star_logits(scores, int(k), int(d))


#: View name -> function(scores, meta) -> the voters' logits the certificate reads.
VIEWS: dict[str, Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]] = {
    "models": _view_models,
    "partition_mean": _view_partition_mean,
}


@dataclass(frozen=True)
class Scheme:
    """A partition or selection scheme: what it trains, and what one poisoned sample can reach.

    ``certificates`` maps each certificate valid under the footprint to the view of the scores it
    is computed on (the first is the scheme's default). ``models`` says how many base models the
    scheme makes: ``"k"``, ``"kd"`` or ``"T"`` (the ``n_models`` random selections). ``attack``
    is how the poison-and-retrain check attacks it within a radius (``"insert"`` near-copies of
    the target, ``"flip"`` labels), ``None`` for the stochastic schemes.

    Behaviour (:mod:`poisoncert.splits`): ``split(h, images, order, k, d, offsets)`` builds a
    deterministic scheme's training sets, ``select(rng, n_p, n_s)`` draws one random selection.
    ``buckets``: the hash splits into k (or ``"kd"``) buckets, each at most the training set;
    ``with_replacement``: a selection may be larger than the training set; ``k_is_m``: k is the
    training-set size (App. B); ``n_classes``: the datasets it works on have that many classes;
    ``offsets``: it takes FA's spread offsets R. Report: ``labelled_as_scheme`` are the
    certificates whose results carry the scheme's own label (SS-DPA; DPA* = DPA on the
    seed-averaged partitions); ``roe_methods`` (certificate -> label) are its methods in ROE
    Figs. 2-3, whose DPA baseline is this scheme's own ensemble with d = 1 when
    ``roe_baseline_d1`` (FA), else the first ROE method's (plain DPA).
    """

    name: str
    label: str
    paper: str
    footprint: str
    unit: str
    certificates: Mapping[str, str]
    models: str
    uses_d: bool = False
    trains: bool = True
    attack: str | None = None
    split: Callable[..., tuple[list[np.ndarray], list[int]]] | None = None
    select: Callable[[np.random.Generator, int, int], np.ndarray] | None = None
    buckets: str = "k"
    with_replacement: bool = False
    k_is_m: bool = False
    n_classes: int | None = None
    offsets: bool = False
    labelled_as_scheme: tuple[str, ...] = ()
    roe_methods: Mapping[str, str] = field(default_factory=dict)
    roe_baseline_d1: bool = False
    #: the selection's size is itself random (binomial: Chen Fig. 5 draws the sizes' distribution)
    random_size: bool = False

    @property
    def selection(self) -> bool:
        return self.models == "T"

    def n_split(self, k: int, d: int = 1) -> int:
        """How many parts the training set is cut into (k, or k*d for FA's split buckets); a
        selection's size n_s = k. It must not exceed the training set unless ``with_replacement``.

        >>> SCHEMES["fa"].n_split(4, 3), SCHEMES["dpa_star"].n_split(4, 3)
        (12, 4)
        """
        return int(k) * int(d) if self.buckets == "kd" else int(k)

    def partition(self, h: np.ndarray, images: np.ndarray, order: np.ndarray, k: int, d: int = 1,
                  offsets: list[int] | None = None) -> tuple[list[np.ndarray], list[int]]:
        """Every base model's members (canonical order) and the spread offsets used (FA), by ``split``."""
        if self.split is None:
            raise PoisonCertError(f"scheme '{self.name}' draws random selections (make_selections), it does not partition")
        return self.split(h, images, order, k, d, offsets)

    @property
    def default_certificate(self) -> str:
        return next(iter(self.certificates))

    def n_models(self, k: int, d: int = 1, t: int | None = None) -> int:
        """Number of base models, known from the config alone (``t`` = T for random selection)."""
        if self.models == "k":
            return int(k)
        if self.models == "kd":
            return int(k) * int(d)
        if t is None or int(t) < 1:
            raise PoisonCertError(f"scheme '{self.name}' needs the number of base models T >= 1 (n_models), got {t}")
        return int(t)

    def view(self, certificate_name: str) -> str:
        """The view a certificate is computed on; refuses a certificate this footprint does not support."""
        certificate(certificate_name)
        if certificate_name not in self.certificates:
            raise PoisonCertError(
                f"certificate '{certificate_name}' is not sound for a '{self.name}' ensemble ({self.footprint}); "
                f"allowed: {', '.join(self.certificates)}"
            )
        return self.certificates[certificate_name]

    def poison_reach(self, certificate_name: str, meta: Mapping[str, Any], n_voters: int) -> np.ndarray:
        """What one poison reaches, for collective certificates (:func:`poisoncert.certify.collective`):
        an (n_units, width) array of the voter indices (in the certificate's view) each unit reaches.

        One voter per poison for the one-partition footprints (DPA, SS-DPA: one label flip, DPA*: one
        partition of the partition-mean view); for FA (its certificate needs the offsets R) split bucket j reaches the d models
        (j + r) mod kd, r in R. Refuses what has no collective certificate here (random selections,
        the ROE certificates).

        >>> SCHEMES["fa"].poison_reach("fa", {"k": 2, "d": 2, "offsets": [0, 3]}, 4).tolist()
        [[0, 3], [1, 0], [2, 1], [3, 2]]
        >>> SCHEMES["dpa_star"].poison_reach("dpa", {"k": 3, "d": 2}, 3).ravel().tolist()
        [0, 1, 2]
        """
        self.view(certificate_name)
        if self.selection or certificate_name not in COLLECTIVE_CERTIFICATES:
            raise PoisonCertError(
                f"no collective certificate for '{certificate_name}' on a '{self.name}' ensemble; "
                f"supported: {', '.join(c for c in COLLECTIVE_CERTIFICATES if c in self.certificates) or 'none for this scheme'}"
            )
        if "offsets" not in certificate(certificate_name).needs:  # the FA layout: one split bucket, d models
            return np.arange(int(n_voters), dtype=np.int64)[:, None]
        k, d, offsets = _fa_layout(meta)
        kd = int(k) * int(d)
        if kd != int(n_voters):
            raise PoisonCertError(f"an FA ensemble with k = {k}, d = {d} has {kd} base models, the scores hold {n_voters}")
        return (np.arange(kd, dtype=np.int64)[:, None] + np.asarray(offsets, dtype=np.int64)[None, :]) % kd


#: Certificates with a collective counterpart (:meth:`Scheme.poison_reach`): plurality votes under the
#: scheme's reach (the ROE certificates are not supported: docs/collective.md).
COLLECTIVE_CERTIFICATES = ("dpa", "fa")

_SELECTION_FOOTPRINT = "one poison is one sample in each random selection that drew it"

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("dpa", "DPA", "000, eq. 1 and Theorem 1", "one poison reaches one partition", INSERTIONS,
               {"dpa": "models", "dpa_roe": "models"}, "k", attack="insert", split=splits.split_dpa,
               roe_methods={"dpa": "DPA", "dpa_roe": "DPA+ROE"}),
        Scheme("ssdpa", "SS-DPA", "000, eq. 7 and Theorem 2", "one label flip reaches one sorted partition", LABEL_FLIPS,
               {"dpa": "models"}, "k", attack="flip", split=splits.split_ssdpa, labelled_as_scheme=("dpa",)),
        Scheme("fa", "FA", "001, Definition 1 and Theorem 2", "one poison reaches the d base models spread from one split bucket", INSERTIONS,
               {"fa": "models", "fa_roe": "models"}, "kd", uses_d=True, attack="insert", split=splits.split_fa, buckets="kd",
               offsets=True, roe_methods={"fa": "FA", "fa_roe": "FA+ROE"}, roe_baseline_d1=True),
        Scheme("dpa_star", "DPA*", "003, Section 4.1", "one poison reaches one partition, i.e. all d seeds trained on it", INSERTIONS,
               {"dpa_star_roe": "partition_mean", "dpa": "partition_mean"}, "kd", uses_d=True, attack="insert",
               split=splits.split_dpa_star, labelled_as_scheme=("dpa",), roe_methods={"dpa": "DPA*", "dpa_star_roe": "DPA*+ROE"}),
        Scheme("bagging", "bagging, with replacement", "002, Section 3; 004, eq. 8", _SELECTION_FOOTPRINT, INSERTIONS,
               {"bagging": "models", "random_selection": "models"}, "T", select=splits.select_with_replacement, with_replacement=True),
        Scheme("bagging_wor", "bagging, without replacement", "004, eq. 7", _SELECTION_FOOTPRINT, INSERTIONS,
               {"random_selection": "models"}, "T", select=splits.select_without_replacement),
        Scheme("binomial", "binomial selection", "004, eq. 9", _SELECTION_FOOTPRINT, INSERTIONS,
               {"random_selection": "models"}, "T", select=splits.select_binomial, random_size=True),
        Scheme("binary_kmeans", "App. B 2-means", "000, Appendix B", "one label flip reaches the one base classifier that owns the sample",
               LABEL_FLIPS, {"binary_kmeans": "models", "dpa": "models"}, "k", trains=False, attack="flip",
               split=splits.split_singletons, k_is_m=True, n_classes=2),
    )
}


# ---------------------------------------------------------------------------------------------- learners


@dataclass(frozen=True)
class Learner:
    """A base learner. ``sees_unlabeled_train``: it is fitted on every training image without labels
    (SS-DPA's extractor), so an inserted image reaches every base model: label flips only.
    ``extractor_archs``: the label-free extractor networks (``experiments.<name>.extractor.arch``)
    of a learner that trains one extractor per experiment (rule ``extractor``, whose file every
    train job reads, ``--extractor``), the first being its default; ``needs_extractor`` says
    whether it has any. ``extractor_defaults``: the learner's own extractor settings, filled in by
    :func:`poisoncert.config.validate_config` where a config leaves them out (the schema's defaults
    are RotNet's). ``config_key``: the experiment's config block of the learner's own per-partition
    settings (schema and dataclass), if any; the SS-DPA learners' heads are ``head``.
    ``poison_checked``: the workflow's poison check retrains it (rule ``poison_check``; the SS-DPA
    heads are covered by the registry's proofs in the tests, not yet by the workflow's check).

    >>> LEARNERS["simclr"].needs_extractor, LEARNERS["supervised"].needs_extractor
    (True, False)
    """

    name: str
    paper: str
    schemes: tuple[str, ...]
    sees_unlabeled_train: bool = False
    extractor_archs: tuple[str, ...] = ()
    extractor_defaults: Mapping[str, Any] = field(default_factory=dict)
    config_key: str | None = None
    #: the workflow's poison check (rule ``poison_check``) can retrain it exactly as the ensemble was trained
    poison_checked: bool = False
    #: App. B's classifier votes against its own label off its cluster, so a label flip towards
    #: either class can move its vote (the poison check's flip attack uses both directions)
    votes_off_cluster: bool = False

    def __post_init__(self) -> None:
        if self.needs_extractor and not self.sees_unlabeled_train:
            # the extractor is trained on the poisonable training images: an insertion reaches every model
            raise PoisonCertError(f"learner {self.name!r}: an extractor trained on the training images sees them unlabeled")

    @property
    def needs_extractor(self) -> bool:
        """Whether the learner trains a shared label-free extractor (rules: ``--extractor``)."""
        return bool(self.extractor_archs)


#: Learner ``simclr``'s extractor defaults (DPA code, ``SupContrast/train_embedding_cifar.sh`` and
#: ``main_supcon.py``: ResNet-18, batch 512, lr 0.5, cosine schedule with warm-up since the batch
#: exceeds 256, weight decay 1e-4, 1000 epochs, plain momentum 0.9; no pad-and-crop: its views are
#: random resized crops). The other keys keep the schema's defaults (temperature 0.5 among them).
SIMCLR_DEFAULTS: dict[str, Any] = {
    "arch": "resnet18", "epochs": 1000, "batch_size": 512, "lr": 0.5, "weight_decay": 1e-4, "nesterov": False,
    "lr_schedule": "cosine", "warmup_epochs": 10, "crop_pad": 0,
}


LEARNERS: dict[str, Learner] = {
    lr.name: lr
    for lr in (
        Learner("supervised", "the papers' networks, trained on the base model's own labelled set",
                ("dpa", "ssdpa", "fa", "dpa_star", "bagging", "bagging_wor", "binomial"), poison_checked=True),
        Learner("rotnet", "000, Section 2.3.1: label-free RotNet extractor on all unlabeled images + a head per partition",
                ("ssdpa", "dpa"), sees_unlabeled_train=True, extractor_archs=("nin", "light")),
        Learner("simclr", "000 (the DPA code's SS-DPA on CIFAR-10 / GTSRB): label-free SimCLR ResNet-18 on all unlabeled images + a head per partition",
                ("ssdpa", "dpa"), sees_unlabeled_train=True, extractor_archs=("resnet18",), extractor_defaults=SIMCLR_DEFAULTS),
        Learner("binary_kmeans", "000, Appendix B: 2-means on all unlabeled images + one labelled sample per base classifier",
                ("binary_kmeans",), sees_unlabeled_train=True, poison_checked=True, votes_off_cluster=True),
        Learner("frozen", "beyond the papers (issue 16, Lethal Dose Conjecture): the frozen RotNet features of 000, Section 2.3.1 "
                "+ a nearest-centroid or k-NN rule per partition (poisoncert.learners.frozen)",
                ("ssdpa", "dpa"), sees_unlabeled_train=True, extractor_archs=("nin", "light", "resnet18"), config_key="frozen",
                poison_checked=True),
    )
}


# ---------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset: its loader in :mod:`poisoncert.data`, sizes, classes and image shape (C, H, W).

    ``hflip_ok``: a horizontal flip keeps every label, so ``train.hflip`` is allowed (config
    validation refuses it elsewhere). The papers flip CIFAR-10 only (DPA / FA / ROE: NiN after
    Gidaris et al. 2018): a flipped digit is another glyph (MNIST, digits) and traffic signs carry
    left/right meanings (GTSRB). Fashion-MNIST's ten clothing classes are mirror-symmetric
    categories (a flipped left shoe is a shoe), so flips are allowed there too (not in the papers).
    """

    name: str
    loader: str
    n_train: int
    n_test: int
    n_classes: int
    image_shape: tuple[int, int, int]
    source: str
    embedded: bool = False
    files: tuple[str, ...] = field(default=())
    #: the dataset name the papers' tables use (``workflow/poisoncert/paper_results/*.csv``); "" = ``name``
    paper_name: str = ""
    #: partitions hash the original (unresized) images' pixel sums, as the DPA / FA references do
    #: for GTSRB; the poison check, which crafts poisons by their stored pixels, cannot attack them
    hashes_source_images: bool = False
    #: a mirrored image keeps its class (the papers flip CIFAR-10 only), so train.hflip is allowed
    hflip_ok: bool = False

    @property
    def paper_dataset(self) -> str:
        return self.paper_name or self.name


DATASETS: dict[str, DatasetRecord] = {
    r.name: r
    for r in (
        DatasetRecord("digits", "_digits", 1438, 359, 10, (1, 8, 8), "scikit-learn's bundled 8x8 digits, split 80/20", embedded=True),
        DatasetRecord("digits17", "_digits17", 289, 72, 2, (1, 8, 8), "the 1s and 7s of digits (labels 0/1)", embedded=True),
        DatasetRecord("mnist", "_mnist", 60000, 10000, 10, (1, 28, 28), "torchvision MNIST"),
        DatasetRecord("fashion_mnist", "_fashion_mnist", 60000, 10000, 10, (1, 28, 28),
                      "Fashion-MNIST: torchvision's FashionMNIST layout, else Debian's dataset-fashion-mnist", hflip_ok=True),
        DatasetRecord("mnist17", "_mnist17", 13007, 2163, 2, (1, 28, 28), "the 1s and 7s of MNIST (DPA App. B)"),
        DatasetRecord("cifar10", "_cifar10", 50000, 10000, 10, (3, 32, 32), "torchvision CIFAR-10", hflip_ok=True),
        DatasetRecord("gtsrb", "_gtsrb", 26640, 12630, 43, (3, 32, 32),
                      "torchvision's GTSRB splits (GTSRB-Training_fixed.zip: 26,640 training images), resized to 32x32, hashed on the originals",
                      hashes_source_images=True),
        DatasetRecord("gtsrb48", "_gtsrb48", 39209, 12630, 43, (3, 48, 48),
                      "the official GTSRB final training set (39,209) and test set, resized to 48x48 and hashed on the "
                      "originals as the DPA / FA references", paper_name="gtsrb", hashes_source_images=True),
    )
}


# ---------------------------------------------------------------------------------------------- look-ups


def _lookup(table: Mapping[str, Any], name: Any, what: str) -> Any:
    if not isinstance(name, str) or name not in table:
        raise PoisonCertError(f"unknown {what} {name!r}; choose one of {', '.join(table)}")
    return table[name]


def scheme(name: Any) -> Scheme:
    """The scheme record ``name`` (one-line error naming the known ones)."""
    return _lookup(SCHEMES, name, "scheme")


def certificate(name: Any) -> CertificateRecord:
    """The certificate record ``name``."""
    return _lookup(CERTIFICATES, name, "certificate")


def certificate_parameters(name: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters certificate ``name`` is computed with on an ensemble of metadata ``meta``.

    >>> certificate_parameters("random_selection", {"alpha": 0.01, "experiment": {"poisoning_model": "P1"}})
    {'alpha': 0.01, 'poisoning_model': 'P1', 'n_clean': 0}
    >>> certificate_parameters("dpa", {})
    {}
    """
    return {p: _meta_value(meta, p, PARAMETER_DEFAULTS[p]) for p in certificate(name).parameters}


def dataset(name: Any) -> DatasetRecord:
    """The dataset record ``name``."""
    return _lookup(DATASETS, name, "dataset")


def learner(name: Any) -> Learner:
    """The learner record ``name``."""
    return _lookup(LEARNERS, name, "learner")


def default_learner(scheme_name: str) -> str:
    """The learner a ``scheme_name`` ensemble has when none is named: the first record that builds
    it (``supervised``; App. B's 2-means is the only learner of ``binary_kmeans``).

    >>> default_learner("fa"), default_learner("binary_kmeans")
    ('supervised', 'binary_kmeans')
    """
    s = scheme(scheme_name)
    return next(lr.name for lr in LEARNERS.values() if s.name in lr.schemes)


def threat_unit(scheme_name: str, learner_name: str = "supervised") -> str:
    """The unit of a deterministic certificate on this ensemble: the scheme's, or label flips when
    the learner sees the unlabeled training images (an insertion would reach every model)."""
    s, lr = scheme(scheme_name), learner(learner_name)
    return LABEL_FLIPS if lr.sees_unlabeled_train else s.unit


def recorded(meta: Mapping[str, Any], key: str) -> Any:
    """The value of ``key`` the scores metadata records, at the top level or in its recorded
    ``experiment`` config; the two must agree (a contradiction is refused, never resolved to
    either reading: the less safe one would inflate the radii).

    >>> recorded({"scheme": "fa", "experiment": {"scheme": "fa"}}, "scheme")
    'fa'
    >>> recorded({"scheme": "dpa", "experiment": {"scheme": "ssdpa"}}, "scheme")
    Traceback (most recent call last):
    ...
    poisoncert.errors.PoisonCertError: the scores metadata contradicts itself: scheme = 'dpa' at the top level but 'ssdpa' in its recorded experiment; fix the file (which ensemble was it?)
    """
    if not isinstance(meta, Mapping):
        raise PoisonCertError(f"the scores metadata must be a mapping (a dict, e.g. {{'scheme': 'dpa'}}), got {type(meta).__name__}")
    experiment = meta.get("experiment")
    top, inner = meta.get(key), (experiment.get(key) if isinstance(experiment, Mapping) else None)
    if top is not None and inner is not None and top != inner:
        raise PoisonCertError(
            f"the scores metadata contradicts itself: {key} = {top!r} at the top level but {inner!r} in its recorded experiment; "
            "fix the file (which ensemble was it?)"
        )
    return top if top is not None else inner


def _agree(meta: Mapping[str, Any], key: str, given: Any, what: str) -> None:
    """Refuse an argument that contradicts what the scores metadata records."""
    value = recorded(meta, key)
    if given is not None and value is not None and value != given:
        raise PoisonCertError(
            f"{what} {given!r} contradicts the scores metadata, which records {key} = {value!r}: the metadata's threat model is the one "
            "the ensemble was built under; pass the recorded value (or fix the metadata)"
        )


def ensemble_threat(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The threat model a scores file is certified under: its scheme and learner, or the default.

    A file whose metadata names no scheme gets :data:`DEFAULT_SCHEME` (one base model per
    poisoned sample) and ``assumed: True``; one that names no learner gets the scheme's default
    learner (:func:`default_learner`) and ``learner_assumed: True``.
    The footprint is stated in the threat unit (a label-flip learner's poison is a label flip).
    The certificate summary records this dict.

    >>> t = ensemble_threat({"scheme": "dpa", "learner": "frozen"})
    >>> t["footprint"], t["unit"], t["learner_assumed"]
    ('one label flip reaches one partition', 'label flips', False)
    >>> ensemble_threat({"scheme": "dpa"})["learner_assumed"]
    True
    """
    name = recorded(meta, "scheme")
    assumed = name is None
    s = scheme(DEFAULT_SCHEME if assumed else name)
    lname = recorded(meta, "learner")
    learner_assumed = lname is None
    lr = learner(default_learner(s.name) if learner_assumed else lname)
    if s.name not in lr.schemes:
        raise PoisonCertError(f"learner '{lr.name}' does not build '{s.name}' ensembles (it builds {', '.join(lr.schemes)})")
    unit = threat_unit(s.name, lr.name)
    footprint = s.footprint
    if unit == LABEL_FLIPS and footprint.startswith("one poison "):
        footprint = "one label flip " + footprint[len("one poison "):]
    return {"scheme": s.name, "learner": lr.name, "footprint": footprint, "unit": unit, "assumed": assumed, "learner_assumed": learner_assumed}


def deterministic_pairs() -> list[tuple[str, str]]:
    """Every (scheme, certificate) pair with a deterministic certificate: each needs a poison-and-retrain proof."""
    return [(s.name, c) for s in SCHEMES.values() for c in s.certificates if CERTIFICATES[c].deterministic]


def scores_view(scheme_name: str, certificate_name: str, scores: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """The voters' logits ``certificate_name`` reads on a ``scheme_name`` ensemble (refuses unsound pairs)."""
    return VIEWS[scheme(scheme_name).view(certificate_name)](scores, meta)


def check_layout(scheme_name: str, scores: np.ndarray, meta: Mapping[str, Any]) -> None:
    """The scores must hold as many base models as the scheme makes from the recorded k, d (T)."""
    s = scheme(scheme_name)
    d = meta.get("d")
    if not s.uses_d and d not in (None, 1):
        raise PoisonCertError(f"scheme '{s.name}' has no d, but the scores metadata records d = {d}; is the scheme right (fa, dpa_star use d)?")
    k, t = meta.get("k"), meta.get("n_models")
    expected = s.n_models(k, d or 1, t) if (k is not None and not s.selection) or (s.selection and t is not None) else None
    if expected is not None and scores.shape[1] != expected:
        what = f"T = {t}" if s.selection else f"k = {k}" + (f", d = {d or 1}" if s.uses_d else "")
        raise PoisonCertError(f"the scores hold {scores.shape[1]} base models, but a '{s.name}' ensemble with {what} has {expected}; check the scheme, k and d")


def compute(scheme_name: str, certificate_name: str, scores: np.ndarray, meta: Mapping[str, Any], learner_name: str | None = None) -> certify.Certificate:
    """Certificate ``certificate_name`` of a ``scheme_name`` ensemble, under its threat footprint and unit.

    The one place a certificate meets an ensemble: the certify stage, the poison-and-retrain
    check and the tests all call it. The learner (for the unit) defaults to the one ``meta``
    records; the number of models must match the recorded k, d (:func:`check_layout`).

    >>> s = np.zeros((1, 4, 3), np.float32); s[..., 0] = 1      # k=2, d=2: 4 seed models vote 0
    >>> int(compute("dpa_star", "dpa", s, {"k": 2, "d": 2}).radius[0])   # 2 partitions, not 4 voters
    1
    """
    rec = certificate(certificate_name)
    scheme(scheme_name)
    _agree(meta, "scheme", scheme_name, "scheme")
    _agree(meta, "learner", learner_name, "learner")
    meta = {**meta, "scheme": scheme_name}  # the certificate reads the scheme it is asked for, never a guess
    scores = certify.check_scores(scores)
    check_layout(scheme_name, scores, meta)
    view = scores_view(scheme_name, certificate_name, scores, meta)
    cert = rec.compute(view, meta)
    if learner_name is None:
        learner_name = ensemble_threat(meta)["learner"]
    return replace(cert, unit=rec.unit or threat_unit(scheme_name, learner_name))


def predict(scheme_name: str, certificate_name: str, scores: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """The ensemble's prediction that ``certificate_name`` certifies: its aggregation rule on its view."""
    rec = certificate(certificate_name)
    _agree(meta, "scheme", scheme_name, "scheme")
    meta = {**meta, "scheme": scheme_name}
    view = scores_view(scheme_name, certificate_name, certify.check_scores(scores), meta)
    if rec.aggregation == "roe":
        return certify.roe_predict(view)[0]
    return certify.plurality(certify.vote_counts(certify.votes(view), view.shape[2]))
