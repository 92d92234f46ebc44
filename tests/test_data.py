import os
import pickle
import struct

import numpy as np
import pytest

from poisoncert.data import Dataset, canonical_order, content_hash, load_dataset, read_dataset, save_dataset
from poisoncert.errors import PoisonCertError


def test_digits_is_canonical(digits):
    assert digits.train_images.dtype == np.uint8 and digits.train_images.shape[1:] == (1, 8, 8)
    assert digits.train_labels.dtype == np.int64
    assert len(digits.train_labels) == 1438 and len(digits.test_labels) == 359
    assert digits.train_images.max() == 255 and digits.n_classes == 10
    assert set(np.unique(digits.train_labels)) == set(range(10))
    # the split is fixed by the seed and changes with it
    again = load_dataset("digits")
    assert content_hash(again) == content_hash(digits)
    assert content_hash(load_dataset("digits", seed=1)) != content_hash(digits)


def test_canonical_order_ignores_input_order(digits, rng):
    x, y = digits.train_images, digits.train_labels
    perm = rng.permutation(len(y))
    a = canonical_order(x, y)
    b = canonical_order(x[perm], y[perm])
    assert np.array_equal(x[a], x[perm][b]) and np.array_equal(y[a], y[perm][b])


def test_canonical_order_is_lexicographic_pixels_then_label():
    x = np.array([[2, 0], [1, 9], [1, 9], [0, 255]], dtype=np.uint8).reshape(4, 1, 1, 2)
    y = np.array([0, 3, 1, 7])
    order = canonical_order(x, y)
    assert order.tolist() == [3, 2, 1, 0]  # [0,255] < [1,9]/label1 < [1,9]/label3 < [2,0]


def test_dataset_file_roundtrip(tmp_path, digits):
    meta = save_dataset(digits, tmp_path / "d.npz")
    back = read_dataset(tmp_path / "d.npz")
    assert meta["content_hash"] == content_hash(back)
    assert np.array_equal(back.train_images, digits.train_images)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_truncated_dataset_file_is_one_clear_error(tmp_path, digits):
    save_dataset(digits, tmp_path / "d.npz")
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PoisonCertError, match="corrupt or truncated"):
        read_dataset(tmp_path / "t.npz")
    with pytest.raises(PoisonCertError, match="does not exist"):
        read_dataset(tmp_path / "missing.npz")


def test_tampered_dataset_file_fails_hash_check(tmp_path, digits):
    save_dataset(digits, tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_labels"] = arrays["train_labels"].copy()
    arrays["train_labels"][0] = (arrays["train_labels"][0] + 1) % 10
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(PoisonCertError, match="content hash"):
        read_dataset(tmp_path / "bad.npz")


def test_unknown_dataset():
    with pytest.raises(PoisonCertError, match="unknown dataset 'imagenet'; choose one of"):
        load_dataset("imagenet")


def test_bad_arrays_rejected():
    x = np.zeros((3, 1, 2, 2), np.uint8)
    with pytest.raises(PoisonCertError, match="labels must lie"):
        Dataset("t", x, np.array([0, 1, 5]), x, np.array([0, 1, 1]), 2)
    with pytest.raises(PoisonCertError, match="uint8"):
        Dataset("t", x.astype(np.float32), np.array([0, 1, 1]), x, np.array([0, 1, 1]), 2)


def _write_idx(path, arr, magic_type):
    with open(path, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, magic_type, arr.ndim))
        for dim in arr.shape:
            fh.write(struct.pack(">I", dim))
        fh.write(arr.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path, rng):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 12)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", imgs, 0x08)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x08)
    return tmp_path


def test_mnist_through_torchvision(fake_mnist):
    ds = load_dataset("mnist", root=fake_mnist)
    assert ds.train_images.shape == (40, 1, 28, 28) and ds.test_images.shape == (12, 1, 28, 28)
    assert ds.train_labels.tolist() == [i % 10 for i in range(40)]


def test_mnist17_keeps_ones_and_sevens(fake_mnist):
    ds = load_dataset("mnist17", root=fake_mnist)
    assert ds.n_classes == 2 and ds.class_names == ["1", "7"]
    assert len(ds.train_labels) == 8  # digits 1 and 7 among 40 samples labelled i % 10
    assert sorted(set(ds.train_labels.tolist())) == [0, 1]


def test_missing_mnist_says_where_to_put_files(tmp_path):
    with pytest.raises(PoisonCertError) as info:
        load_dataset("mnist", root=tmp_path / "nowhere")
    msg = str(info.value)
    assert "\n" not in msg
    assert "MNIST/raw/train-images-idx3-ubyte" in msg and "download: true" in msg


def test_missing_cifar_and_gtsrb_say_where_to_put_files(tmp_path):
    for name, needle in (("cifar10", "cifar-10-batches-py"), ("gtsrb", "GTSRB/Training/"), ("gtsrb48", "GTSRB/Final_Training/Images/")):
        with pytest.raises(PoisonCertError, match=needle) as info:
            load_dataset(name, root=tmp_path)
        assert "\n" not in str(info.value) and "GT-final_test.csv" in str(info.value) or name == "cifar10"


# ---------------------------------------------------------------------------------------------- GTSRB


def _ppm(path, rng, h, w):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)  # .ppm: PIL writes binary P6, as GTSRB's files are
    return pixels


@pytest.fixture
def fake_gtsrb(tmp_path, rng):
    """GTSRB in torchvision's layout (root/gtsrb/GTSRB/Training/000NN/*.ppm, Final_Test/Images/*.ppm,
    root/gtsrb/GT-final_test.csv) plus the official final training set (GTSRB/Final_Training/Images/000NN/),
    photos of varying size as in GTSRB. Returns (root, {split: [(pixels, label), ...]})."""
    base = tmp_path / "gtsrb"
    made = {"train": [], "final": [], "test": []}
    for split, folder, n in (("train", "GTSRB/Training", 5), ("final", "GTSRB/Final_Training/Images", 7)):
        for i in range(n):
            label = (3 * i) % 43
            pixels = _ppm(base / folder / f"{label:05d}" / f"00000_{i:05d}.ppm", rng, 25 + 3 * i, 31 + 2 * i)
            made[split].append((pixels, label))
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(4):
        label = 40 - i
        pixels = _ppm(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", rng, 30 + i, 29)
        rows.append(f"{i:05d}.ppm;29;{30 + i};5;5;20;20;{label}")
        made["test"].append((pixels, label))
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return tmp_path, made


def _by_label(made):
    return sorted((label, int(p.astype(np.int64).sum())) for p, label in made)


@pytest.mark.parametrize("name, size, split", [("gtsrb", 32, "train"), ("gtsrb48", 48, "final")])
def test_gtsrb_through_torchvision_layout(fake_gtsrb, name, size, split):
    from PIL import Image

    from poisoncert import registry

    root, made = fake_gtsrb
    ds = load_dataset(name, root=root)
    assert ds.image_shape == (3, size, size) == registry.dataset(name).image_shape and ds.n_classes == 43
    assert len(ds.train_labels) == len(made[split]) and ds.test_labels.tolist() == [40, 39, 38, 37]
    # the partition hash is the pixel sum of the *original* image (the DPA / FA references), not of the resized one
    assert sorted(zip(ds.train_labels.tolist(), ds.train_pixel_sums.tolist())) == _by_label(made[split])
    resized = ds.train_images.reshape(len(ds.train_images), -1).sum(axis=1)
    assert not np.array_equal(resized, ds.train_pixel_sums)
    # images: PIL's bilinear resize of the RGB photo (torchvision's Resize((size, size)) on a PIL image)
    pixels, label = made["test"][0]
    expect = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
    assert ds.test_labels[0] == label and np.array_equal(ds.test_images[0], expect)


def test_gtsrb_file_keeps_original_pixel_sums_and_partitions_use_them(tmp_path, fake_gtsrb):
    from poisoncert.partition import make_partitions, pixel_sum_hash

    root, _ = fake_gtsrb
    ds = load_dataset("gtsrb48", root=root)
    save_dataset(ds, tmp_path / "g.npz")
    back = read_dataset(tmp_path / "g.npz")
    assert np.array_equal(back.train_pixel_sums, ds.train_pixel_sums) and content_hash(back) == content_hash(ds)
    # the pixel sums are part of the content hash: other sums = other partitions = another dataset
    other = Dataset(ds.name, ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, 43, ds.class_names,
                    ds.train_pixel_sums + 1)
    assert content_hash(other) != content_hash(ds)
    k = 3
    parts = make_partitions(ds.train_images, ds.train_labels, "dpa", k, pixel_sums=ds.train_pixel_sums)
    for m in range(k):
        assert (ds.train_pixel_sums[parts.members(m)] % k == m).all()
    stored = make_partitions(ds.train_images, ds.train_labels, "dpa", k)
    for m in range(k):
        assert (pixel_sum_hash(ds.train_images[stored.members(m)]) % k == m).all()
    with pytest.raises(PoisonCertError, match="one value per training sample"):
        make_partitions(ds.train_images, ds.train_labels, "dpa", k, pixel_sums=ds.train_pixel_sums[:-1])
    with pytest.raises(PoisonCertError, match="train_pixel_sums"):
        Dataset("x", ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, 43, [], ds.train_pixel_sums[:-1])


def test_cifar10_through_torchvision(tmp_path, rng, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": [0, 1, 2, 3]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    # the fake files cannot match torchvision's md5 sums; skip only that integrity check
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.test_images.shape == (4, 3, 32, 32)
    assert ds.class_names[0] == "c0"
    # channel-first conversion keeps the CIFAR byte layout (R plane, then G, then B)
    with open(folder / "data_batch_1", "rb") as fh:
        first = pickle.load(fh)["data"][0]
    assert np.array_equal(ds.train_images[0].reshape(-1), first)


# ---------------------------------------------------------------------------------------------- Fashion-MNIST

#: SHA-256 of Fashion-MNIST in canonical form (Debian's dataset-fashion-mnist = the official files).
FASHION_MNIST_SHA256 = "b42e0f3189f494f730119201c9e1a41654a875ffd564ea07b7cf8032d5327c02"


def _real_fashion_mnist():
    from poisoncert.data import FASHION_MNIST_DEBIAN

    if not FASHION_MNIST_DEBIAN.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's dataset-fashion-mnist: `make install` installs it as root (apt-get)")
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make data)")


def test_fashion_mnist_real_files_full_size():
    _real_fashion_mnist()
    from poisoncert import registry
    from poisoncert.data import content_hash, load_dataset

    ds = load_dataset("fashion_mnist", root="/nonexistent")  # falls back to the Debian files
    rec = registry.dataset("fashion_mnist")
    assert (len(ds.train_labels), len(ds.test_labels), ds.n_classes, ds.image_shape) == (60000, 10000, 10, (1, 28, 28))
    assert (rec.n_train, rec.n_test, rec.n_classes, rec.image_shape) == (60000, 10000, 10, (1, 28, 28))
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10 and np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert content_hash(ds) == FASHION_MNIST_SHA256


def test_fashion_mnist_prefers_torchvision_layout(tmp_path, rng):
    from poisoncert.data import load_dataset

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 30), ("t10k", 12)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x08)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8), 0x08)
    ds = load_dataset("fashion_mnist", root=tmp_path)
    assert (len(ds.train_labels), len(ds.test_labels)) == (30, 12)  # the files made here, not Debian's


def test_fashion_mnist_gz_fallback_and_errors(tmp_path, rng, monkeypatch):
    import gzip

    from poisoncert import data

    deb = tmp_path / "deb"
    deb.mkdir()
    for prefix, n in (("train", 20), ("t10k", 8)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)), ("labels-idx1", rng.integers(0, 10, n, dtype=np.uint8))):
            plain = tmp_path / "plain"
            _write_idx(plain, arr, 0x08)
            (deb / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(plain.read_bytes()))
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", deb)
    ds = data.load_dataset("fashion_mnist", root=tmp_path / "empty")
    assert (len(ds.train_labels), len(ds.test_labels)) == (20, 8)
    (deb / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(PoisonCertError, match=r"exist but cannot be read.*corrupt"):
        data.load_dataset("fashion_mnist", root=tmp_path / "empty")
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", tmp_path / "nowhere")
    with pytest.raises(PoisonCertError, match=r"not found under .*FashionMNIST/raw/train-images-idx3-ubyte.*apt-get install dataset-fashion-mnist") as info:
        data.load_dataset("fashion_mnist", root=tmp_path / "empty")
    assert "\n" not in str(info.value)
