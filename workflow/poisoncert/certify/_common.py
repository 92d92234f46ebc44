"""Steps shared by every certificate: input checks, votes, vote counts, the result type.

Conventions (DESIGN.md, DPA paper Section 2.2): a base model's vote is the argmax of its logits;
among equal logits or equal counts the smaller class index wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PoisonCertError

__all__ = [
    "Certificate",
    "check_scores",
    "check_counts",
    "check_alpha",
    "votes",
    "vote_counts",
    "plurality",
]


@dataclass(frozen=True)
class Certificate:
    """Per-sample prediction and certified radius.

    ``prediction`` and ``radius`` are int64 arrays over test samples. ``radius == -1`` where the
    method abstains (no certificate even at attack size 0). ``detail`` holds per-sample arrays
    a report may need (e.g. vote counts, the runner-up class, bounds).
    """

    prediction: np.ndarray
    radius: np.ndarray
    unit: str = "insertions+deletions"
    detail: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prediction.shape != self.radius.shape or self.prediction.ndim != 1:
            raise ValueError("prediction and radius must be 1-D arrays of one length")


def check_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    """Validate a logits array of shape (n_test, n_models, n_classes); return it as an ndarray."""
    arr = np.asarray(scores)
    if arr.ndim != 3:
        raise PoisonCertError(
            f"{name} must have shape (n_test, n_models, n_classes), got shape {arr.shape}"
        )
    if min(arr.shape) < 1:
        raise PoisonCertError(f"{name} is empty (shape {arr.shape}); it needs at least one sample, model and class")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise PoisonCertError(f"{name} must be real numbers, got dtype {arr.dtype}")
    # min and max propagate NaN and expose inf without allocating a mask of the whole array
    if np.issubdtype(arr.dtype, np.floating) and not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
        bad = ~np.isfinite(arr)
        if bad.any():
            i, m, c = np.argwhere(bad)[0]
            raise PoisonCertError(
                f"{name} has {int(bad.sum())} NaN/inf values (first at sample {i}, model {m}, class {c});"
                " check the base models' training (diverged?) before certifying"
            )
    return arr


def check_counts(counts: np.ndarray, n_models: int | None = None, name: str = "counts") -> np.ndarray:
    """Validate vote counts of shape (n_test, n_classes): non-negative integers.

    If ``n_models`` is given, every row must sum to it.
    """
    arr = np.asarray(counts)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise PoisonCertError(f"{name} must have shape (n_test, n_classes), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise PoisonCertError(f"{name} must be whole numbers of votes")
        arr = arr.astype(np.int64)
    arr = arr.astype(np.int64, copy=False)
    if (arr < 0).any():
        raise PoisonCertError(f"{name} has negative vote counts")
    if n_models is not None:
        sums = arr.sum(axis=1)
        if (sums != n_models).any():
            i = int(np.flatnonzero(sums != n_models)[0])
            raise PoisonCertError(
                f"{name} row {i} sums to {int(sums[i])} votes but there are {n_models} models;"
                " every model must vote exactly once"
            )
    return arr


def check_alpha(alpha: float) -> float:
    """Validate a confidence level parameter: 0 < alpha < 1."""
    a = float(alpha)
    if not (0.0 < a < 1.0) or not np.isfinite(a):
        raise PoisonCertError(f"alpha must lie strictly between 0 and 1 (e.g. 0.001), got {alpha}")
    return a


def votes(scores: np.ndarray) -> np.ndarray:
    """Each base model's vote: argmax over classes, ties to the smaller class index.

    Returns int64 array (n_test, n_models).
    """
    arr = check_scores(scores)
    return np.argmax(arr, axis=2).astype(np.int64)


def vote_counts(v: np.ndarray, n_classes: int) -> np.ndarray:
    """Count votes per class: (n_test, n_models) int votes -> (n_test, n_classes) int64 counts.

    One ``bincount`` per block of samples (blocks keep the keys in cache; same result).
    """
    v = np.asarray(v)
    n, n_models = v.shape
    out = np.empty((n, n_classes), dtype=np.int64)
    step = max(1, (1 << 20) // max(1, n_models))
    for a in range(0, n, step):
        blk = v[a : a + step]
        m = blk.shape[0]
        flat = (np.arange(m, dtype=np.int64)[:, None] * n_classes + blk).ravel()
        out[a : a + m] = np.bincount(flat, minlength=m * n_classes).reshape(m, n_classes)
    return out


def plurality(counts: np.ndarray) -> np.ndarray:
    """The class with the most votes; among equal counts the smaller class index (eq. 4, DPA paper)."""
    return np.argmax(counts, axis=1).astype(np.int64)
