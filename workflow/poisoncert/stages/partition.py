"""``poisoncert partition`` (rule ``partition``): every base model's training-set indices and seed."""

from __future__ import annotations

import argparse
from typing import Any

from .. import registry
from ..data import read_dataset
from ..errors import PoisonCertError
from ..partition import make_partitions, make_selections, save_partitions
from ._common import int_list

HELP = "write every base model's training-set indices"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scheme", required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--d", type=int, default=1)
    p.add_argument("--offsets", type=int_list, default=None, help="FA spread offsets, e.g. 3,17")
    p.add_argument("--same-seed", action="store_true")
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--n-models", type=int, default=None, help="T: number of random selections (bagging, bagging_wor, binomial)")
    p.add_argument("--clean-classes", type=int_list, default=None, help="classes known clean (D^c)")
    p.add_argument("--clean-count", type=int, default=0, help="number of samples known clean (D^c)")
    p.add_argument("--balance", action="store_true", help="weight-balanced resampling (Chen et al. Alg. 2)")
    p.add_argument("--balance-size", type=int, default=None)
    p.add_argument("--two-phase", action="store_true", help="Chen et al. Alg. 3: balance phi_1's classes (clean classes merged)")


def partition(dataset_file: str, out: str, scheme: str, k: int, d: int = 1, offsets: list[int] | None = None, same_seed: bool = False,
              seed_base: int = 0, selection: dict[str, Any] | None = None) -> None:
    """Write every base model's training-set indices (canonical order) and seed.

    ``selection`` holds the random-selection parameters (n_models, clean_classes, clean_count,
    balance, balance_size, two_phase) for the selection schemes. With ``two_phase`` (Chen et al.
    Algorithm 3) BALANCE weighs phi_1's classes (poisoned classes and the merged clean class),
    and the partitions file records ``two_phase`` for the train step.
    """
    from ..limits import check_ensemble

    check_ensemble(scheme, k, d, (selection or {}).get("n_models") or 0, (selection or {}).get("clean_count") or 0)
    ds = read_dataset(dataset_file)
    if registry.scheme(scheme).selection:
        sel = selection or {}
        two_phase = bool(sel.get("two_phase"))
        balance_labels = None
        if two_phase:
            from ..two_phase import phase1_labels

            if sel.get("clean_count"):
                raise PoisonCertError("the 2-phase classifier is for known-clean classes (case 3); clean_count must be 0")
            balance_labels, _ = phase1_labels(ds.train_labels, ds.n_classes, sel.get("clean_classes"))
        parts = make_selections(
            ds.train_images, ds.train_labels, scheme, k, sel.get("n_models") or 0, seed_base,
            sel.get("clean_classes"), sel.get("clean_count") or 0, bool(sel.get("balance")), sel.get("balance_size"),
            balance_labels,
        )
        parts.extra["train_size"] = int(len(ds.train_labels))
        if two_phase:
            parts.extra["two_phase"] = True
    else:
        parts = make_partitions(ds.train_images, ds.train_labels, scheme, k, d, offsets, same_seed, seed_base, ds.train_pixel_sums)
    save_partitions(parts, out, ds.meta()["content_hash"])
    sizes = parts.sizes()
    print(f"{scheme} k={k} d={d}: {parts.n_models} base models, training-set sizes min {sizes.min()} / mean {sizes.mean():.1f} / max {sizes.max()}")


def main(args: argparse.Namespace) -> None:
    selection = {"n_models": args.n_models, "clean_classes": args.clean_classes, "clean_count": args.clean_count,
                 "balance": args.balance, "balance_size": args.balance_size, "two_phase": args.two_phase}
    partition(args.dataset_file, args.out, args.scheme, args.k, args.d, args.offsets, args.same_seed, args.seed_base, selection)
