"""``poisoncert aggregate`` (rule ``aggregate``): every shard's logits into one scores file."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from .. import registry
from ..config import LATER_TRAIN_DEFAULTS
from ..data import load_npz, read_dataset
from ..errors import PoisonCertError
from ..partition import read_partitions
from ..scores import scores_writer
from ._common import json_object

HELP = "gather shard logits into the scores file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("--partitions", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--experiment", type=json_object, default={}, help="JSON of the experiment's config (recorded)")
    p.add_argument("shards", nargs="+")


def aggregate(dataset_file: str, partitions_file: str, shard_files: list[str], out: str, experiment: dict[str, Any]) -> None:
    """Gather every shard's logits into the scores file, checking that nothing is missing or stale.

    Every shard must have been trained by the same runtime (torch build, device, threads, engine
    settings): a model's bits depend on it, so a mixture is refused, and the scores metadata
    records the one runtime all shards share.
    """
    ds = read_dataset(dataset_file)
    parts, pmeta = read_partitions(partitions_file)
    n = parts.n_models
    meta: dict[str, Any] = {}  # filled in before the writer assembles the file
    with scores_writer(out, (len(ds.test_labels), n, ds.n_classes), ds.test_labels, meta) as scores:
        first = _gather(shard_files, scores, parts, pmeta, ds, partitions_file)
        meta.update(_meta(parts, pmeta, ds, first, experiment))
    print(f"aggregated {n} models x {len(ds.test_labels)} test samples into {out}")




def _identity(shard_meta: dict[str, Any]) -> tuple:
    """What must agree between the shards of one ensemble: runtime, training config (its later-added
    options filled in at their defaults) and learner."""
    train = shard_meta.get("train")
    if isinstance(train, dict):
        train = {**LATER_TRAIN_DEFAULTS, **train}
    return shard_meta.get("runtime"), train, shard_meta.get("learner"), shard_meta.get("frozen")


def _gather(shard_files, scores, parts, pmeta, ds, partitions_file) -> dict[str, Any]:
    """Copy every shard's logits into ``scores`` (n_test, n_models, C), one shard in memory at a time."""
    n = parts.n_models
    seen = np.zeros(n, dtype=bool)
    first: dict[str, Any] | None = None
    for f in shard_files:
        z = load_npz(f, "logits", ("logits", "meta"))
        m = json.loads(str(z["meta"]))
        if m["dataset_hash"] != pmeta["dataset_hash"]:
            raise PoisonCertError(f"{f} was trained on other data; delete it and rerun")
        a, b = m["models"]
        if z["logits"].shape != (b - a, len(ds.test_labels), ds.n_classes):
            raise PoisonCertError(f"{f} holds logits of shape {z['logits'].shape}, expected {(b - a, len(ds.test_labels), ds.n_classes)}; delete it and rerun")
        if list(m["seeds"]) != [int(s) for s in parts.seeds[a:b]]:
            raise PoisonCertError(f"{f} was trained with other seeds than {partitions_file} says; delete it and rerun")
        if first is None:
            first = {**m, "file": f}
        elif _identity(m) != _identity(first):
            raise PoisonCertError(
                f"{f} was trained by another runtime or training configuration than {first['file']} "
                f"({m.get('runtime')} vs {first.get('runtime')}); delete the stale shards and rerun"
            )
        scores[:, a:b] = np.transpose(z["logits"], (1, 0, 2))
        seen[a:b] = True
    if not seen.all():
        raise PoisonCertError(f"models {np.flatnonzero(~seen)[:10].tolist()}... have no logits among the {len(shard_files)} shard files")
    assert first is not None
    return first


def _meta(parts, pmeta, ds, first, experiment) -> dict[str, Any]:
    ran, asked = first.get("learner"), experiment.get("learner")
    if asked and ran in registry.LEARNERS and ran != asked:
        # e.g. a learner whose train jobs need the extractor, run without --extractor/--learner:
        # the scores would be another learner's under this experiment's threat model
        raise PoisonCertError(
            f"{first['file']} was trained by learner '{ran}', but the experiment asks for '{asked}'; "
            "the train rule must pass that learner's flags (rules/common.smk _train_args); delete the shards and rerun"
        )
    return {
        **parts.meta(),
        "seeds": parts.seeds.tolist(),
        "dataset": ds.name,
        "dataset_hash": pmeta["dataset_hash"],
        "n_classes": ds.n_classes,
        "learner": experiment.get("learner") or (first.get("learner") if first.get("learner") in registry.LEARNERS else "supervised"),
        "partition_sizes": parts.sizes().tolist(),
        "shard_size": first["shard_size"],
        "device": first["device"],
        "threads": first["threads"],
        "torch": first["torch"],
        "train": first["train"],
        "runtime": first.get("runtime"),
        "experiment": experiment,
    }


def main(args: argparse.Namespace) -> None:
    aggregate(args.dataset_file, args.partitions, args.shards, args.out, args.experiment)
