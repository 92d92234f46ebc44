"""The label-free extractors (RotNet, SimCLR) as the learners read them: the extractor file that
rule ``extractor`` writes once per experiment, on every unlabeled training image. (Training them:
:func:`poisoncert.semisup.train_extractor`.)"""

from __future__ import annotations

from typing import Any

from ..errors import PoisonCertError

__all__ = ["read_extractor", "read_checked_extractor"]


def read_extractor(path: str) -> dict[str, Any]:
    """Read an extractor file written by ``poisoncert extractor``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise PoisonCertError(f"extractor file {path} is missing or corrupt ({type(exc).__name__}); delete it and rerun") from None


def read_checked_extractor(path: str, dataset_hash: str | None, what: str = "data") -> dict[str, Any]:
    """The extractor of ``path``, refused unless it was trained on the data of ``dataset_hash``."""
    state = read_extractor(path)
    if state.get("dataset_hash") != dataset_hash:
        raise PoisonCertError(f"{path} was trained on other {what}")
    return state
