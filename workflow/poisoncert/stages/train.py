"""``poisoncert train`` (rule ``train``): one shard of base models, their test-set logits."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np

from ..data import atomic_savez, read_dataset
from .. import registry
from ..errors import PoisonCertError
from ..partition import read_partitions
from ._common import add_device_arguments, json_object, train_config

HELP = "train one shard of base models, write their test logits"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("--partitions", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shard-size", type=int, required=True)
    p.add_argument("--train-config", type=json_object, default={}, help="JSON of TrainConfig fields")
    add_device_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--extractor", default=None, help="SS-DPA: feature extractor file (heads are trained on its features)")
    p.add_argument("--learner", default=None, choices=[n for n, lr in registry.LEARNERS.items() if lr.config_key],
                   help="with --extractor: a learner other than the extractor's own heads (frozen: nearest centroid / k-NN on its features)")
    p.add_argument("--learner-config", type=json_object, default={}, help="JSON of the learner's own settings (frozen: FrozenConfig fields)")
    p.add_argument("--head-config", type=json_object, default={},
                   help="SS-DPA: JSON of HeadConfig fields (kind, nin_block, linear, logistic); {} = kind auto, the extractor's own head")
    p.add_argument("--phase2", default=None, help="2-phase ensembles (Chen et al. Alg. 3): the shared phi_2 file")


def shard_range(shard: int, shard_size: int, n_models: int) -> range:
    """Models of shard ``shard``: fixed by index and shard_size alone, never by data."""
    if shard_size < 1:
        raise PoisonCertError(f"shard_size must be >= 1, got {shard_size}")
    first = shard * shard_size
    if shard < 0 or first >= n_models:
        raise PoisonCertError(f"shard {shard} is out of range: {n_models} models in shards of {shard_size}")
    return range(first, min(first + shard_size, n_models))


def train(dataset_file: str, partitions_file: str, out: str, shard: int, shard_size: int, train_fields: dict[str, Any], device: str = "auto",
          threads: int = 1, progress: bool = True, extractor_file: str | None = None, phase2_file: str | None = None,
          head_fields: dict[str, Any] | None = None, learner: str | None = None, learner_fields: dict[str, Any] | None = None) -> None:
    """Train the base models of one shard and write their test-set logits.

    With ``extractor_file`` each base model is fitted on the shared label-free extractor's
    features of its own partition's samples and labels only: a head (SS-DPA, learners rotnet and
    simclr; ``head_fields``: :class:`poisoncert.semisup.HeadConfig`) or, with ``learner`` frozen,
    the nearest-centroid / k-NN rule of :mod:`poisoncert.frozen` (settings ``learner_fields``).
    For a ``two_phase``
    partitions file (Chen et al. Algorithm 3) each phi_1^i is trained on its set with the clean
    classes merged into one virtual class, and the logits written are the one-hot votes of
    phi_2(phi_1^i(x)) with the shared phi_2 of ``phase2_file``.
    """
    import torch

    from ..train import device_name, resolve_device, runtime_fingerprint, train_shard

    torch.set_num_threads(threads)
    ds = read_dataset(dataset_file)
    parts, pmeta = read_partitions(partitions_file)
    if pmeta["dataset_hash"] != ds.meta()["content_hash"]:
        raise PoisonCertError(f"{partitions_file} was made from other data than {dataset_file}; rerun the partition step")
    two_phase = bool(pmeta.get("two_phase"))
    if two_phase != (phase2_file is not None):
        raise PoisonCertError(
            f"{partitions_file} is a 2-phase ensemble; pass its phase-2 model (--phase2)" if two_phase
            else f"--phase2 is for 2-phase ensembles; {partitions_file} is not one"
        )
    models = shard_range(shard, shard_size, parts.n_models)
    labels, n_classes = ds.train_labels, ds.n_classes
    if two_phase:
        from ..two_phase import phase1_labels

        labels, n_classes = phase1_labels(ds.train_labels, ds.n_classes, pmeta["clean_classes"])
    seeds = [int(parts.seeds[m]) for m in models]
    cfg = train_config(train_fields, threads)
    dev = resolve_device(device)
    extra: dict[str, np.ndarray] = {}
    extra_meta: dict[str, Any] = {}
    if learner is not None and extractor_file is None:
        raise PoisonCertError(f"learner {learner} works on the features of a label-free extractor; pass --extractor")
    if extractor_file is not None:
        from ..semisup import HeadConfig, extractor_config, train_base_heads
        from .extractor import read_extractor

        state = read_extractor(extractor_file)
        if state.get("dataset_hash") != pmeta["dataset_hash"]:
            raise PoisonCertError(f"{extractor_file} was trained on other data; delete it and rerun")
        members = [parts.members(m) for m in models]
        if learner == "frozen":
            from ..frozen import FrozenConfig, fit_predict, frozen_features

            try:
                fcfg = FrozenConfig(**(learner_fields or {}))
            except TypeError as exc:
                raise PoisonCertError(f"bad frozen-learner configuration: {exc}") from None
            ftr, fte = frozen_features(state, ds.train_images, ds.test_images, dev.type)
            logits = fit_predict(ftr, ds.train_labels, members, seeds, fte, ds.n_classes, fcfg)
            extra_meta = {"frozen": dataclasses.asdict(fcfg)}
        else:
            ext = extractor_config(state)
            head = HeadConfig.from_dict(head_fields or {})
            learner = ext.learner
            logits = train_base_heads(state, ds.train_images, ds.train_labels, members, seeds, ds.test_images,
                                      ds.n_classes, head, device=dev.type)
            extra_meta = {"head_kind": head.resolved(ext.arch), "head": dataclasses.asdict(head)}
    else:
        train_sets = [(ds.train_images[parts.members(m)], labels[parts.members(m)]) for m in models]
        logits = train_shard(train_sets, seeds, ds.test_images, n_classes, cfg, device=dev.type, progress=progress)
        if two_phase:
            from ..two_phase import combine
            from .phase2 import read_phase2

            phase2_logits = read_phase2(phase2_file, pmeta["dataset_hash"], pmeta["clean_classes"])
            extra["phase1_logits"] = np.asarray(logits, dtype=np.float32)
            logits = combine(logits, phase2_logits, ds.n_classes, pmeta["clean_classes"])
    logits = np.asarray(logits, dtype=np.float32)
    bad = [models.start + i for i in range(len(logits)) if not np.isfinite(logits[i]).all()]
    if bad:
        raise PoisonCertError(
            f"base models {bad[:10]}{'...' if len(bad) > 10 else ''} of shard {shard} produced non-finite logits (training diverged); "
            "lower train.lr or raise train.weight_decay, then rerun"
        )
    meta = {
        "models": [models.start, models.stop],
        "seeds": seeds,
        "shard_size": shard_size,
        "device": device_name(dev),
        "threads": threads,
        "torch": torch.__version__,
        "train": dataclasses.asdict(cfg),
        "runtime": runtime_fingerprint(cfg, dev.type),
        "learner": learner if extractor_file else ("two_phase" if two_phase else "supervised"),
        "dataset_hash": pmeta["dataset_hash"],
        **extra_meta,
    }
    atomic_savez(out, logits=logits, meta=np.array(json.dumps(meta)), **extra)


def main(args: argparse.Namespace) -> None:
    train(args.dataset_file, args.partitions, args.out, args.shard, args.shard_size, args.train_config, args.device, args.threads,
          not args.no_progress, args.extractor, args.phase2, args.head_config, args.learner, args.learner_config)
