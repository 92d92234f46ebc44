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
:func:`write_scores` from an ensemble trained elsewhere: :func:`from_art` (IBM ART's
``DeepPartitionEnsemble``), :func:`from_models` (a list of torch models or callables),
:func:`from_outputs` (per-model probability or logit arrays) turn one into (scores, labels,
meta) with the axis order checked and the scheme and threat model recorded.

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

__all__ = ["write_scores", "read_scores", "check_meta", "meta_json", "stored_dtype", "scores_writer", "npz_memmap",
           "stack_model_outputs", "from_outputs", "from_models", "from_art", "DETERMINISM_CAVEAT"]

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


#: The members of a scores file, and the only ones it may hold.
MEMBERS = ("scores", "labels", "meta")

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


def _check_members_tile(path: str | os.PathLike) -> None:
    """The zip's members must tile the file from its start to its central directory.

    The CRC covers each member's bytes, not the directory that lists them: a damaged entry count
    would drop ``meta.npy`` from the listing, and the file would be certified under the default
    threat model. Every byte before the directory belongs to a listed member, or the file is
    refused. (Members written with a trailing data descriptor are not checked.)
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
            start_dir = int(getattr(zf, "start_dir", -1))
            concat = int(getattr(zf, "_concat", 0) or 0) if hasattr(zf, "_concat") else 0
    except Exception:
        return  # an unreadable directory: the reader reports it in one line
    if start_dir < 0 or concat or any(i.flag_bits & 0x08 for i in infos):
        return
    pos = 0
    with open(path, "rb") as fh:
        for info in infos:
            if info.header_offset != pos:
                break
            fh.seek(pos)
            header = fh.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                break
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            pos += 30 + name_len + extra_len + info.compress_size
    if pos != start_dir:
        raise PoisonCertError(
            f"scores file {path} is corrupt: its zip directory does not account for bytes {pos}..{start_dir} (a member missing from "
            f"the listing, e.g. a damaged entry count); {REMEDY}"
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
    except Exception:  # absent or a damaged directory: the ordinary reader reports it in one line
        return None
    if info.compress_type != zipfile.ZIP_STORED or not 0 <= info.header_offset < os.path.getsize(path):
        return None  # compressed, or a damaged directory entry: the ordinary reader reports it in one line
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        # the whole member (its .npy header included) before anything of it is parsed or mapped
        _verify_crc(path, name, start, info.file_size, info.CRC)
        fh.seek(start)
        try:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
        except Exception:  # a foreign member whose CRC holds: let the ordinary reader report it in one line
            return None
        offset = fh.tell()
    if dtype.hasobject or (offset - start) + int(np.prod(shape)) * dtype.itemsize > info.file_size:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def read_scores(path: str | os.PathLike, mmap: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and check a scores file (ours, or one a user made from an ensemble trained elsewhere).

    With ``mmap`` the scores of an uncompressed file are a read-only memory map (see
    :func:`npz_memmap`); the certify stage uses it, so its memory does not grow with n_models.
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise PoisonCertError(f"the scores file must be a path (str or os.PathLike), got {type(path).__name__}")
    if Path(path).is_file():
        _check_members_tile(path)
    scores_map = npz_memmap(path, "scores") if mmap and Path(path).is_file() else None
    if scores_map is not None:
        z = load_npz(path, "scores", ("labels",), skip=("scores",), remedy=REMEDY)
        z["scores"] = scores_map
    else:
        z = load_npz(path, "scores", ("scores", "labels"), remedy=REMEDY)
    extra = sorted(set(z) - set(MEMBERS))
    if extra:
        # member names are not covered by the CRC: 'meta' damaged into 'meua' would silently drop the
        # recorded threat model (certified as the default DPA), so an unknown member is refused
        raise PoisonCertError(
            f"scores file {path} holds {', '.join(map(repr, extra))} beside {', '.join(MEMBERS)}: a scores file holds only those "
            f"(a damaged member name, or not a scores file); {REMEDY}"
        )
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


# ---------------------------------------------------------------------------------------------- ensembles trained elsewhere

#: What a certificate of an ensemble trained elsewhere rests on (recorded in its metadata).
DETERMINISM_CAVEAT = (
    "the certificate assumes each base model is a deterministic function of its own training set (as a set) and its own seed: "
    "retrained on an unchanged partition it must give the same outputs whatever the other partitions hold. So seed each model "
    "from its partition index right before training it, train on its partition in a canonical (content-sorted) order, and use "
    "deterministic kernels. Models trained one after another from one global random stream (IBM ART's DeepPartitionEnsemble.fit: "
    "dropout, augmentation or shuffling draw from torch's global generator) break this: a poison in one partition changes how much "
    "randomness it draws, hence every later model, and torch.manual_seed before building it makes a run reproducible, not each "
    "model a function of its own partition; there the radius describes the ensemble as trained, not a proof against retraining"
)

_LAYOUTS = ("tests,models,classes", "models,tests,classes")


def _as_array(value: Any, name: str) -> np.ndarray:
    from .certify._common import as_array

    return as_array(value, name)


def stack_model_outputs(outputs: Any, n_test: int | None = None, layout: str | None = None) -> np.ndarray:
    """Per-model outputs as the scores layout, float32 (n_test, n_models, n_classes).

    ``outputs``: a list of per-model arrays (n_test, n_classes), or one 3-D array in ``layout``
    ``"tests,models,classes"`` (ours) or ``"models,tests,classes"`` (ART's ``predict(raw=True)``,
    ``np.stack`` over a loop of models). Without ``layout`` the order is read from ``n_test``
    (the number of test samples), and an ambiguous shape is refused.

    >>> stack_model_outputs([np.eye(2), np.eye(2)[::-1]]).shape     # 2 models, 2 tests, 2 classes
    (2, 2, 2)
    >>> stack_model_outputs(np.zeros((5, 3, 10)), n_test=3).shape     # models first: transposed
    (3, 5, 10)
    """
    if isinstance(outputs, (list, tuple)):
        arrays = [_as_array(o, f"outputs[{i}]") for i, o in enumerate(outputs)]
        if not arrays:
            raise PoisonCertError("no model outputs were given; pass one (n_test, n_classes) array per base model")
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1 or arrays[0].ndim != 2:
            raise PoisonCertError(f"each model's outputs must be one (n_test, n_classes) array of the same shape, got shapes {sorted(shapes)}")
        arr = np.stack(arrays, axis=1)
        layout = "tests,models,classes"
    else:
        arr = _as_array(outputs, "outputs")
    if arr.ndim != 3:
        raise PoisonCertError(f"model outputs must be 3-D (tests, models, classes), got shape {arr.shape}; a list of (n_test, n_classes) arrays also works")
    if layout is None:
        if n_test is None:
            raise PoisonCertError(f"cannot tell the axis order of outputs of shape {arr.shape}: pass layout='models,tests,classes' "
                                  "(ART's predict(raw=True), a loop over models) or 'tests,models,classes', or n_test")
        first, second = arr.shape[0] == n_test, arr.shape[1] == n_test
        if first == second:
            raise PoisonCertError(f"cannot tell the axis order of outputs of shape {arr.shape} with {n_test} test samples: pass "
                                  "layout='models,tests,classes' (ART's predict(raw=True)) or 'tests,models,classes'")
        layout = _LAYOUTS[0] if first else _LAYOUTS[1]
    if layout not in _LAYOUTS:
        raise PoisonCertError(f"layout must be one of {', '.join(repr(x) for x in _LAYOUTS)}, got {layout!r}")
    if layout == _LAYOUTS[1]:
        arr = arr.transpose(1, 0, 2)
    if n_test is not None and arr.shape[0] != n_test:
        raise PoisonCertError(f"the outputs hold {arr.shape[0]} test samples in layout {layout!r} but there are {n_test}; check the layout")
    return certify.check_scores(np.ascontiguousarray(arr, dtype=np.float32), name="model outputs")


def _ensemble_meta(scores: np.ndarray, scheme: str, source: str, extra: dict[str, Any]) -> dict[str, Any]:
    from . import registry

    rec = registry.scheme(scheme)
    if rec.selection or not rec.trains:
        raise PoisonCertError(f"scheme '{rec.name}' is not one this adapter records; use write_scores with the selection metadata")
    meta = {k: v for k, v in extra.items() if v is not None}
    meta.setdefault("k", scores.shape[1] // int(meta.get("d") or 1))
    meta.update({"scheme": rec.name, "learner": meta.get("learner", "supervised"), "source": source})
    registry.check_layout(rec.name, scores, meta)
    missing = sorted({key for c in rec.certificates for key in registry.certificate(c).needs if meta.get(key) is None})
    if missing:
        raise PoisonCertError(f"a '{rec.name}' ensemble's certificates need {', '.join(missing)}; pass them (e.g. offsets=[...] for FA's spread)")
    threat = registry.ensemble_threat(meta)
    meta.update({"footprint": threat["footprint"], "unit": threat["unit"], "determinism": DETERMINISM_CAVEAT})
    return check_meta(meta)


def _labels(y: Any, n_test: int, n_classes: int) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape == (n_test, n_classes):  # one-hot, as ART's fit takes them
        y = y.argmax(axis=1)
    return _check_labels(y, n_test, n_classes, "y")


#: How the k*d models of a DPA* ensemble are ordered: model = partition*d + seed (the scores
#: format's), or seed*k + partition (d whole DPA ensembles one after the other, as the ROE reference
#: stores them).
MODEL_ORDERS = ("partition-major", "seed-major")


def _partition_major(scores: np.ndarray, scheme: str, meta: dict[str, Any]) -> np.ndarray:
    """DPA*'s models in the scores format's order (partition-major), from the declared ``model_order``.

    Several seeds per partition make the order part of the threat model: averaging models of
    different partitions as one voter would let one poison reach several voters. So a DPA*
    ensemble with d > 1 must declare it.
    """
    from . import registry

    order = meta.pop("model_order", None)
    rec = registry.scheme(scheme)
    d = int(meta.get("d") or 1)
    seeds_per_partition = rec.uses_d and not rec.offsets and d > 1
    if seeds_per_partition and scores.shape[1] % d:
        return scores  # not k*d models: registry.check_layout refuses it with the counts
    if not seeds_per_partition:
        if order is not None:
            raise PoisonCertError(f"model_order is for ensembles with several seeds per partition (DPA*, d > 1), not a '{rec.name}' one with d = {d}")
        return scores
    if order not in MODEL_ORDERS:
        raise PoisonCertError(
            f"a '{rec.name}' ensemble of d = {d} seeds per partition must say how its models are ordered: model_order='partition-major' "
            "(model = partition*d + seed) or 'seed-major' (model = seed*k + partition); got " + repr(order)
        )
    if order == "partition-major":
        return scores
    k = scores.shape[1] // d
    return np.ascontiguousarray(scores.reshape(scores.shape[0], d, k, scores.shape[2]).transpose(0, 2, 1, 3).reshape(scores.shape))


def from_outputs(outputs: Any, y: Any = None, layout: str | None = None, scheme: str = "dpa", **meta: Any):
    """(scores, labels, meta) from per-model outputs (see :func:`stack_model_outputs`) of a ``scheme`` ensemble.

    ``meta``: k, d, offsets as the scheme needs (DPA: k = the number of models), and for DPA*
    with d > 1 ``model_order`` (:data:`MODEL_ORDERS`). The scheme must be the one the models were
    trained under: DPA when a model's training set is picked by a hash of the sample alone; FA's
    models in base-model order (model i trains on the split buckets j with (j + r) mod kd = i).

    >>> s, y, m = from_outputs([np.eye(3)] * 4, [0, 1, 2])
    >>> s.shape, m["scheme"], m["k"], m["unit"]
    ((3, 4, 3), 'dpa', 4, 'insertions+deletions')
    """
    n_test = None if y is None else len(np.asarray(y))
    scores = stack_model_outputs(outputs, n_test, layout)
    scores = _partition_major(scores, scheme, meta)
    return scores, _labels(y, scores.shape[0], scores.shape[2]), _ensemble_meta(scores, scheme, meta.pop("source", "per-model outputs"), meta)


def from_models(models: Any, x: Any, y: Any = None, scheme: str = "dpa", batch_size: int = 256, **meta: Any):
    """(scores, labels, meta) of a list of trained models (torch ``nn.Module`` s or callables returning logits) on ``x``.

    Each model runs in eval mode under ``torch.no_grad`` on its own device, ``batch_size`` test
    samples at a time. The models must be in the order of the scheme's base models (DPA:
    partition index).
    """
    models = list(models)
    if not models:
        raise PoisonCertError("no models were given")
    outputs = []
    for i, model in enumerate(models):
        if not callable(model):
            raise PoisonCertError(f"models[{i}] is a {type(model).__name__}, not a model; pass torch modules or callables returning logits")
        outputs.append(_run_model(model, x, batch_size))
    return from_outputs(outputs, y, "tests,models,classes", scheme, source=meta.pop("source", "a list of models"), **meta)


def _run_model(model: Any, x: Any, batch_size: int) -> np.ndarray:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        params = list(model.parameters())
        dev = params[0].device if params else torch.device("cpu")
        was_training = model.training
        model.eval()
        outs = []
        with torch.no_grad():
            xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
            for s in range(0, len(xt), batch_size):
                outs.append(model(xt[s: s + batch_size].to(dev)).float().cpu().numpy())
        model.train(was_training)
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
    return np.asarray(model(x), dtype=np.float32)


def from_art(ensemble: Any, x: Any, y: Any = None, batch_size: int = 128):
    """(scores, labels, meta) of IBM ART's ``DeepPartitionEnsemble`` on ``x``: scheme DPA, k = its ensemble size.

    ART's ``predict(x, raw=True)`` gives (models, tests, classes); the scores layout is (tests,
    models, classes). ART's partition of a sample, ``hash_function(x)`` (default
    ``int(np.sum(x)) % k``, a truncated float sum), depends on the sample alone, so one poison
    reaches one model: the DPA footprint. The certified prediction is poisoncert's vote (each
    model's argmax, the smaller class index winning ties), which can differ from ART's own
    ``predict`` on ties. See :data:`DETERMINISM_CAVEAT`: ART trains its models one after another
    from torch's global generator, so the footprint holds only for base models that draw no
    randomness while training (no dropout, augmentation or shuffling); a global seed makes the
    run reproducible, not each model a function of its own partition.
    """
    if not (hasattr(ensemble, "predict") and hasattr(ensemble, "ensemble_size")):
        raise PoisonCertError(f"from_art needs an ART DeepPartitionEnsemble (predict, ensemble_size), got {type(ensemble).__name__}")
    k = int(ensemble.ensemble_size)
    raw = np.asarray(ensemble.predict(np.asarray(x), batch_size=batch_size, raw=True))
    n_test = len(np.asarray(x))
    if raw.ndim != 3 or raw.shape[:2] != (k, n_test):
        raise PoisonCertError(f"ART's predict(raw=True) gave shape {raw.shape}, expected (ensemble_size={k}, n_test={n_test}, n_classes)")
    hash_fn = getattr(ensemble, "hash_function", None)
    how = "ART default int(np.sum(x)) % k" if getattr(hash_fn, "__name__", "") == "default_hash" else f"custom {getattr(hash_fn, '__name__', 'hash')}"
    return from_outputs(raw, y, "models,tests,classes", "dpa", k=k, source=f"art.DeepPartitionEnsemble ({how} partitions)")
