"""``poisoncert phase2`` (rule ``phase2``): Chen et al.'s shared 2nd-phase classifier phi_2."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np

from ..data import atomic_savez, read_dataset
from ..learners.two_phase import read_phase2
from ._common import add_device_arguments, int_list, json_object, train_config

__all__ = ["phase2", "read_phase2"]

HELP = "train Chen et al.'s shared 2nd-phase classifier phi_2 on the known-clean classes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--clean-classes", type=int_list, required=True)
    p.add_argument("--train-config", type=json_object, default={}, help="JSON of TrainConfig fields")
    p.add_argument("--seed", type=int, default=0)
    add_device_arguments(p)
    p.add_argument("--no-progress", action="store_true")


def phase2(dataset_file: str, out: str, clean_classes: list[int], train_fields: dict[str, Any], seed: int = 0, device: str = "auto",
           threads: int = 1, progress: bool = True) -> None:
    """Chen et al. Algorithm 3, line 8: train the shared phi_2 on D^c (the known-clean classes) only.

    Writes ``logits`` (n_test, #clean classes), the clean classes and metadata. The train step of a
    ``two_phase`` ensemble combines these with every phi_1^i (:func:`poisoncert.two_phase.combine`).
    """
    import torch

    from ..train import device_name, resolve_device, runtime_fingerprint, train_shard
    from ..two_phase import phase2_labels, split_classes

    torch.set_num_threads(threads)
    ds = read_dataset(dataset_file)
    _, clean = split_classes(ds.n_classes, clean_classes)
    mask = np.isin(ds.train_labels, clean)
    y2, n2 = phase2_labels(ds.train_labels[mask], ds.n_classes, clean)
    cfg = train_config(train_fields, threads)
    dev = resolve_device(device)
    logits = train_shard([(ds.train_images[mask], y2)], [int(seed)], ds.test_images, n2, cfg, device=dev.type, progress=progress)[0]
    meta = {
        "clean_classes": clean.tolist(),
        "n_train": int(mask.sum()),
        "seed": int(seed),
        "device": device_name(dev),
        "threads": threads,
        "torch": torch.__version__,
        "train": dataclasses.asdict(cfg),
        "runtime": runtime_fingerprint(cfg, dev.type),
        "dataset_hash": ds.meta()["content_hash"],
    }
    atomic_savez(out, logits=np.asarray(logits, dtype=np.float32), clean_classes=clean, meta=np.array(json.dumps(meta)))
    on_clean = np.isin(ds.test_labels, clean)
    acc = float((clean[np.argmax(logits, axis=1)] == ds.test_labels)[on_clean].mean()) if on_clean.any() else float("nan")
    print(f"phi_2 trained on {int(mask.sum())} known-clean samples of classes {clean.tolist()}: accuracy {acc:.4f} on their test samples")


def main(args: argparse.Namespace) -> None:
    phase2(args.dataset_file, args.out, args.clean_classes, args.train_config, args.seed, args.device, args.threads, not args.no_progress)
