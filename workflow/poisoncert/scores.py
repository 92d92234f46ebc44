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

import contextlib
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import certify
from .data import atomic_file, atomic_savez, load_npz, preallocate, scratch_file, write_errors
from .errors import PoisonCertError

__all__ = ["write_scores", "read_scores", "check_meta", "meta_json", "stored_dtype", "scores_writer", "npz_memmap"]

#: Metadata keys whose type is checked on reading: key -> (type test, what it must be).
_META_TYPES: dict[str, tuple[Any, str]] = {
    "scheme": (lambda v: isinstance(v, str), "a scheme name"),
    "k": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "d": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "offsets": (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v), "a list of integers"),
    "train_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "n_clean": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "experiment": (lambda v: isinstance(v, dict), "an object"),
    "subsample_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "n_models": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "alpha": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1, "a number strictly between 0 and 1"),
    "poisoning_model": (lambda v: isinstance(v, str), "one of P1..P6"),
    "learner": (lambda v: isinstance(v, str), "a learner name"),
}


def check_meta(meta: Any, where: str = "the scores metadata") -> dict[str, Any]:
    """The metadata as a dict, with the types of the keys the certificates read checked."""
    if not isinstance(meta, dict):
        raise PoisonCertError(f"{where} must be a JSON object, got {type(meta).__name__}")
    for key, (ok, what) in _META_TYPES.items():
        if meta.get(key) is not None and not ok(meta[key]):
            raise PoisonCertError(f"{where}: '{key}' must be {what}, got {meta[key]!r}")
    return meta


def _check_labels(labels: np.ndarray, n_test: int, n_classes: int, where: str, n_models: int | None = None) -> np.ndarray:
    if labels.ndim == 1 and n_models is not None and len(labels) == n_models != n_test:
        raise PoisonCertError(
            f"the scores in {where} look like (n_models, n_test, n_classes) = ({n_test}, {n_models}, {n_classes}) but poisoncert reads "
            f"(n_test, n_models, n_classes): there are {len(labels)} labels; transpose them with scores.transpose(1, 0, 2) "
            "(IBM ART's predict(raw=True) gives models first)"
        )
    if labels.shape != (n_test,) or not np.issubdtype(labels.dtype, np.integer):
        raise PoisonCertError(f"labels in {where} must be integers of shape ({n_test},), got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise PoisonCertError(f"labels in {where} must lie in [0, {n_classes}) (the scores have {n_classes} classes); found {int(bad)}")
    return labels.astype(np.int64)


def _plain(value: Any) -> Any:
    """``json.dumps`` default: numpy scalars and arrays as their Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def meta_json(meta: Any) -> str:
    """The metadata as the JSON string a scores file stores (numpy scalars become Python numbers).

    >>> meta_json({"k": np.int64(3), "offsets": np.array([1, 2])})
    '{"k": 3, "offsets": [1, 2]}'
    """
    if not isinstance(meta, dict):
        raise PoisonCertError(f"the scores metadata must be a dict (JSON object), got {type(meta).__name__}")
    try:
        plain = json.loads(json.dumps(meta, default=_plain, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise PoisonCertError(f"the scores metadata must be JSON data (numbers, strings, lists, dicts): {exc}") from None
    return json.dumps(check_meta(plain))


def stored_dtype(scores: np.ndarray) -> np.dtype:
    """The dtype a scores array is stored in: its own float type, never a narrower one.

    float32 and float64 are kept (a float64 -> float32 cast can change a vote: logits 0.5 and
    0.5 + 1e-9 tie in float32); float16 and integers up to 2^24 in magnitude widen exactly to
    float32, larger integers to float64 (exact up to 2^53, else refused).

    >>> stored_dtype(np.zeros(2, np.float64)), stored_dtype(np.zeros(2, np.int64)), stored_dtype(np.zeros(2, np.float16))
    (dtype('float64'), dtype('float32'), dtype('float32'))
    """
    if scores.dtype in (np.float32, np.float64):
        return scores.dtype
    if np.issubdtype(scores.dtype, np.floating):  # float16 (exact in float32); longdouble is refused below
        if scores.dtype.itemsize <= 4:
            return np.dtype(np.float32)
        raise PoisonCertError(f"scores of dtype {scores.dtype} cannot be stored without losing precision; convert them to float64 (and check the votes agree)")
    big = int(np.abs(scores).max()) if scores.size else 0
    if big <= 2**24:
        return np.dtype(np.float32)
    if big <= 2**53:
        return np.dtype(np.float64)
    raise PoisonCertError(f"integer scores up to {big} cannot be stored exactly as floats (limit 2^53); rescale them")


def write_scores(path: str | os.PathLike, scores: np.ndarray, labels: np.ndarray, meta: dict[str, Any], compressed: bool = False) -> None:
    """Write a scores file (``compressed`` for sparse one-hot votes such as App. B's).

    The scores keep their float precision (:func:`stored_dtype`): what is read back votes exactly
    as what was written. Every member carries the zip CRC, which :func:`read_scores` verifies.
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise PoisonCertError(f"the scores file must be a path (str or os.PathLike), got {type(path).__name__}")
    scores = certify.check_scores(scores)
    scores = scores.astype(stored_dtype(scores), copy=False)
    labels = _check_labels(np.asarray(labels), scores.shape[0], scores.shape[2], str(path), scores.shape[1])
    atomic_savez(path, compressed=compressed, scores=scores, labels=labels, meta=np.array(meta_json(meta)))


#: Bytes read at a time when a stored member's CRC is verified (memory stays bounded).
_CRC_CHUNK = 16 * 2**20

#: How to make a scores file again, for a file the workflow wrote or one made elsewhere.
REMEDY = "if the workflow wrote it, delete it and rerun the workflow; if you made it, write it again (poisoncert.scores.write_scores)"


def _verify_crc(path: str | os.PathLike, name: str, start: int, size: int, expected: int) -> None:
    """Stream ``size`` bytes from ``start`` through zlib's CRC-32 and compare with the zip's record.

    A memory map bypasses :mod:`zipfile`'s own check, so the mapped path verifies the member
    here, chunk by chunk: one flipped bit anywhere in the logits is refused, never certified.
    """
    crc, left = 0, size
    with open(path, "rb") as fh:
        fh.seek(start)
        while left > 0:
            chunk = fh.read(min(_CRC_CHUNK, left))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    if left or crc != expected:
        raise PoisonCertError(
            f"scores file {path} is corrupt: '{name}.npy' fails its CRC-32 check ({'truncated' if left else 'its bytes changed after writing'}); {REMEDY}"
        )


def npz_memmap(path: str | os.PathLike, name: str) -> np.memmap | None:
    """Array ``name`` of an *uncompressed* ``.npz`` as a read-only memory map (None if compressed or absent).

    Certificates then stream the scores block by block from the page cache instead of holding the
    whole (n_test, n_models, n_classes) array: FA k=1200, d=32 on 10,000 tests is 15 GB. The
    member's CRC-32 is verified first, streamed (:func:`_verify_crc`), as :mod:`zipfile` does for
    the other reading path.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{name}.npy")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        try:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
        except ValueError:  # a corrupt member: let the ordinary reader report it in one line
            return None
        offset = fh.tell()
    if dtype.hasobject or (offset - start) + int(np.prod(shape)) * dtype.itemsize > info.file_size:
        return None
    _verify_crc(path, name, start, info.file_size, info.CRC)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def read_scores(path: str | os.PathLike, mmap: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and check a scores file (ours, or one a user made from an ensemble trained elsewhere).

    With ``mmap`` the scores of an uncompressed file are a read-only memory map (see
    :func:`npz_memmap`); the certify stage uses it, so its memory does not grow with n_models.
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise PoisonCertError(f"the scores file must be a path (str or os.PathLike), got {type(path).__name__}")
    scores_map = npz_memmap(path, "scores") if mmap and Path(path).is_file() else None
    if scores_map is not None:
        z = load_npz(path, "scores", ("labels",), skip=("scores",), remedy=REMEDY)
        z["scores"] = scores_map
    else:
        z = load_npz(path, "scores", ("scores", "labels"), remedy=REMEDY)
    scores = certify.check_scores(z["scores"], name=f"scores in {path}")
    labels = _check_labels(z["labels"], scores.shape[0], scores.shape[2], str(path), scores.shape[1])
    meta: Any = {}
    if "meta" in z:
        try:
            meta = json.loads(str(z["meta"]))
        except json.JSONDecodeError as exc:
            raise PoisonCertError(f"'meta' in {path} is not valid JSON ({exc.msg} at position {exc.pos}); write it with json.dumps") from None
    return scores, labels, check_meta(meta, f"'meta' in {path}")


@contextlib.contextmanager
def scores_writer(path: str | os.PathLike, shape: tuple[int, int, int], labels: np.ndarray, meta: dict[str, Any]) -> Iterator[np.ndarray]:
    """Write a scores file without holding the scores in memory.

    Yields a writable float32 memory map of ``shape`` (n_test, n_models, n_classes) to fill, e.g.
    shard by shard; on success the scores are checked and the file is assembled uncompressed (so
    :func:`read_scores` can map it) and renamed into place, with ``meta`` as it is then (the caller
    may fill it inside the block). On failure nothing is left behind.
    """
    path = Path(path)
    # a locked temporary beside the output: removed below, or by the next write of path if this process is killed
    scratch = scratch_file(path, "scores", ".npy")
    tmp_npy = scratch.__enter__()
    try:
        with write_errors(path):
            arr = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=tuple(int(x) for x in shape))
            preallocate(tmp_npy)  # a full disk is one line here, never a SIGBUS while the map is filled
        yield arr
        arr.flush()
        certify.check_scores(arr, name=f"scores for {path}")
        labels = _check_labels(np.asarray(labels), arr.shape[0], arr.shape[2], str(path))
        del arr
        with atomic_file(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("scores.npy", "w", force_zip64=True) as dst, open(tmp_npy, "rb") as src:
                while chunk := src.read(64 * 2**20):
                    dst.write(chunk)
            for key, value in (("labels", labels), ("meta", np.array(meta_json(meta)))):
                with zf.open(f"{key}.npy", "w", force_zip64=True) as dst:
                    np.lib.format.write_array(dst, value, allow_pickle=False)
    finally:
        scratch.__exit__(None, None, None)
