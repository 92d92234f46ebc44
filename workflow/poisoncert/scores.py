"""The public scores format: one ensemble's test-set logits, the file ``poisoncert certify`` reads.

A scores file is an ``.npz`` with

* ``scores``: float (n_test, n_models, n_classes), model m's logits on test sample i at [i, m];
* ``labels``: integer (n_test,), each in [0, n_classes);
* ``meta`` (optional for files made elsewhere): a JSON object. ``scheme`` names the threat
  footprint (:data:`poisoncert.registry.SCHEMES`); without it the ensemble is certified under
  the documented default, one base model per poisoned sample (``dpa``), and the certificate's
  summary says so. FA and DPA* need ``k`` and ``d`` (FA also ``offsets``), the selection
  certificates ``train_size`` and ``k`` (the selection size).

The workflow's ``aggregate`` and ``kmeans_scores`` stages write it; users write it with
:func:`write_scores` from an ensemble trained elsewhere.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "scores.npz")
>>> write_scores(path, np.eye(3, dtype=np.float32)[[[0, 0, 1]]], np.array([0]), {"scheme": "dpa", "k": 3})
>>> s, y, meta = read_scores(path)
>>> s.shape, y.tolist(), meta["k"]
((1, 3, 3), [0], 3)
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from . import certify
from .data import atomic_savez, load_npz
from .errors import PoisonCertError

__all__ = ["write_scores", "read_scores", "check_meta"]

#: Metadata keys whose type is checked on reading: key -> (type test, what it must be).
_META_TYPES: dict[str, tuple[Any, str]] = {
    "scheme": (lambda v: isinstance(v, str), "a scheme name"),
    "k": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "d": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "offsets": (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v), "a list of integers"),
    "train_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "n_clean": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "experiment": (lambda v: isinstance(v, dict), "an object"),
}


def check_meta(meta: Any, where: str = "the scores metadata") -> dict[str, Any]:
    """The metadata as a dict, with the types of the keys the certificates read checked."""
    if not isinstance(meta, dict):
        raise PoisonCertError(f"{where} must be a JSON object, got {type(meta).__name__}")
    for key, (ok, what) in _META_TYPES.items():
        if meta.get(key) is not None and not ok(meta[key]):
            raise PoisonCertError(f"{where}: '{key}' must be {what}, got {meta[key]!r}")
    return meta


def _check_labels(labels: np.ndarray, n_test: int, n_classes: int, where: str) -> np.ndarray:
    if labels.shape != (n_test,) or not np.issubdtype(labels.dtype, np.integer):
        raise PoisonCertError(f"labels in {where} must be integers of shape ({n_test},), got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise PoisonCertError(f"labels in {where} must lie in [0, {n_classes}) (the scores have {n_classes} classes); found {int(bad)}")
    return labels.astype(np.int64)


def write_scores(path: str | os.PathLike, scores: np.ndarray, labels: np.ndarray, meta: dict[str, Any], compressed: bool = False) -> None:
    """Write a scores file (``compressed`` for sparse one-hot votes such as App. B's)."""
    scores = certify.check_scores(np.asarray(scores, dtype=np.float32))
    labels = _check_labels(np.asarray(labels), scores.shape[0], scores.shape[2], str(path))
    atomic_savez(path, compressed=compressed, scores=scores, labels=labels, meta=np.array(json.dumps(check_meta(meta))))


def read_scores(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and check a scores file (ours, or one a user made from an ensemble trained elsewhere)."""
    z = load_npz(path, "scores", ("scores", "labels"))
    scores = certify.check_scores(z["scores"], name=f"scores in {path}")
    labels = _check_labels(z["labels"], scores.shape[0], scores.shape[2], str(path))
    meta: Any = {}
    if "meta" in z:
        try:
            meta = json.loads(str(z["meta"]))
        except json.JSONDecodeError as exc:
            raise PoisonCertError(f"'meta' in {path} is not valid JSON ({exc.msg} at position {exc.pos}); write it with json.dumps") from None
    return scores, labels, check_meta(meta, f"'meta' in {path}")
