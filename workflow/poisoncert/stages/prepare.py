"""``poisoncert prepare`` (rule ``prepare``): load a dataset into the canonical dataset file."""

from __future__ import annotations

import argparse
import os

from ..data import load_dataset, save_dataset

HELP = "load a dataset into the canonical dataset file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--root", default="data", help="folder of the torchvision datasets")
    p.add_argument("--download", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="train/test split seed (digits)")


def prepare(name: str, out: str | os.PathLike, root: str = "data", download: bool = False, seed: int = 0) -> dict:
    """Load dataset ``name`` and write the canonical dataset file ``out``."""
    ds = load_dataset(name, root=root, download=download, seed=seed)
    meta = save_dataset(ds, out)
    print(f"prepared {name}: {meta['n_train']} train, {meta['n_test']} test, images {tuple(meta['image_shape'])}, sha256 {meta['content_hash'][:12]}")
    return meta


def main(args: argparse.Namespace) -> None:
    prepare(args.dataset, args.out, args.root, args.download, args.seed)
