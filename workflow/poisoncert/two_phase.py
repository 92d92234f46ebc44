"""Chen et al.'s 2-phase base classifier for case 3 (papers/004, Algorithm 3, "Training algorithm for case 3").

Case 3: the classes ``C_clean`` are known to be clean (their samples form D^c), the others
(``C_poisoned``) may be poisoned. Base classifier i is phi_2(phi_1^i(x)):

* phi_1^i is trained on D_sub^i ∪ D^c with every clean class merged into one virtual class c~,
  a (1 + #C_poisoned)-class task. Its classes here: the poisoned classes in ascending order at
  0..P-1, then c~ at index P (:func:`phase1_labels`).
* phi_2 is ONE model trained on D^c only (its classes: the clean classes in ascending order,
  :func:`phase2_labels`), shared by every base classifier; poisoning D^p cannot reach it.
* The base classifier votes phi_1^i's class where that is a poisoned class, and phi_2's class
  where phi_1^i says c~ (:func:`combine`, which emits one-hot logits over the original classes,
  so that :func:`poisoncert.certify.votes` returns exactly these votes).

The random-selection certificate is unchanged: each base classifier is still a deterministic
function of its selection D_sub^i (plus the fixed D^c and the fixed phi_2).

Pure numpy; no file I/O.
"""

from __future__ import annotations

import numpy as np

from .errors import PoisonCertError

__all__ = ["split_classes", "phase1_labels", "phase2_labels", "combine"]


def split_classes(n_classes: int, clean_classes) -> tuple[np.ndarray, np.ndarray]:
    """(poisoned classes, clean classes), each sorted ascending; checks the clean classes."""
    clean = np.asarray(sorted(set(int(c) for c in ([] if clean_classes is None else np.ravel(clean_classes)))), dtype=np.int64)
    if len(clean) == 0:
        raise PoisonCertError("the 2-phase classifier needs known-clean classes (clean_classes, Chen et al. case 3)")
    if clean.min() < 0 or clean.max() >= n_classes:
        raise PoisonCertError(f"clean_classes {clean.tolist()} must lie in [0, {n_classes})")
    poisoned = np.setdiff1d(np.arange(n_classes, dtype=np.int64), clean)
    if len(poisoned) == 0:
        raise PoisonCertError(f"clean_classes {clean.tolist()} cover every class; the 2-phase classifier needs a potentially poisoned class")
    return poisoned, clean


def phase1_labels(labels: np.ndarray, n_classes: int, clean_classes) -> tuple[np.ndarray, int]:
    """phi_1's labels: poisoned class p -> its rank among the poisoned classes, every clean class -> c~ = P.

    Returns (int64 labels, number of phi_1 classes 1 + P).
    """
    poisoned, _ = split_classes(n_classes, clean_classes)
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise PoisonCertError(f"labels must lie in [0, {n_classes})")
    lut = np.full(n_classes, len(poisoned), dtype=np.int64)  # clean -> c~
    lut[poisoned] = np.arange(len(poisoned))
    return lut[y], len(poisoned) + 1


def phase2_labels(labels: np.ndarray, n_classes: int, clean_classes) -> tuple[np.ndarray, int]:
    """phi_2's labels on D^c: clean class c -> its rank among the clean classes. Every label must be clean.

    Returns (int64 labels, number of phi_2 classes #C_clean).
    """
    _, clean = split_classes(n_classes, clean_classes)
    y = np.asarray(labels, dtype=np.int64)
    lut = np.full(n_classes, -1, dtype=np.int64)
    lut[clean] = np.arange(len(clean))
    out = lut[y] if y.size else y.copy()
    if (out < 0).any():
        raise PoisonCertError("phi_2 is trained on the known-clean classes only; a label of a poisoned class was given")
    return out, len(clean)


def combine(phase1_logits: np.ndarray, phase2_logits: np.ndarray, n_classes: int, clean_classes) -> np.ndarray:
    """The 2-phase base classifiers' outputs as one-hot logits over the original classes.

    ``phase1_logits``: (B, n_test, 1 + P) of the phi_1^i; ``phase2_logits``: (n_test, #C_clean) of
    the shared phi_2. Both vote by argmax (ties to the smaller index, as everywhere). Returns float32
    (B, n_test, n_classes) with a 1 at the 2-phase prediction and 0 elsewhere.
    """
    poisoned, clean = split_classes(n_classes, clean_classes)
    p1 = np.asarray(phase1_logits)
    p2 = np.asarray(phase2_logits)
    if p1.ndim != 3 or p1.shape[2] != len(poisoned) + 1:
        raise PoisonCertError(f"phase-1 logits must have shape (B, n_test, {len(poisoned) + 1}), got {p1.shape}")
    if p2.shape != (p1.shape[1], len(clean)):
        raise PoisonCertError(f"phase-2 logits must have shape ({p1.shape[1]}, {len(clean)}), got {p2.shape}")
    if not (np.isfinite(p1).all() and np.isfinite(p2).all()):
        raise PoisonCertError("phase-1 or phase-2 logits contain NaN/inf")
    v1 = np.argmax(p1, axis=2)  # (B, n_test) in 0..P
    v2 = clean[np.argmax(p2, axis=1)]  # (n_test,) original clean class
    vote = np.where(v1 == len(poisoned), v2[None, :], poisoned[np.minimum(v1, len(poisoned) - 1)])
    out = np.zeros(p1.shape[:2] + (n_classes,), dtype=np.float32)
    np.put_along_axis(out, vote[..., None], 1.0, axis=2)
    return out
