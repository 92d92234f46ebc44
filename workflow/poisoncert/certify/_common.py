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
    "argmax_votes",
    "vote_counts",
    "plurality",
    "class_major",
    "argmax_class_major",
    "sample_blocks",
    "small_index_dtype",
    "count_true",
]

#: Target number of cells (sample x model x class) per block of samples: a block's working arrays
#: stay in the L2 cache (a few hundred KiB), and per-block numpy call overhead stays small.
BLOCK_CELLS = 1 << 18

#: Up to this many classes, votes are taken by a loop over classes on class-major blocks and
#: counted by one comparison per class; above it ``np.argmax`` / ``np.bincount`` are faster.
_FEW_CLASSES = 16


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


def as_array(value, name: str) -> np.ndarray:
    """``np.asarray`` that turns ragged nested lists and non-numeric input into one clear line."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise PoisonCertError(f"{name} must be a rectangular array of numbers (ragged nested lists are not)") from None
    if arr.dtype == object:
        raise PoisonCertError(f"{name} must be a rectangular array of numbers, got Python objects")
    return arr


def check_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    """Validate a logits array of shape (n_test, n_models, n_classes); return it as an ndarray."""
    arr = as_array(scores, name)
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
    arr = as_array(counts, name)
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
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise PoisonCertError(f"alpha must be a number strictly between 0 and 1 (e.g. 0.001), got {alpha!r}")
    a = float(alpha)
    if not (0.0 < a < 1.0) or not np.isfinite(a):
        raise PoisonCertError(f"alpha must lie strictly between 0 and 1 (e.g. 0.001), got {alpha}")
    return a


def sample_blocks(n: int, cells_per_sample: int, cells: int = BLOCK_CELLS):
    """Slices of consecutive samples with about ``cells`` cells each (at least one sample)."""
    step = max(1, cells // max(1, cells_per_sample))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def small_index_dtype(n_values: int) -> np.dtype:
    """The narrowest unsigned dtype holding 0 .. n_values - 1 (class indices, votes)."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_values - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def class_major(block: np.ndarray) -> np.ndarray:
    """Contiguous (s, n_classes, n_models) copy of a (s, n_models, n_classes) block of logits.

    Per-class rows are then contiguous, so per-class comparisons and the bucket sums of FA run on
    contiguous memory.
    """
    return np.ascontiguousarray(np.swapaxes(block, 1, 2))


def argmax_class_major(st: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """Votes from class-major logits ``st`` (s, n_classes, n_models): argmax over axis 1, ties to
    the smaller class index (exactly ``np.argmax(st, axis=1)``; logits must be NaN-free).

    One pass per class over contiguous rows: a model's running maximum is replaced only by a strictly
    larger logit, and since classes are visited in increasing order the new index is always the
    largest so far, so ``idx = max(idx, c * [x_c > running max])`` records it without a branch.
    """
    n_classes = st.shape[1]
    best = st[:, 0].copy()
    idx = np.zeros(best.shape, dtype=dtype)
    gt = np.empty(best.shape, dtype=bool)
    tmp = np.empty(best.shape, dtype=dtype)
    for c in range(1, n_classes):
        x = st[:, c]
        np.greater(x, best, out=gt)
        np.maximum(best, x, out=best)
        np.multiply(gt, idx.dtype.type(c), out=tmp)
        np.maximum(idx, tmp, out=idx)
    return idx


def argmax_votes(arr: np.ndarray, dtype=np.int64) -> np.ndarray:
    """:func:`votes` without the input check (``arr`` already passed :func:`check_scores`).

    Returns (n_test, n_models) in ``dtype`` (which must hold every class index).
    """
    n, n_models, n_classes = arr.shape
    out = np.empty((n, n_models), dtype=dtype)
    for sl in sample_blocks(n, n_models * n_classes):
        if n_classes <= _FEW_CLASSES:
            out[sl] = argmax_class_major(class_major(arr[sl]), small_index_dtype(n_classes))
        else:
            out[sl] = np.argmax(arr[sl], axis=2)
    return out


def votes(scores: np.ndarray) -> np.ndarray:
    """Each base model's vote: argmax over classes, ties to the smaller class index.

    Returns int64 array (n_test, n_models).
    """
    return argmax_votes(check_scores(scores))


def count_true(mask: np.ndarray) -> np.ndarray:
    """Number of True entries along the last axis (int64) of a boolean comparison result.

    Same as ``np.count_nonzero(mask, axis=-1)``, several times faster: with a contiguous last axis of
    a multiple of 8 entries the booleans (bytes 0/1) are read as 64-bit words of eight byte lanes and
    added word-wise, at most 255 words per partial sum so that no lane carries into the next; the
    bytes of the partial sums are then added. Otherwise a narrow-integer sum.
    """
    mask = np.asarray(mask)
    n = mask.shape[-1]
    if n == 0 or n % 8 or not mask.flags.c_contiguous or mask.dtype != np.bool_:
        return mask.sum(axis=-1, dtype=np.uint16 if n <= 0xFFFF else np.int64).astype(np.int64)
    words = mask.view(np.uint64)
    partial = np.add.reduceat(words, np.arange(0, words.shape[-1], 255), axis=-1)
    return partial.view(np.uint8).sum(axis=-1, dtype=np.int64)


def vote_counts(v: np.ndarray, n_classes: int) -> np.ndarray:
    """Count votes per class: (n_test, n_models) int votes -> (n_test, n_classes) int64 counts.

    Per block of samples (cache-sized): with few classes one comparison per class and a narrow
    count (:func:`count_true`), otherwise one ``bincount`` over (sample, class) keys; same result.
    A vote outside ``[0, n_classes)`` is refused (it would be dropped, or counted in another
    sample's row).

    >>> vote_counts(np.array([[0, 2, 2]]), 3).tolist()
    [[1, 0, 2]]
    >>> vote_counts(np.array([[0, 5]]), 3)
    Traceback (most recent call last):
    ...
    poisoncert.errors.PoisonCertError: votes must be class indices in [0, 3); found 5 (is n_classes right?)
    """
    v = as_array(v, "votes")
    if v.ndim != 2 or not (np.issubdtype(v.dtype, np.integer) or v.dtype == bool):
        raise PoisonCertError(f"votes must be integer class indices of shape (n_test, n_models), got {v.dtype} {v.shape}")
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) or n_classes < 1:
        raise PoisonCertError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    if v.size and (v.min() < 0 or v.max() >= n_classes):
        bad = v[(v < 0) | (v >= n_classes)].flat[0]
        raise PoisonCertError(f"votes must be class indices in [0, {n_classes}); found {int(bad)} (is n_classes right?)")
    n, n_models = v.shape
    out = np.empty((n, n_classes), dtype=np.int64)
    if n_classes <= _FEW_CLASSES:
        classes = np.arange(n_classes, dtype=v.dtype)[:, None]
        for sl in sample_blocks(n, n_models * n_classes, 1 << 20):
            out[sl] = count_true(v[sl][:, None, :] == classes)
        return out
    for sl in sample_blocks(n, n_models, 1 << 20):
        blk = v[sl]
        m = blk.shape[0]
        flat = (np.arange(m, dtype=np.int64)[:, None] * n_classes + blk).ravel()
        out[sl] = np.bincount(flat, minlength=m * n_classes).reshape(m, n_classes)
    return out


def plurality(counts: np.ndarray) -> np.ndarray:
    """The class with the most votes; among equal counts the smaller class index (eq. 4, DPA paper)."""
    return np.argmax(counts, axis=1).astype(np.int64)
