"""Size limits of a config: what the schema cannot bound on its own, checked before any job.

Every integer field of the config schema has a ``maximum`` (a test walks the schema); the sizes
below depend on several fields at once, so :func:`check_sizes` checks them after the schema, each
with one line naming the key. The bounds sit well above the papers' largest settings (FA k = 1200,
d = 32: 38,400 base models in one ensemble, 68,400 in one config; Jia et al.: 1,000 selections of
2,000 samples) and well below what exhausts a machine: without them ``n_models: 100000000`` made
``snakemake -n`` exceed 8 GB and a minibatch padded to ``batch_size: 100000000`` got the train job
killed by the out-of-memory killer with an empty log. The engine pads a minibatch to ``batch_size``
rows and a group to ``group_size`` models whatever the real sizes are, because the shapes are part
of a base model's identity (they decide the kernels' rounding, :mod:`poisoncert.train`): padding to
the real sizes would make a model's bits depend on its neighbours' sizes, which the certificates
forbid. So the sizes are bounded instead: ``batch_size`` by the largest training set the experiment
can have (here), ``group_size`` by the schema (4,096 models).

>>> check_sizes({"shard_size": 16, "experiments": {"x": {"dataset": "digits", "scheme": "bagging", "k": [50],
...     "d": [1], "n_models": 100, "clean_count": 0, "balance_size": None, "train": {"batch_size": 16, "group_size": 8},
...     "extractor": {"batch_size": 128}, "head": {}, "learner": "supervised"}}})
"""

from __future__ import annotations

from typing import Any

from . import registry
from .errors import PoisonCertError
from .partition import n_models

__all__ = ["MAX_GROUP", "MAX_MODELS", "MAX_TRAIN_JOBS", "MAX_SELECTED", "check_ensemble", "check_sizes"]

#: Base models in one ensemble (FA k = 1200, d = 32 has 38,400).
MAX_MODELS = 100_000
#: Train jobs of one config, all ensembles together (one Snakemake job each: the DAG's size).
MAX_TRAIN_JOBS = 100_000
#: Models vectorised in one group (the schema's maximum of train.group_size; 0 = the whole shard).
MAX_GROUP = 4096
#: Training-set indices one ensemble's partitions file holds (the sum of its sets' sizes; 8 bytes each).
MAX_SELECTED = 200_000_000


def _largest_set(exp: dict[str, Any], n_train: int) -> int:
    """The largest training set a base model of ``exp`` can have (a bound, from the config alone)."""
    rec = registry.scheme(exp["scheme"])
    if not rec.selection:
        return n_train
    return max(n_train, max(exp["k"]) + exp["clean_count"], exp["balance_size"] or 0)


def check_ensemble(scheme: str, k: int, d: int, n_selections: int = 0, clean_count: int = 0, key: str = "") -> int:
    """The number of base models of one ensemble, refused with one line above :data:`MAX_MODELS`
    (or, for the selection schemes, above :data:`MAX_SELECTED` indices in all). ``key`` prefixes the
    message with the config key (``config key experiments.NAME``); the partition stage checks its
    command line with it too.

    >>> check_ensemble("fa", 1200, 32)
    38400
    >>> check_ensemble("dpa_star", 1000, 1000)
    Traceback (most recent call last):
    ...
    poisoncert.errors.PoisonCertError: k x d: k=1000, d=1000 makes 1000000 base models in one ensemble; at most 100000 are allowed
    """
    rec = registry.scheme(scheme)
    t = n_models(scheme, k, d, n_selections)
    where = f"{key}." if key else ""
    if t > MAX_MODELS:
        what = "n_models" if rec.selection else "k" if d == 1 else "k x d"
        raise PoisonCertError(f"{where}{what}: k={k}, d={d} makes {t} base models in one ensemble; at most {MAX_MODELS} are allowed")
    if rec.selection and t * (k + clean_count) > MAX_SELECTED:
        raise PoisonCertError(
            f"{where}n_models: {t} selections of {k + clean_count} samples hold {t * (k + clean_count)} indices; "
            f"at most {MAX_SELECTED} are allowed (fewer models or a smaller k)"
        )
    return t


def check_sizes(cfg: dict[str, Any]) -> None:
    """Refuse, with one line naming the key, sizes that would allocate without bound (a validated config)."""
    jobs = 0
    for name, exp in cfg["experiments"].items():
        key = f"config key experiments.{name}"
        rec = registry.scheme(exp["scheme"])
        n_train = registry.dataset(exp["dataset"]).n_train
        largest_ensemble = 0
        for k in exp["k"]:
            for d in exp["d"]:
                t = check_ensemble(exp["scheme"], k, d, exp["n_models"], exp["clean_count"], key)
                largest_ensemble = max(largest_ensemble, t)
                if rec.trains:
                    jobs += -(-t // cfg["shard_size"])
        if exp["clean_count"] > n_train:
            raise PoisonCertError(f"{key}.clean_count: {exp['clean_count']} is more than the {exp['dataset']} training set ({n_train} samples)")
        largest = _largest_set(exp, n_train)
        train = exp["train"]
        if train["batch_size"] > largest:
            raise PoisonCertError(
                f"{key}.train.batch_size: {train['batch_size']} is larger than any training set of this experiment can be ({largest} samples); "
                "every minibatch is padded to batch_size, so choose at most that"
            )
        widest = min(cfg["shard_size"], largest_ensemble)  # models in one shard
        if train["group_size"] == 0 and widest > MAX_GROUP:
            raise PoisonCertError(
                f"{key}.train.group_size: 0 vectorises the whole shard, here {widest} models in one group; "
                f"at most {MAX_GROUP} are allowed: set group_size (e.g. 8) or a smaller shard_size"
            )
        if registry.learner(exp["learner"]).needs_extractor:
            batches = {"extractor.batch_size": exp["extractor"]["batch_size"]}
            batches.update({f"head.{kind}.batch_size": h["batch_size"] for kind, h in exp["head"].items() if isinstance(h, dict) and "batch_size" in h})
            for field, size in batches.items():
                if size > n_train:
                    raise PoisonCertError(f"{key}.{field}: {size} is larger than the {exp['dataset']} training set ({n_train} samples); choose at most that")
    if jobs > MAX_TRAIN_JOBS:
        raise PoisonCertError(
            f"config: {jobs} train jobs in all (base models / shard_size over every ensemble); at most {MAX_TRAIN_JOBS} are allowed: "
            "raise shard_size or run fewer ensembles per config"
        )
