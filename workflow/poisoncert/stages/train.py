"""``poisoncert train`` (rule ``train``): one shard of base models, their test-set logits."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np

from ..data import atomic_savez, read_dataset
from ..errors import PoisonCertError
from ..learners import Shard, implementation
from ..learners.base import TWO_PHASE
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
    p.add_argument("--learner", default=None, help="the learner (poisoncert.learners; default: the --extractor's own heads, "
                   "2-phase with --phase2, else supervised); frozen: nearest centroid / k-NN on the extractor's features")
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


def learner_name(learner: str | None, extractor_file: str | None, phase2_file: str | None) -> str:
    """The learner a train command names: ``--learner``, else the one whose extractor ``--extractor``
    is (the SS-DPA heads: rotnet, simclr), else Chen's 2-phase classifier with ``--phase2``, else
    the supervised engine (the rules' flags, unchanged since these learners were added)."""
    if learner is not None:
        return learner
    if extractor_file is not None:
        from ..learners.extractors import read_extractor
        from ..learners.extractors import extractor_config

        return extractor_config(read_extractor(extractor_file)).learner
    return TWO_PHASE if phase2_file is not None else "supervised"


def train(dataset_file: str, partitions_file: str, out: str, shard: int, shard_size: int, train_fields: dict[str, Any], device: str = "auto",
          threads: int = 1, progress: bool = True, learner: str = "supervised", upstream: dict[str, str] | None = None,
          options: dict[str, Any] | None = None) -> None:
    """Train the base models of one shard with ``learner`` and write their test-set logits.

    Each base model is fitted by the learner's implementation (:mod:`poisoncert.learners`) on its
    own partition's samples and seed: the supervised engine, Chen's 2-phase classifier (reads
    ``upstream["phase2"]``), the SS-DPA heads or the frozen-feature rule on the shared label-free
    extractor (``upstream["extractor"]``; their settings: ``options``).
    """
    import torch

    from ..train import device_name, resolve_device, resolve_strategy, runtime_fingerprint

    torch.set_num_threads(threads)
    ds = read_dataset(dataset_file)
    parts, pmeta = read_partitions(partitions_file)
    if pmeta["dataset_hash"] != ds.meta()["content_hash"]:
        raise PoisonCertError(f"{partitions_file} was made from other data than {dataset_file}; rerun the partition step")
    impl = implementation(learner)
    upstream = {role: path for role, path in (upstream or {}).items() if path is not None}
    if pmeta.get("two_phase") and "phase2" not in impl.upstream:
        raise PoisonCertError(f"{partitions_file} is a 2-phase ensemble; pass its phase-2 model (--phase2)")
    stray = sorted(set(upstream) - set(impl.upstream))
    if stray:
        raise PoisonCertError(f"learner {impl.name} reads no {stray[0]} file; drop --{stray[0]}")
    models = shard_range(shard, shard_size, parts.n_models)
    seeds = [int(parts.seeds[m]) for m in models]
    cfg = train_config(train_fields, threads)
    dev = resolve_device(device)
    cfg = dataclasses.replace(cfg, strategy=resolve_strategy(cfg, dev))  # recorded resolved: part of the identity
    fit = impl.fit_predict(Shard(ds, [parts.members(m) for m in models], seeds, pmeta, cfg, dev.type, threads, progress, upstream,
                                 options or {}))
    logits, extra, extra_meta = fit.logits, fit.arrays, fit.meta
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
        "learner": impl.record,
        "dataset_hash": pmeta["dataset_hash"],
        **extra_meta,
    }
    atomic_savez(out, logits=logits, meta=np.array(json.dumps(meta)), **extra)


def main(args: argparse.Namespace) -> None:
    name = learner_name(args.learner, args.extractor, args.phase2)
    options = args.learner_config if args.learner is not None else args.head_config
    train(args.dataset_file, args.partitions, args.out, args.shard, args.shard_size, args.train_config, args.device, args.threads,
          not args.no_progress, name, {"extractor": args.extractor, "phase2": args.phase2}, options)
