"""Certified accuracy and median certified robustness (DPA paper Section 3, Table 1)."""

from __future__ import annotations

import numpy as np

from ..errors import PoisonCertError

__all__ = ["certified_radius_or_minus_one", "certified_accuracy", "median_certified_radius"]


def certified_radius_or_minus_one(prediction: np.ndarray, radius: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample certificate for the *true* label: the radius where correct, -1 where misclassified or abstained."""
    prediction = np.asarray(prediction)
    radius = np.asarray(radius)
    labels = np.asarray(labels)
    if not (prediction.shape == radius.shape == labels.shape):
        raise PoisonCertError(
            f"prediction, radius and labels must have one shape, got {prediction.shape}, {radius.shape}, {labels.shape}"
        )
    return np.where(prediction == labels, radius, -1).astype(np.int64)


def certified_accuracy(prediction: np.ndarray, radius: np.ndarray, labels: np.ndarray, radii) -> np.ndarray:
    """Fraction of samples that are correctly classified with certificate >= r, for each r in ``radii``.

    Radius 0 gives the clean accuracy of the (non-abstaining) ensemble.
    """
    cert = certified_radius_or_minus_one(prediction, radius, labels)
    r = np.asarray(radii, dtype=np.int64)
    if cert.size == 0:
        raise PoisonCertError("cannot compute certified accuracy on zero test samples")
    srt = np.sort(cert)
    # number of samples with cert >= r  = n - (number with cert < r)
    return (cert.size - np.searchsorted(srt, r, side="left")) / cert.size


def median_certified_radius(prediction: np.ndarray, radius: np.ndarray, labels: np.ndarray) -> int | None:
    """Median certified robustness: the largest attack size at which certified accuracy is >= 50%.

    ``None`` when even the clean accuracy is below 50% (the "N/A" of DPA Table 1).
    """
    cert = certified_radius_or_minus_one(prediction, radius, labels)
    n = cert.size
    srt = np.sort(cert)[::-1]
    # the value at position ceil(n/2)-1 of the descending order: at least half the samples reach it
    v = int(srt[(n + 1) // 2 - 1])
    return None if v < 0 else v
