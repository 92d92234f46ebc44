"""Certified accuracy and median certified robustness (DPA paper Section 3, Table 1)."""

from __future__ import annotations

import numpy as np

from ..errors import PoisonCertError

__all__ = ["certified_radius_or_minus_one", "certified_accuracy", "median_certified_radius", "mean_base_accuracy", "summary_metrics"]


#: Radii are counts of poisoned samples; anything beyond this is no count a certificate can make.
MAX_RADIUS = 2**53
#: Points of the certified-accuracy curve a requested radius may add beyond the certified ones.
CURVE_LIMIT = 2**20


def _as_radius(radius) -> np.ndarray:
    """Certified radii as int64: whole numbers in [-1, 2^53] (a float such as 1e20 would wrap around).

    >>> _as_radius([2.0, -1]).tolist()
    [2, -1]
    >>> _as_radius([1e20])
    Traceback (most recent call last):
    ...
    poisoncert.errors.PoisonCertError: certified radii must be whole numbers in [-1, 9007199254740992] (a count of poisoned samples, -1 = none); got 1e+20
    """
    try:
        arr = np.asarray(radius)
    except (TypeError, ValueError):
        raise PoisonCertError("certified radii must be an array of whole numbers") from None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise PoisonCertError(f"certified radii must be whole numbers, got dtype {arr.dtype}")
    if arr.size:
        bad = ~np.isfinite(arr) | (arr < -1) | (arr > MAX_RADIUS) if np.issubdtype(arr.dtype, np.floating) else (arr < -1) | (arr > MAX_RADIUS)
        if np.issubdtype(arr.dtype, np.floating):
            bad |= np.isfinite(arr) & (arr != np.round(arr))
        if bad.any():
            raise PoisonCertError(
                f"certified radii must be whole numbers in [-1, {MAX_RADIUS}] (a count of poisoned samples, -1 = none); got {arr[bad].flat[0].item()!r}"
            )
    return arr.astype(np.int64)


def certified_radius_or_minus_one(prediction: np.ndarray, radius: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample certificate for the *true* label: the radius where correct, -1 where misclassified or abstained."""
    prediction = np.asarray(prediction)
    radius = _as_radius(radius)
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
    if n == 0:
        raise PoisonCertError("cannot compute the median certified radius of zero test samples")
    srt = np.sort(cert)[::-1]
    # the value at position ceil(n/2)-1 of the descending order: at least half the samples reach it
    v = int(srt[(n + 1) // 2 - 1])
    return None if v < 0 else v


def mean_base_accuracy(counts: np.ndarray, labels: np.ndarray) -> float:
    """Mean accuracy of the base models from their vote counts (n, C): the "base" column of DPA Table 1.

    >>> mean_base_accuracy(np.array([[3, 1], [2, 2]]), np.array([0, 1]))
    0.625
    """
    counts = np.asarray(counts)
    labels = np.asarray(labels)
    if counts.ndim != 2 or counts.shape[0] != labels.shape[0] or counts.shape[0] == 0:
        raise PoisonCertError(f"vote counts must be (n_test, n_classes) with n_test = {labels.shape[0]} > 0, got {counts.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= counts.shape[1]):
        raise PoisonCertError(f"labels must lie in [0, {counts.shape[1]})")
    total = counts.sum(axis=1)
    if np.any(total != total[0]) or total[0] == 0:
        raise PoisonCertError("every test sample's vote counts must add up to the same, non-zero number of models")
    return float(counts[np.arange(len(labels)), labels].sum() / (len(labels) * total[0]))


def summary_metrics(prediction: np.ndarray, radius: np.ndarray, labels: np.ndarray, radii) -> dict:
    """Clean accuracy, median certified radius, certified accuracy at ``radii`` and the whole curve.

    The curve runs from 0 to one past the largest certified radius, or to one past the largest
    of ``radii`` where that is at most :data:`CURVE_LIMIT` (beyond the largest certified radius
    the certified accuracy is 0; the requested radii are reported all the same).

    >>> m = summary_metrics(np.array([0, 1, 1]), np.array([2, 0, 5]), np.array([0, 1, 0]), [0, 1])
    >>> m["clean_accuracy"], m["median_certified_radius"], m["certified_accuracy"]
    (0.6666666666666666, 0, {'0': 0.6666666666666666, '1': 0.3333333333333333})
    """
    labels = np.asarray(labels)
    certified = certified_radius_or_minus_one(prediction, radius, labels)
    radii = _as_radius(radii).tolist()
    if any(r < 0 for r in radii):
        raise PoisonCertError(f"the radii to report must be >= 0 (attack sizes), got {min(radii)}")
    if len(radii) > 100_000:
        raise PoisonCertError(f"at most 100000 radii can be reported, got {len(radii)}")
    top = int(certified.max(initial=0))
    asked = max(radii, default=0)
    # the curve is a step function, 0 past the largest certified radius: a far requested radius
    # (1e9) extends it only up to CURVE_LIMIT points, never to a multi-GB array
    curve_r = np.arange(max(top, asked if asked <= max(top, CURVE_LIMIT) else top) + 2)
    return {
        "clean_accuracy": float((np.asarray(prediction) == labels).mean()),
        "median_certified_radius": median_certified_radius(prediction, radius, labels),
        "certified_accuracy": {str(r): float(a) for r, a in zip(radii, certified_accuracy(prediction, radius, labels, radii))},
        "curve": {"radius": curve_r.tolist(), "certified_accuracy": certified_accuracy(prediction, radius, labels, curve_r).tolist()},
    }
