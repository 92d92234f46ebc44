"""``poisoncert extractor`` (rule ``extractor``): SS-DPA's label-free feature extractor (RotNet or SimCLR)."""

from __future__ import annotations

import argparse
from typing import Any

from ..data import atomic_file, read_dataset
from ..errors import PoisonCertError
from ..learners.extractors import read_extractor
from ._common import json_object

__all__ = ["extractor", "read_extractor"]

HELP = "train the SS-DPA label-free feature extractor (RotNet: arch nin / light; SimCLR: arch resnet18)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config", type=json_object, default={}, help="JSON of ExtractorConfig fields")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def extractor(dataset_file: str, out: str, config: dict[str, Any], device: str = "auto") -> None:
    """Train the SS-DPA feature extractor once on all unlabeled training images (no labels read).

    ``config``: :class:`poisoncert.learners.extractors.ExtractorConfig` fields; its ``arch`` says which learner
    (nin, light: rotnet; resnet18: simclr), so the rule passes the experiment's ``extractor`` only."""
    import torch

    from ..learners.extractors import ExtractorConfig, train_extractor

    ds = read_dataset(dataset_file)
    try:
        cfg = ExtractorConfig(**config)
    except TypeError as exc:
        raise PoisonCertError(f"bad extractor configuration: {exc}") from None
    state = train_extractor(ds.train_images, cfg, device=device)
    state["dataset_hash"] = ds.meta()["content_hash"]
    with atomic_file(out) as tmp:
        torch.save(state, tmp)
    print(f"{cfg.learner} extractor ({cfg.arch}) trained on {state['n_images']} unique unlabeled images: "
          f"features {'x'.join(map(str, state['feature_shape']))}, last epoch's loss {state['history'][-1] if state['history'] else float('nan'):.4f}")


def main(args: argparse.Namespace) -> None:
    extractor(args.dataset_file, args.out, args.config, args.device)
