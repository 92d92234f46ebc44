"""SS-DPA semi-supervised base learners (DPA paper, papers/000, Section 2.3 and App. B).

Two label-free feature learners that are trained ONCE on the unlabeled training images, and the
cheap label-dependent parts that every SS-DPA base classifier trains on its own partition:

* **RotNet** (Section 2.3.1; Gidaris et al. 2018): a small Network-in-Network-like conv net learns
  to predict which of the rotations 0/90/180/270 degrees was applied to an unlabeled image. An
  intermediate block's activations (average-pooled to a small grid and standardised with
  statistics over the unlabeled training images) are the features. :func:`train_extractor`,
  :func:`extract_features`.
* **Heads** (eq. 8, ``f_i(x) = f(samples(T), P_i, x)``): base classifier i is a small linear or
  one-hidden-layer classifier trained on the features of partition i's labeled samples only.
  :func:`train_heads`.
* **App. B binary 2-means**: 2-means clustering of the unlabeled images; with k = m (one labeled
  sample per partition) base classifier i gives x the label of t_i if x and t_i share a cluster,
  else the other label. :func:`kmeans2`, :func:`assign_clusters`, :func:`binary_kmeans_fit`,
  :func:`binary_kmeans_base_votes` (the literal per-base-classifier definition, for checks);
  the closed-form certificate is :func:`poisoncert.certify.binary.binary_kmeans`.

Why the certificate counts label flips (Theorem 2): the learned features / centroids are a
function of the *set* of unlabeled training images only. The learners take images without
labels, deduplicate them and sort them by content (so input order and multiplicities cannot
matter), seed every random draw, and run with ``torch.use_deterministic_algorithms(True)``.
A head is a function of (its partition's set of (feature, label) pairs, its seed): it is trained
alone, on its rows re-sorted by content, so nothing from another partition reaches it.

Pure functions: no file I/O. Torch is imported lazily.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .data import canonical_order, row_keys
from .errors import PoisonCertError

__all__ = [
    "ExtractorConfig",
    "HeadConfig",
    "unique_sorted_images",
    "train_extractor",
    "extract_features",
    "train_heads",
    "KMeansConfig",
    "kmeans2",
    "assign_clusters",
    "binary_kmeans_fit",
    "binary_kmeans_base_votes",
]


# ---------------------------------------------------------------------------------------------- common


def unique_sorted_images(images: np.ndarray) -> np.ndarray:
    """``samples(T)`` as a sorted set: the distinct images in lexicographic pixel-byte order.

    Same ordering as :func:`poisoncert.partition.sorted_index` (``np.unique`` over byte rows), so
    ``unique_sorted_images(x)[sorted_index(x)] == x``.
    """
    x = _check_images(images)
    n = len(x)
    if n == 0:
        return x
    _, first = np.unique(row_keys(x), return_index=True)
    return np.ascontiguousarray(x[first])


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise PoisonCertError(f"{name} must be uint8 (N, C, H, W), got {x.dtype} {x.shape}")
    return x


def _images_hash(u: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{u.dtype.str}{u.shape}".encode())
    h.update(np.ascontiguousarray(u).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- RotNet


@dataclass(frozen=True)
class ExtractorConfig:
    """RotNet feature extractor (Gidaris et al. 2018, as used by DPA Section 2.3.1), scaled down.

    The net is ``n_blocks`` NiN blocks (conv3x3 -> conv1x1 -> conv1x1, each with BatchNorm and
    ReLU; block b has ``width * 2**min(b, 1)`` channels), with a 2x2 average pool between blocks
    while the map is larger than 2x2, then a global average pool and a linear layer over the 4
    rotations. Features = output of block ``feature_block`` (1-based, RotNet's best is the 2nd),
    average-pooled to ``feature_pool`` x ``feature_pool`` and flattened, then standardised with
    the mean/std over the unlabeled training images. SGD with Nesterov momentum and a cosine
    learning rate; each batch holds ``batch_size`` images in all 4 rotations. ``crop_pad`` > 0
    adds a seeded random-shift augmentation (zero padding, random crop); no flips (DPA Section 3:
    flips are not label-preserving for digits).
    """

    width: int = 16
    n_blocks: int = 3
    feature_block: int = 2
    feature_pool: int = 2
    epochs: int = 12
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    crop_pad: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.width < 1 or self.n_blocks < 1 or self.epochs < 0 or self.batch_size < 1 or self.feature_pool < 1
                or not 0 <= self.momentum < 1 or self.weight_decay < 0 or self.lr <= 0 or self.crop_pad < 0 or self.seed < 0):
            raise PoisonCertError(f"bad extractor configuration: {self}")
        if not 1 <= self.feature_block <= self.n_blocks:
            raise PoisonCertError(f"feature_block must lie in [1, n_blocks={self.n_blocks}], got {self.feature_block}")
        if self.crop_pad < 0:
            raise PoisonCertError(f"crop_pad must be >= 0, got {self.crop_pad}")


def _build_rotnet(config: ExtractorConfig, in_channels: int, height: int):
    import torch
    from torch import nn

    class RotNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks = []
            cin, size = in_channels, height
            self.pool_after: list[bool] = []
            for b in range(config.n_blocks):
                w = config.width * (2 ** min(b, 1))
                blocks.append(nn.Sequential(
                    nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                    nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                    nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                ))
                pool = b < config.n_blocks - 1 and size > 2
                self.pool_after.append(pool)
                if pool:
                    size //= 2
                cin = w
            self.blocks = nn.ModuleList(blocks)
            self.fc = nn.Linear(cin, 4)

        def forward(self, x: torch.Tensor, feature_block: int | None = None) -> torch.Tensor:
            for b, block in enumerate(self.blocks):
                x = block(x)
                if feature_block is not None and b + 1 == feature_block:
                    return x
                if self.pool_after[b]:
                    x = nn.functional.avg_pool2d(x, 2)
            return self.fc(x.mean(dim=(2, 3)))

    return RotNet()


def _rotations(x):
    """All 4 rotations of a batch: (4B, C, H, W) and rotation labels 0..3 (k * 90 degrees)."""
    import torch

    xs = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    ys = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return xs, ys


def _random_shift(x, pad: int, gen):
    import torch

    n, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).tolist()
    return torch.stack([xp[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(off)])


def train_extractor(images_uint8: np.ndarray, config: ExtractorConfig = ExtractorConfig(), device: str | None = "cpu") -> dict[str, Any]:
    """Train the RotNet extractor on the *set* of unlabeled images ``images_uint8`` (N, C, H, W).

    Labels are never an input. The images are deduplicated and sorted by content first, so the
    result is bit-identical for any order (and any multiplicities) of the same images, given the
    same config, torch build, device and thread count. Returns a state dict::

        {"config": dict, "image_shape": [C, H, W], "mean": float32 (C,), "std": float32 (C,),
         "weights": {name: CPU tensor}, "feature_mean": float32 (F,), "feature_std": float32 (F,),
         "n_features": F, "n_images": distinct images used, "images_sha256": str,
         "history": [rotation-prediction training loss per epoch]}
    """
    import torch

    from .train import deterministic_mode, resolve_device

    x = _check_images(images_uint8)
    _, C, H, W = x.shape
    if H != W:
        raise PoisonCertError(f"RotNet needs square images (rotations must keep the shape), got {H}x{W}")
    u = unique_sorted_images(x)
    if len(u) == 0:
        raise PoisonCertError("train_extractor needs at least one image")
    mean = u.reshape(len(u), C, -1).astype(np.float64).mean(axis=(0, 2)) / 255.0
    std = u.reshape(len(u), C, -1).astype(np.float64).std(axis=(0, 2)) / 255.0
    std = np.where(std > 0, std, 1.0)
    dev = resolve_device(device)
    history: list[float] = []
    with deterministic_mode(seed=config.seed):
        gen = torch.Generator().manual_seed(config.seed)
        model = _build_rotnet(config, C, H).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay, nesterov=config.momentum > 0)
        steps_per_epoch = -(-len(u) // config.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs * steps_per_epoch))
        m_t = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, C, 1, 1)
        s_t = torch.tensor(std, dtype=torch.float32, device=dev).view(1, C, 1, 1)
        data = torch.from_numpy(u)
        model.train()
        for _ in range(config.epochs):
            perm = torch.randperm(len(u), generator=gen)
            total, count = 0.0, 0
            for s in range(0, len(u), config.batch_size):
                xb = data[perm[s:s + config.batch_size]].float().div_(255.0)
                if config.crop_pad:
                    xb = _random_shift(xb, config.crop_pad, gen)
                xb = (xb.to(dev) - m_t) / s_t
                xr, yr = _rotations(xb)
                loss = torch.nn.functional.cross_entropy(model(xr), yr)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(xr)
                count += len(xr)
            history.append(total / max(count, 1))
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state: dict[str, Any] = {
        "config": asdict(config),
        "image_shape": [int(C), int(H), int(W)],
        "mean": mean.astype(np.float32),
        "std": std.astype(np.float32),
        "weights": weights,
        "n_images": int(len(u)),
        "images_sha256": _images_hash(u),
        "history": history,
    }
    # feature standardisation: statistics over the (sorted, distinct) unlabeled training images
    raw = _raw_features(state, u, device)
    fm = raw.astype(np.float64).mean(axis=0)
    fs = raw.astype(np.float64).std(axis=0)
    state["feature_mean"] = fm.astype(np.float32)
    state["feature_std"] = np.where(fs > 1e-6, fs, 1.0).astype(np.float32)
    state["n_features"] = int(raw.shape[1])
    return state


def _raw_features(state: dict[str, Any], images: np.ndarray, device: str | None, batch_size: int = 512) -> np.ndarray:
    import torch

    from .train import deterministic_mode, resolve_device

    config = ExtractorConfig(**state["config"])
    C, H, W = state["image_shape"]
    if tuple(images.shape[1:]) != (C, H, W):
        raise PoisonCertError(f"extractor was trained on images of shape {(C, H, W)}, got {tuple(images.shape[1:])}")
    dev = resolve_device(device)
    out = []
    with deterministic_mode(seed=config.seed), torch.no_grad():
        model = _build_rotnet(config, C, H)
        model.load_state_dict(state["weights"])
        model.to(dev).eval()
        m_t = torch.as_tensor(np.asarray(state["mean"]), dtype=torch.float32, device=dev).view(1, C, 1, 1)
        s_t = torch.as_tensor(np.asarray(state["std"]), dtype=torch.float32, device=dev).view(1, C, 1, 1)
        p = config.feature_pool
        for s in range(0, len(images), batch_size):
            xb = (torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).to(dev).float() / 255.0 - m_t) / s_t
            f = model(xb, feature_block=config.feature_block)
            f = torch.nn.functional.adaptive_avg_pool2d(f, (min(p, f.shape[2]), min(p, f.shape[3])))
            out.append(f.flatten(1).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def extract_features(state: dict[str, Any], images_uint8: np.ndarray, device: str | None = "cpu") -> np.ndarray:
    """Standardised RotNet features, float32 (N, F), of the images (train or test).

    The images are processed in sorted-unique order and scattered back, so each image's feature
    row does not depend on the order of ``images_uint8`` or on which other images it is with
    (beyond the fixed batch layout of the distinct sorted images).
    """
    x = _check_images(images_uint8)
    if len(x) == 0:
        return np.zeros((0, int(state["n_features"])), np.float32)
    from .partition import sorted_index

    u = unique_sorted_images(x)
    raw = _raw_features(state, u, device)
    feats = (raw - np.asarray(state["feature_mean"], np.float32)) / np.asarray(state["feature_std"], np.float32)
    return np.ascontiguousarray(feats[sorted_index(x)].astype(np.float32))


# ---------------------------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class HeadConfig:
    """A per-partition classifier on extracted features (numpy, float64).

    ``hidden`` = 0: multinomial logistic regression; > 0: one hidden ReLU layer of that width.
    Full-batch Adam (``lr``, betas 0.9/0.999) for ``steps`` steps on the mean cross-entropy plus
    ``0.5 * weight_decay * ||W||^2`` over the weight matrices. Weights start from
    ``numpy.random.default_rng([seed, 0x4EAD])`` (He-normal for the hidden layer, N(0, 0.01^2)
    for the output layer), so the partition seed matters (DPA App. F) while staying a pure
    function of (the partition's (feature, label) set, seed).
    """

    hidden: int = 0
    steps: int = 200
    lr: float = 0.05
    weight_decay: float = 1e-3

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.steps < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise PoisonCertError(f"bad head configuration: {self}")


def _train_one_head(f: np.ndarray, y: np.ndarray, seed: int, test: np.ndarray, n_classes: int, config: HeadConfig) -> np.ndarray:
    """Full-batch Adam on one partition; returns float32 test logits (n_test, n_classes)."""
    rng = np.random.default_rng([seed, 0x4EAD])
    n, F = f.shape
    x = f.astype(np.float64)
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0
    H = config.hidden
    if H:
        params = [rng.normal(0.0, np.sqrt(2.0 / F), (F, H)), np.zeros(H), rng.normal(0.0, 0.01, (H, n_classes)), np.zeros(n_classes)]
    else:
        params = [rng.normal(0.0, 0.01, (F, n_classes)), np.zeros(n_classes)]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    b1, b2, eps, wd = 0.9, 0.999, 1e-8, config.weight_decay

    def forward(inp, ps):
        if H:
            h = np.maximum(inp @ ps[0] + ps[1], 0.0)
            return h @ ps[2] + ps[3], h
        return inp @ ps[0] + ps[1], None

    for t in range(1, config.steps + 1):
        z, h = forward(x, params)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        dz = (p - onehot) / n
        if H:
            dh = (dz @ params[2].T) * (h > 0)
            grads = [x.T @ dh + wd * params[0], dh.sum(axis=0), h.T @ dz + wd * params[2], dz.sum(axis=0)]
        else:
            grads = [x.T @ dz + wd * params[0], dz.sum(axis=0)]
        c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        for i, g in enumerate(grads):
            m1[i] = b1 * m1[i] + (1.0 - b1) * g
            m2[i] = b2 * m2[i] + (1.0 - b2) * g * g
            params[i] = params[i] - config.lr * (m1[i] / c1) / (np.sqrt(m2[i] / c2) + eps)
    return forward(test.astype(np.float64), params)[0].astype(np.float32)


def train_heads(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    members: Sequence[np.ndarray],
    seeds: Sequence[int],
    test_features: np.ndarray,
    n_classes: int,
    config: HeadConfig = HeadConfig(),
) -> np.ndarray:
    """SS-DPA base classifiers: head b trained on ``train_features[members[b]]`` with their labels.

    Returns float32 logits (B, n_test, n_classes). Head b is a deterministic function of the set
    of (feature, label) pairs of its members and ``seeds[b]`` only: heads are trained one at a
    time (numpy, CPU), each on its rows sorted by content, so its logits are bit-identical whatever
    the other partitions hold. An empty partition gets zero logits (a vote for class 0) and a warning.
    """
    ftr = np.asarray(train_features, dtype=np.float32)
    ytr = np.asarray(train_labels)
    fte = np.ascontiguousarray(np.asarray(test_features, dtype=np.float32))
    if ftr.ndim != 2 or fte.ndim != 2 or ftr.shape[1] != fte.shape[1]:
        raise PoisonCertError(f"features must be (N, F) and (n_test, F), got {ftr.shape} and {fte.shape}")
    if ytr.shape != (len(ftr),):
        raise PoisonCertError(f"train_labels must be ({len(ftr)},), got {ytr.shape}")
    if len(members) != len(seeds):
        raise PoisonCertError(f"{len(members)} partitions but {len(seeds)} seeds")
    if len(ytr) and (ytr.min() < 0 or ytr.max() >= n_classes):
        raise PoisonCertError(f"train_labels must lie in [0, {n_classes})")
    if not (np.isfinite(ftr).all() and np.isfinite(fte).all()):
        raise PoisonCertError("features contain NaN/inf")
    out = np.zeros((len(members), len(fte), n_classes), np.float32)
    empty = []
    for b, (idx, seed) in enumerate(zip(members, seeds)):
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            empty.append(b)
            continue
        f, y = ftr[idx], ytr[idx]
        o = canonical_order(f, y)
        out[b] = _train_one_head(np.ascontiguousarray(f[o]), y[o], int(seed), fte, n_classes, config)
    if empty:
        warnings.warn(f"{len(empty)} of {len(members)} SS-DPA heads have an empty partition (first: {empty[:5]});"
                      " they output zero logits (a vote for class 0)", stacklevel=2)
    return out


# ---------------------------------------------------------------------------------------------- App. B: 2-means


@dataclass(frozen=True)
class KMeansConfig:
    """Deterministic 2-means (Lloyd's algorithm, float64) for App. B.

    ``n_init`` k-means++ starts, start r drawn with ``numpy.random.default_rng([seed, r])`` over the
    sorted distinct points; the run with the lowest inertia wins (ties: the first). Lloyd stops
    when the assignment no longer changes or after ``max_iter`` iterations.
    """

    n_init: int = 4
    max_iter: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_init < 1 or self.max_iter < 1:
            raise PoisonCertError(f"bad k-means configuration: {self}")


def _sqdist(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, 2) squared Euclidean distances, computed as sums of squared differences (no cancellation)."""
    return np.stack([((points - c) ** 2).sum(axis=1) for c in centroids], axis=1)


def assign_clusters(centroids: np.ndarray, points: np.ndarray) -> np.ndarray:
    """App. B ``assignment(s)``: 0 if ||mu_1 - s||^2 <= ||mu_2 - s||^2 else 1 (ties to the first centroid).

    ``points``: (N, D) float, or uint8 images (N, C, H, W) (flattened and scaled by 1/255, as in
    :func:`binary_kmeans_fit`). Returns int64 (N,) in {0, 1}.
    """
    p = _as_points(points)
    c = np.asarray(centroids, dtype=np.float64)
    if c.shape != (2, p.shape[1]):
        raise PoisonCertError(f"centroids must have shape (2, {p.shape[1]}), got {c.shape}")
    d = _sqdist(p, c)
    return (d[:, 0] > d[:, 1]).astype(np.int64)


def _as_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points)
    if p.dtype == np.uint8 and p.ndim == 4:
        return p.reshape(len(p), -1).astype(np.float64) / 255.0
    if p.ndim != 2:
        raise PoisonCertError(f"points must be (N, D) or uint8 images (N, C, H, W), got shape {p.shape}")
    return p.astype(np.float64)


def _kmeanspp(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    first = int(rng.integers(len(p)))
    d = ((p - p[first]) ** 2).sum(axis=1)
    total = d.sum()
    second = int(rng.choice(len(p), p=d / total)) if total > 0 else first
    return np.stack([p[first], p[second]])


def _lloyd(p: np.ndarray, c: np.ndarray, max_iter: int) -> tuple[np.ndarray, float]:
    assign = None
    for _ in range(max_iter):
        d = _sqdist(p, c)
        new = (d[:, 0] > d[:, 1]).astype(np.int64)
        for j in (0, 1):
            if not (new == j).any():  # empty cluster: take the point farthest from its centroid
                far = int(np.argmax(d[np.arange(len(p)), new]))
                new[far] = j
        c = np.stack([p[new == j].mean(axis=0) for j in (0, 1)])
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
    d = _sqdist(p, c)
    return c, float(d.min(axis=1).sum())


def kmeans2(points: np.ndarray, config: KMeansConfig = KMeansConfig()) -> np.ndarray:
    """Two centroids, float64 (2, D), of the *set* of ``points`` (deterministic, label-free).

    The rows are deduplicated and sorted by content first (so order and multiplicity cannot matter),
    and the two centroids are returned in lexicographic order of their values (a canonical naming).
    """
    p = _as_points(points)
    if len(p) < 2:
        raise PoisonCertError(f"2-means needs at least 2 points, got {len(p)}")
    p = np.unique(p, axis=0)  # sorted distinct rows
    if len(p) < 2:
        raise PoisonCertError("2-means needs at least 2 distinct points")
    best, best_inertia = None, np.inf
    for r in range(config.n_init):
        c0 = _kmeanspp(p, np.random.default_rng([config.seed, r]))
        c, inertia = _lloyd(p, c0, config.max_iter)
        if inertia < best_inertia:
            best, best_inertia = c, inertia
    order = np.lexsort(best.T[::-1])
    return np.ascontiguousarray(best[order])


def binary_kmeans_fit(train_images: np.ndarray, test_images: np.ndarray, config: KMeansConfig = KMeansConfig()) -> dict[str, np.ndarray]:
    """App. B, label-free part: 2-means on the unlabeled training images, cluster of every image.

    Images are flattened and scaled to [0, 1]. Returns ``{"centroids": (2, D) float64,
    "train_clusters": int64 (N,), "test_clusters": int64 (n_test,)}``; feed the clusters and the
    training labels to :func:`poisoncert.certify.binary.binary_kmeans`.
    """
    tr = _check_images(train_images, "train_images")
    te = _check_images(test_images, "test_images")
    mu = kmeans2(tr, config)
    return {"centroids": mu, "train_clusters": assign_clusters(mu, tr), "test_clusters": assign_clusters(mu, te)}


def binary_kmeans_base_votes(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                             config: KMeansConfig = KMeansConfig()) -> np.ndarray:
    """App. B literally: the vote of every base classifier f_i (k = m, P_i = {t_i}) on every test image.

    f_i(x) = label(t_i) if assignment(x) == assignment(t_i) else 1 - label(t_i). Returns int64
    (n_test, m). O(n_test * m) memory: for checks on small data; use the closed form
    :func:`poisoncert.certify.binary.binary_kmeans` at scale.
    """
    y = np.asarray(train_labels, dtype=np.int64)
    if y.shape != (len(train_images),) or (len(y) and (y.min() < 0 or y.max() > 1)):
        raise PoisonCertError("binary 2-means needs one label in {0, 1} per training image")
    fit = binary_kmeans_fit(train_images, test_images, config)
    same = fit["test_clusters"][:, None] == fit["train_clusters"][None, :]
    return np.where(same, y[None, :], 1 - y[None, :]).astype(np.int64)
