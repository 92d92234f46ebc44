"""Helpers the stage modules share: CLI argument types and the training configuration."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import PoisonCertError

__all__ = ["int_list", "json_object", "train_config", "add_device_arguments"]


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers (``3,17``)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (part of the models' identity)")


def train_config(fields: dict[str, Any], threads: int):
    """A :class:`poisoncert.train.TrainConfig` from config fields (lists become tuples)."""
    from ..train import TrainConfig

    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items()}
    values.setdefault("cpu_threads", threads)
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise PoisonCertError(f"bad training configuration: {exc}") from None
