"""Datasets in one canonical form, and the file that holds them.

Every dataset lands in a :class:`Dataset`: uint8 images (N, C, H, W), int64 labels, a train and a
test split, and a content hash. ``digits`` (scikit-learn's bundled 8x8 digits) needs no network
and is the default (``digits17``: its 1s and 7s only); ``mnist``, ``mnist17``, ``cifar10``, ``gtsrb``
and ``gtsrb48`` load through torchvision from a configurable root and download only when asked to.

The canonical file is an uncompressed ``.npz`` with the arrays ``train_images``,
``train_labels``, ``test_images``, ``test_labels``, for datasets resized from images of varying
size also ``train_pixel_sums`` (the DPA hash of each *source* image, see :class:`Dataset`), and a
JSON ``meta`` string (name, classes, shape, content hash). It is written atomically (temporary
file, then rename), so an interrupted write never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import registry as _registry
from .errors import PoisonCertError

__all__ = [
    "Dataset",
    "DATASETS",
    "TRAIN_SIZES",
    "N_CLASSES",
    "load_dataset",
    "save_dataset",
    "read_dataset",
    "content_hash",
    "canonical_order",
    "row_keys",
    "atomic_file",
    "scratch_file",
    "write_errors",
    "atomic_savez",
    "atomic_write_text",
    "load_npz",
]


@dataclass
class Dataset:
    """A dataset in canonical form: uint8 images (N, C, H, W) and int64 labels for train and test."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    n_classes: int
    class_names: list[str] = field(default_factory=list)
    #: h(t) of every training sample when it is not the stored image's pixel sum: the sum of the uint8
    #: pixel values of the *source* image before resizing (GTSRB, whose photos vary in size: the DPA and
    #: FA references hash the original image and train on the resized one). None = the stored images'.
    train_pixel_sums: np.ndarray | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"{split}_images")
            y = getattr(self, f"{split}_labels")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise PoisonCertError(f"{self.name}: {split} images must be uint8 (N, C, H, W), got {x.dtype} {x.shape}")
            if y.ndim != 1 or len(y) != len(x):
                raise PoisonCertError(f"{self.name}: {split} labels must be one per image ({len(y)} labels, {len(x)} images)")
            if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
                raise PoisonCertError(f"{self.name}: {split} labels must lie in [0, {self.n_classes})")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise PoisonCertError(f"{self.name}: train and test images differ in shape")
        self.train_labels = self.train_labels.astype(np.int64, copy=False)
        self.test_labels = self.test_labels.astype(np.int64, copy=False)
        if self.train_pixel_sums is not None:
            sums = np.asarray(self.train_pixel_sums)
            if sums.shape != self.train_labels.shape or not np.issubdtype(sums.dtype, np.integer) or (len(sums) and sums.min() < 0):
                raise PoisonCertError(f"{self.name}: train_pixel_sums must be one non-negative integer per training image")
            self.train_pixel_sums = sums.astype(np.int64, copy=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def meta(self) -> dict:
        return {
            "name": self.name,
            "n_classes": int(self.n_classes),
            "class_names": list(self.class_names),
            "image_shape": list(self.image_shape),
            "n_train": int(len(self.train_labels)),
            "n_test": int(len(self.test_labels)),
            "content_hash": content_hash(self),
        }


def content_hash(ds: Dataset) -> str:
    """SHA-256 over the four arrays (shape, dtype and bytes), and ``train_pixel_sums`` when the dataset
    has them (they decide the partitions): identifies the data a run used."""
    h = hashlib.sha256()
    extra = () if ds.train_pixel_sums is None else (ds.train_pixel_sums,)
    for arr in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, *extra):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def row_keys(rows: np.ndarray) -> np.ndarray:
    """One opaque key per row (its bytes as a numpy void scalar): sorting them sorts rows by their
    bytes lexicographically. The one content key of the package (canonical order, SS-DPA's sorted
    index, the unique unlabeled images of the extractor)."""
    n = len(rows)
    raw = np.ascontiguousarray(rows).reshape(n, -1).view(np.uint8)
    return raw.view(np.dtype((np.void, raw.shape[1]))).ravel()


def canonical_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Permutation that sorts samples lexicographically by pixel bytes, then label.

    DPA paper Section 2.2.1: "a lexical sort by pixel values, with the labels concatenated to the
    samples as an additional value". Sorting a training set by content makes anything computed
    from it independent of the order in which the samples were read. Stable, so exact duplicates
    keep their relative order (which cannot matter: they are identical). ``images`` may be any
    array with one row per sample (uint8 images; float32 features of the SS-DPA heads): rows are
    compared by their bytes.

    >>> canonical_order(np.array([[2], [1], [1]], np.uint8), np.array([0, 1, 0])).tolist()
    [2, 1, 0]
    """
    n = len(labels)
    if n <= 1:
        return np.arange(n)
    raw = np.ascontiguousarray(images).reshape(n, -1).view(np.uint8)  # any dtype: sort by its bytes
    rows = np.empty((n, raw.shape[1] + 8), dtype=np.uint8)
    rows[:, :-8] = raw
    rows[:, -8:] = np.asarray(labels, dtype=">i8").view(np.uint8).reshape(n, 8)
    return np.argsort(row_keys(rows), kind="stable")


# ----------------------------------------------------------------------------------------------
# loaders


def _digits(root: Path, download: bool, seed: int, test_fraction: float = 0.2, digits: tuple[int, ...] | None = None,
            name: str = "digits") -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), no network.

    Pixel values 0..16 are mapped to uint8 by round(v * 255 / 16). The train/test split is a
    fixed permutation from ``numpy.random.default_rng(seed)``; ``test_fraction`` goes to test.
    With ``digits``, only those digits are kept (relabelled 0..len(digits)-1 in the given order)
    *before* the split, so the split sizes do not depend on the seed.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    names = [str(i) for i in range(10)]
    if digits is not None:
        lut = np.full(10, -1, dtype=np.int64)
        lut[list(digits)] = np.arange(len(digits))
        keep = lut[y] >= 0
        x, y = x[keep], lut[y[keep]]
        names = [str(d) for d in digits]
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return Dataset(name, x[tr], y[tr], x[te], y[te], len(names), names)


def _digits17(root: Path, download: bool, seed: int) -> Dataset:
    """scikit-learn digits restricted to 1 and 7 (labels 0 and 1): a CI-scale stand-in for mnist17 (DPA App. B).

    361 images (182 ones, 179 sevens), split 80/20 like ``digits``: 289 train, 72 test.
    """
    return _digits(root, download, seed, digits=(1, 7), name="digits17")


def _torchvision_error(name: str, root: Path, files: list[str], exc: Exception, present: list[str] | None = None) -> PoisonCertError:
    """One line for a torchvision dataset that could not be read: missing (where to put it) or,
    when the files named in ``present`` all exist, corrupt (which to replace)."""
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
    if present and all(Path(f).is_file() for f in present):
        return PoisonCertError(
            f"dataset '{name}' files under {root} exist but cannot be read ({detail}); they are corrupt or truncated: "
            f"replace {', '.join(present)}"
        )
    where = ", ".join(files)
    return PoisonCertError(
        f"dataset '{name}' not found under {root} ({detail}); "
        f"put {where} there (or set data_root in the config), or set download: true on a machine with internet"
    )


def _images_to_nchw(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3:  # N, H, W
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3):  # N, H, W, C
        arr = arr.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(arr.astype(np.uint8))


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
#: Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist): gzipped idx files.
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format; ``.gz`` decompressed on the fly) into a uint8 array.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
    >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(p).tolist()
    [7, 8, 9]
    """
    import gzip

    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} holds {data.size} bytes of data, its header says {dims}")
    return data.reshape(dims)


def _mnist_layout(name: str, tv_name: str, root: Path, download: bool, fallback: Path | None = None):
    """(train images, train labels, test images, test labels, class names) of an MNIST-format dataset.

    torchvision's layout under ``root`` first (``root/<tv_name>/raw/<idx files>``); then, when
    given, ``fallback``: a folder of the four idx files, gzipped or not (Debian's package).
    """
    from torchvision import datasets

    cls = getattr(datasets, tv_name)
    files = [f"{root}/{tv_name}/raw/{f}" for f in MNIST_FILES]
    try:
        tr = cls(str(root), train=True, download=download)
        te = cls(str(root), train=False, download=download)
        return tr.data.numpy(), tr.targets.numpy(), te.data.numpy(), te.targets.numpy(), list(tr.classes)
    except Exception as exc:  # torchvision raises RuntimeError("Dataset not found..."), URLError, or fails on bad files
        found = [fallback / f"{f}{ext}" for f in MNIST_FILES for ext in ("", ".gz") if fallback is not None and (fallback / f"{f}{ext}").is_file()]
        if len(found) == len(MNIST_FILES) and not any(Path(f).exists() for f in files):
            try:
                arrays = [read_idx(p) for p in found]
            except (OSError, ValueError, EOFError) as exc2:
                raise _torchvision_error(name, fallback, [str(p) for p in found], exc2, present=[str(p) for p in found]) from None
            return (*arrays, list(cls.classes))
        err = _torchvision_error(name, root, files, exc, present=files)
        if fallback is not None and "not found" in str(err):
            err = PoisonCertError(f"{err}; or install Debian's package as root: apt-get install dataset-fashion-mnist (files in {fallback})")
        raise err from None


def _mnist(root: Path, download: bool, seed: int, digits: tuple[int, ...] | None = None, name: str = "mnist") -> Dataset:
    xtr, ytr, xte, yte, _ = _mnist_layout(name, "MNIST", root, download)
    xtr, ytr = _images_to_nchw(xtr), ytr.astype(np.int64)
    xte, yte = _images_to_nchw(xte), yte.astype(np.int64)
    names = [str(i) for i in range(10)]
    if digits is not None:
        # keep only the given digits, relabelled 0..len(digits)-1 in the given order
        lut = np.full(10, -1, dtype=np.int64)
        lut[list(digits)] = np.arange(len(digits))
        mtr, mte = lut[ytr] >= 0, lut[yte] >= 0
        xtr, ytr, xte, yte = xtr[mtr], lut[ytr[mtr]], xte[mte], lut[yte[mte]]
        names = [str(d) for d in digits]
    return Dataset(name, xtr, ytr, xte, yte, len(names), names)


def _fashion_mnist(root: Path, download: bool, seed: int) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 / 10,000 28x28 grey images of 10 clothing classes, MNIST's format.

    torchvision's ``FashionMNIST/raw/`` under ``root``, else Debian's ``dataset-fashion-mnist``
    files: the full-size real dataset every machine here can install.
    """
    xtr, ytr, xte, yte, names = _mnist_layout("fashion_mnist", "FashionMNIST", root, download, FASHION_MNIST_DEBIAN)
    return Dataset("fashion_mnist", _images_to_nchw(xtr), ytr.astype(np.int64), _images_to_nchw(xte), yte.astype(np.int64), 10, names)


def _mnist17(root: Path, download: bool, seed: int) -> Dataset:
    """MNIST restricted to the digits 1 and 7 (labels 0 and 1), DPA paper App. B."""
    return _mnist(root, download, seed, digits=(1, 7), name="mnist17")


def _cifar10(root: Path, download: bool, seed: int) -> Dataset:
    from torchvision import datasets

    try:
        tr = datasets.CIFAR10(str(root), train=True, download=download)
        te = datasets.CIFAR10(str(root), train=False, download=download)
    except Exception as exc:
        raise _torchvision_error("cifar10", root, [f"{root}/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"], exc) from None
    return Dataset(
        "cifar10",
        _images_to_nchw(tr.data),
        np.asarray(tr.targets, dtype=np.int64),
        _images_to_nchw(te.data),
        np.asarray(te.targets, dtype=np.int64),
        10,
        list(tr.classes),
    )


#: GTSRB's archives at the benchmark's home (torchvision downloads from the same folder).
GTSRB_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
#: The official final training set (39,209 images, the joint training and test sets of the online
#: competition): not what torchvision's ``split="train"`` reads (GTSRB-Training_fixed.zip, the online
#: competition's 26,640-image training set, in ``GTSRB/Training/``).
GTSRB_FINAL_TRAINING = ("GTSRB_Final_Training_Images.zip", "GTSRB/Final_Training/Images")


def _gtsrb_split(paths_labels: list[tuple[str, int]], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images resized to ``size`` x ``size``, labels, pixel sums of the original images) of GTSRB files.

    Resizing is PIL's bilinear resize of the RGB image (torchvision's ``Resize((size, size))`` on a
    PIL image), as the DPA / FA reference code does before ``ToTensor``; the pixel sum is taken over
    the original RGB image, as the references hash it (``ToTensor(image) * 255``, exact in float32).
    """
    from PIL import Image

    n = len(paths_labels)
    xs = np.empty((n, 3, size, size), dtype=np.uint8)
    ys = np.empty(n, dtype=np.int64)
    sums = np.empty(n, dtype=np.int64)
    for i, (path, label) in enumerate(paths_labels):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        sums[i] = np.asarray(rgb, dtype=np.uint8).sum(dtype=np.int64)
        xs[i] = np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8).transpose(2, 0, 1)
        ys[i] = label
    return xs, ys, sums


def _gtsrb_class_folders(folder: Path) -> list[tuple[str, int]]:
    """(path, class) of every ``.ppm`` under ``folder/000NN/``: the class is the folder's number.

    torchvision's ``GTSRB`` numbers the folders it finds 0, 1, ... (``find_classes``), which is the
    class only when all 43 folders exist; reading the number keeps a partial copy's labels right.
    """
    from torchvision.datasets.folder import make_dataset

    classes = {d.name: int(d.name) for d in folder.iterdir() if d.is_dir() and d.name.isdigit()}
    return make_dataset(str(folder), class_to_idx=classes, extensions=(".ppm",))


def _gtsrb_files(root: Path, download: bool, final_training: bool) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(path, class) of GTSRB's training and test images under ``root/gtsrb``.

    Test: torchvision's ``split="test"`` (the official 12,630-image final test set,
    ``GTSRB/Final_Test/Images/`` and ``GT-final_test.csv``). Training: the folder torchvision's
    ``split="train"`` reads (``GTSRB/Training/``, 26,640 images), or with ``final_training`` the
    official final training set (``GTSRB/Final_Training/Images/000NN/*.ppm``, 39,209 images, from
    ``GTSRB_Final_Training_Images.zip``; torchvision does not know it: ``download`` fetches it with
    torchvision's archive helper, without an md5 check). Class folders 00000..00042 are the labels.
    """
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    base = root / "gtsrb"
    archive, folder = GTSRB_FINAL_TRAINING
    train_dir = base / folder if final_training else base / "GTSRB" / "Training"
    where = f"{train_dir}/" + (f" (the official final training set, {GTSRB_URL}{archive})" if final_training else "")
    expected = [where, f"{base}/GTSRB/Final_Test/Images/", f"{base}/GT-final_test.csv"]
    try:
        test = datasets.GTSRB(str(root), split="test", download=download)._samples
        if download and not train_dir.is_dir():
            if final_training:
                download_and_extract_archive(f"{GTSRB_URL}{archive}", download_root=str(base))
            else:
                datasets.GTSRB(str(root), split="train", download=True)
        if not train_dir.is_dir():
            raise RuntimeError("Dataset not found")
        return _gtsrb_class_folders(train_dir), test
    except Exception as exc:
        raise _torchvision_error("gtsrb48" if final_training else "gtsrb", root, expected, exc) from None


def _gtsrb_dataset(name: str, root: Path, download: bool, size: int, final_training: bool) -> Dataset:
    """GTSRB (Stallkamp et al. 2012, 43 classes) resized to ``size`` x ``size`` RGB; see :func:`_gtsrb_files`.

    ``train_pixel_sums`` are the original images' pixel sums, so the DPA / FA partitions are those of the
    references (which hash the unresized image) whatever the stored resolution.
    """
    train, test = _gtsrb_files(root, download, final_training)
    xtr, ytr, htr = _gtsrb_split(train, size)
    xte, yte, _ = _gtsrb_split(test, size)
    return Dataset(name, xtr, ytr, xte, yte, 43, [str(i) for i in range(43)], train_pixel_sums=htr)


def _gtsrb(root: Path, download: bool, seed: int) -> Dataset:
    """torchvision's GTSRB splits (26,640 training images, GTSRB-Training_fixed.zip; the 12,630 final test
    images), resized to 32x32: CIFAR-10's shape, a cheaper stand-in for the references' ``gtsrb48``."""
    return _gtsrb_dataset("gtsrb", root, download, 32, final_training=False)


def _gtsrb48(root: Path, download: bool, seed: int) -> Dataset:
    """The DPA / FA / ROE references' GTSRB: the official final training set (39,209 images) and the
    final test set (12,630), resized to 48x48 (``Resize((48, 48), BILINEAR)`` in their scripts), hashed on
    the original images."""
    return _gtsrb_dataset("gtsrb48", root, download, 48, final_training=True)


#: Dataset name -> loader, from the registry's records (:data:`poisoncert.registry.DATASETS`).
DATASETS: dict[str, Callable[..., Dataset]] = {name: globals()[rec.loader] for name, rec in _registry.DATASETS.items()}
#: Training-set sizes and numbers of classes, known without loading (config checks).
TRAIN_SIZES: dict[str, int] = {name: rec.n_train for name, rec in _registry.DATASETS.items()}
N_CLASSES: dict[str, int] = {name: rec.n_classes for name, rec in _registry.DATASETS.items()}


def load_dataset(name: str, root: str | os.PathLike = "data", download: bool = False, seed: int = 0) -> Dataset:
    """Load dataset ``name`` into canonical form (raises :class:`PoisonCertError` with a fix)."""
    if name not in DATASETS:
        raise PoisonCertError(f"unknown dataset '{name}'; choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name](Path(root), download, seed)


# ----------------------------------------------------------------------------------------------
# files


#: errno of a write the file system refused -> (what happened, how to fix it). Raised by any write
#: (these never come from reading an input), so they are always this path's fault.
_WRITE_ERRNOS = {
    errno.ENOSPC: ("the disk is full", "free space there (or set another working directory) and rerun"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space there (or set another working directory) and rerun"),
    errno.EFBIG: ("the file would exceed the file-size limit", "raise the limit (ulimit -f unlimited) and rerun"),
    errno.EROFS: ("its folder is on a read-only file system", "run from a writable working directory"),
}
#: ... and those that are this path's fault only when they name it, one of its folders or its temporary
#: (a read can raise them too).
_PERMISSION_ERRNOS = {
    errno.EACCES: ("permission denied", "make the folder writable for this user, or run elsewhere"),
    errno.EPERM: ("operation not permitted", "make the folder writable for this user, or run elsewhere"),
    errno.EEXIST: ("a part of its folder path is a file, not a folder", "choose another output path"),
    errno.ENOTDIR: ("a part of its folder path is a file, not a folder", "choose another output path"),
    errno.ENAMETOOLONG: ("the file name is too long for the file system", "choose a shorter output path"),
}
#: The temporaries of output ``.NAME`` beside it: ``.NAME.tmp<pid>[.ext]`` (:func:`atomic_file`),
#: ``.NAME.scores<pid>.npy`` (:func:`poisoncert.scores.scores_writer`).
_TEMPORARY = re.compile(r"(?:tmp|scores)\d+(?:\.[A-Za-z0-9]+)?")


def write_error(path: str | os.PathLike, exc: OSError) -> PoisonCertError | None:
    """One line for a write of ``path`` that the file system refused (disk full, file-size limit,
    read-only folder, permissions); None for any other error, which keeps its traceback.

    >>> import errno
    >>> print(write_error("results/x.csv", OSError(errno.ENOSPC, "No space left on device")))
    cannot write results/x.csv: the disk is full (No space left on device); free space there (or set another working directory) and rerun
    >>> write_error("results/x.csv", FileNotFoundError(errno.ENOENT, "No such file or directory", "input.npz")) is None
    True
    """
    path = Path(path)
    what = _WRITE_ERRNOS.get(exc.errno)
    if what is None and exc.errno in _PERMISSION_ERRNOS:
        named = {str(p) for p in (exc.filename, exc.filename2) if p is not None}
        ours = {str(path), str(path.parent)} | {str(p) for p in path.parents}
        if not named or named & ours or any(Path(n).name.startswith(f".{path.name}.") for n in named):
            what = _PERMISSION_ERRNOS[exc.errno]
    if what is None:
        return None
    return PoisonCertError(f"cannot write {path}: {what[0]} ({exc.strerror or os.strerror(exc.errno)}); {what[1]}")


@contextlib.contextmanager
def write_errors(path: str | os.PathLike):
    """Turn a refused write of ``path`` (:func:`write_error`) into one line; anything else passes."""
    try:
        yield
    except OSError as exc:
        err = write_error(path, exc)
        if err is None:
            raise
        raise err from None


def _sweep_temporaries(path: Path) -> None:
    """Remove the temporaries a killed writer of ``path`` left beside it (a live writer holds a lock
    on its own, see :func:`scratch_file`), so no temporary outlives the rerun."""
    prefix = f".{path.name}."
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix) and _TEMPORARY.fullmatch(e.name[len(prefix):])]
    except OSError:
        return
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer's
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        finally:
            os.close(fd)


@contextlib.contextmanager
def scratch_file(path: str | os.PathLike, tag: str = "tmp", suffix: str = ""):
    """Yield a new, locked temporary file ``.NAME.<tag><pid><suffix>`` beside output ``path``, removed
    afterwards whatever happens; a rerun removes one that a killed process left.

    First the folder is made and stale temporaries of ``path`` are swept; refused writes
    (:func:`write_errors`) become one line.
    """
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_temporaries(path)
        tmp = path.with_name(f".{path.name}.{tag}{os.getpid()}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel if this process dies
        with write_errors(path):
            yield tmp
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def preallocate(path: str | os.PathLike) -> None:
    """Reserve every block of file ``path`` now (``posix_fallocate``), so that a memory map of it
    never meets a full disk while it is written (a sparse file's page would fault with SIGBUS, a
    silent death): the disk is full here, as an ``OSError`` (ENOSPC) that :func:`write_errors` reports."""
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size:
            os.posix_fallocate(fh.fileno(), 0, size)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The one atomic-write step of the package: an interrupted or failed write never leaves a file
    that looks complete, and never leaves the temporary file behind (nor does a killed one outlive
    the next write of ``path``: :func:`scratch_file`); a full disk, a file-size limit or a read-only
    folder is one line (:func:`write_errors`). ``suffix`` keeps an extension on the temporary name
    for writers that infer the format from it (matplotlib).
    """
    path = Path(path)
    if path.is_dir():
        raise PoisonCertError(f"output path {path} is a folder; give a file name")
    with scratch_file(path, "tmp", suffix) as tmp:
        yield tmp
        with write_errors(path):
            os.replace(tmp, path)


def atomic_savez(path: str | os.PathLike, *, compressed: bool = False, **arrays) -> None:
    """``np.savez`` (``np.savez_compressed`` with ``compressed``) through :func:`atomic_file`."""
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def load_npz(path: str | os.PathLike, what: str, required: tuple[str, ...], skip: tuple[str, ...] = (),
             remedy: str = "delete it and rerun the workflow") -> dict[str, np.ndarray]:
    """Read a whole ``.npz`` file (but the arrays in ``skip``), turning a missing, truncated, corrupt
    (zip CRC) or foreign file into one clear line; ``remedy`` says how to make it again.

    A single ``.npy`` array and a member holding a pickled Python object (``np.savez`` of a dict)
    get their own line: they are not damaged, just not this format.
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise PoisonCertError(f"{what} file must be a path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise PoisonCertError(f"{what} file {path} does not exist; run the step that writes it first")
    if path.is_dir():
        raise PoisonCertError(f"{what} file {path} is a folder, not an .npz file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise PoisonCertError(f"{what} file {path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if magic == b"\x93NUMPY":
        raise PoisonCertError(
            f"{what} file {path} is a single .npy array, not an .npz archive of named arrays ({', '.join(required)}, meta); "
            "save it with numpy.savez (for scores: poisoncert.scores.write_scores)"
        )
    out: dict[str, np.ndarray] = {}
    key = None
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                if key not in skip:
                    out[key] = z[key]
    except ValueError as exc:
        if "pickle" in str(exc) and key is not None:
            raise PoisonCertError(
                f"'{key}' in {what} file {path} is a pickled Python object, which poisoncert never loads (it could run code); "
                + ("store the metadata as a JSON string: meta=np.array(json.dumps(meta))" if key == "meta" else "store it as a plain numeric array")
            ) from None
        raise PoisonCertError(f"{what} file {path} is corrupt or truncated ({type(exc).__name__}); {remedy}") from None
    except PoisonCertError:
        raise
    except Exception as exc:  # BadZipFile (CRC), EOFError, a damaged header's NotImplementedError / RuntimeError / ...
        raise PoisonCertError(f"{what} file {path} is corrupt or truncated ({type(exc).__name__}); {remedy}") from None
    missing = [k for k in required if k not in out and k not in skip]
    if missing:
        raise PoisonCertError(f"{what} file {path} lacks {', '.join(missing)}; it is not a poisoncert {what} file (rerun the step that writes it)")
    return out


def save_dataset(ds: Dataset, path: str | os.PathLike) -> dict:
    """Write the canonical dataset file; returns its metadata (including the content hash)."""
    meta = ds.meta()
    extra = {} if ds.train_pixel_sums is None else {"train_pixel_sums": ds.train_pixel_sums}
    atomic_savez(
        path,
        train_images=ds.train_images,
        train_labels=ds.train_labels,
        test_images=ds.test_images,
        test_labels=ds.test_labels,
        meta=np.array(json.dumps(meta)),
        **extra,
    )
    return meta


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read a canonical dataset file, checking its content hash."""
    z = load_npz(path, "dataset", ("train_images", "train_labels", "test_images", "test_labels", "meta"))
    meta = json.loads(str(z["meta"]))
    ds = Dataset(meta["name"], z["train_images"], z["train_labels"], z["test_images"], z["test_labels"], meta["n_classes"], meta.get("class_names", []),
                 z.get("train_pixel_sums"))
    if content_hash(ds) != meta["content_hash"]:
        raise PoisonCertError(f"dataset file {path} does not match its recorded content hash; delete it and rerun 'prepare'")
    return ds
