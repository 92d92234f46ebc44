"""SS-DPA semi-supervised base learners (DPA paper, papers/000, Section 2.3 and App. B).

Label-free feature learners that are trained ONCE on the unlabeled training images, and the
label-dependent parts that every SS-DPA base classifier trains on its own partition:

* **RotNet** (Section 2.3.1; Gidaris et al. 2018): a network learns to predict which of the
  rotations 0/90/180/270 degrees was applied to an unlabeled image; an intermediate stage's
  activations are the features. ``ExtractorConfig(arch="nin")`` (the default) is the paper's:
  Gidaris' 4-stage NetworkInNetwork (built from :func:`poisoncert.models.nin_stage`), its conv2
  feature maps (192 x 7 x 7 on MNIST, 192 x 8 x 8 on CIFAR-10), step schedule, crops (and flips on
  CIFAR-10). ``arch="light"`` is the CPU-sized variant of the digits twins (small 3x3 blocks,
  features pooled to a small grid). :func:`train_extractor`, :func:`extract_features`.
* **SimCLR** (``arch="resnet18"``, learner ``simclr``; the DPA code's SS-DPA on CIFAR-10 / GTSRB):
  a CIFAR ResNet-18 trained with the NT-Xent loss (:func:`nt_xent`) on two augmented views of
  every unlabeled image; its 512 pooled features.
* **Heads** (eq. 8, ``f_i(x) = f(samples(T), P_i, x)``): base classifier i is trained on partition
  i's labeled samples only, on the frozen extractor (:class:`HeadConfig`): the paper's NiN
  ConvBlock3 on the feature maps (``nin_block``) or a linear layer (``linear``), both by minibatch
  SGD on augmented images through the extractor (:class:`SGDHeadConfig`); or the light numpy
  logistic regression on standardised features (``logistic``, :func:`train_heads`).
  :func:`train_base_heads` dispatches.
* **App. B binary 2-means**: 2-means clustering of the unlabeled images; with k = m (one labeled
  sample per partition) base classifier i gives x the label of t_i if x and t_i share a cluster,
  else the other label. :func:`kmeans2`, :func:`assign_clusters`, :func:`binary_kmeans_fit`,
  :func:`binary_kmeans_base_votes` (the literal per-base-classifier definition, for checks);
  the closed-form certificate is :func:`poisoncert.certify.binary.binary_kmeans`.

Why the certificate counts label flips (Theorem 2): the learned features / centroids are a
function of the *set* of unlabeled training images only. The learners take images without
labels, deduplicate them and sort them by content (so input order and multiplicities cannot
matter), seed every random draw (one CPU ``torch.Generator`` of the extractor seed for shuffling
and augmentation), and run with ``torch.use_deterministic_algorithms(True)``. A head is a
function of (its partition's set of (image, label) pairs, its seed, the extractor): it is trained
alone, on its rows re-sorted by content, so nothing from another partition reaches it.

Pure functions: no file I/O. Torch is imported lazily.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .data import canonical_order, row_keys
from .errors import PoisonCertError
from .learners.base import check_feature_sets, per_partition
from .schema import param

__all__ = [
    "EXTRACTOR_ARCHS",
    "ExtractorConfig",
    "HeadConfig",
    "SGDHeadConfig",
    "LogisticHeadConfig",
    "extractor_config",
    "nt_xent",
    "train_base_heads",
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


# ---------------------------------------------------------------------------------------------- extractors

#: Extractor networks: ``nin`` and ``light`` learn by rotation prediction (RotNet), ``resnet18`` by
#: SimCLR's contrastive loss.
EXTRACTOR_ARCHS = ("nin", "light", "resnet18")
LR_SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class ExtractorConfig:
    """A label-free feature extractor, trained once on the set of unlabeled training images.

    Defaults are the DPA paper's RotNet (Section 2.3.1 and Section 3; Gidaris et al. 2018,
    ``config/MNIST_RotNet_NIN4blocks.py`` of the DPA code, ``CIFAR10_RotNet_NIN4blocks.py`` of
    Gidaris'): ``arch="nin"`` with ``n_blocks=4`` NiN stages (:func:`poisoncert.models.nin_stage`:
    5x5 192/160/96, max-pool, 5x5 192/192/192, avg-pool, two 3x3 stages of 192, global average
    pool, linear over the 4 rotations); 200 epochs of SGD (lr 0.1, Nesterov momentum 0.9, weight
    decay 5e-4, batch 128 images in all 4 rotations) with the step schedule lr x 0.2 at epochs 60,
    120, 160; random crops with 4 pixels of zero padding, applied once per image before its 4
    rotations (and horizontal flips on CIFAR-10: ``hflip``). Features: the output of stage
    ``feature_block`` (2: RotNet's ``conv2``, pooling included): 192 x 7 x 7 maps on MNIST,
    192 x 8 x 8 on CIFAR-10. Images are normalised with the per-channel mean / std of the unlabeled
    training images (the reference's fixed dataset constants are the same statistics).

    ``arch="light"``: the CPU-sized variant the digits twins and ``config/fashion_mnist.yaml`` use
    (not the paper's): ``n_blocks`` blocks of conv3x3 -> conv1x1 -> conv1x1 (BN, ReLU), block b
    with ``width * 2**min(b, 1)`` channels, 2x2 average pooling between blocks while the map is
    larger than 2x2; features: block ``feature_block`` average-pooled to ``feature_pool`` x
    ``feature_pool`` and flattened; usually with ``lr_schedule="cosine"`` and ``crop_pad=0``.

    ``arch="resnet18"`` (learner ``simclr``): SimCLR (Chen et al. 2020) as in the DPA code's
    ``SupContrast`` directory (its SS-DPA on CIFAR-10 / GTSRB): a CIFAR-style ResNet-18
    (:func:`poisoncert.models.resnet18_backbone`, 512 features) and a projection MLP
    512-512-``proj_dim``, trained with the NT-Xent loss at ``temperature`` on two augmented views
    of every image (random resized crop of scale [``min_crop_scale``, 1], ``hflip``, colour jitter
    of strength ``color_jitter`` with probability ``jitter_prob``, grayscale with probability
    ``grayscale_prob``); features: the 512 pooled backbone outputs. The learner's own defaults
    (:data:`poisoncert.registry.SIMCLR_DEFAULTS`: 1000 epochs, batch 512, lr 0.5, weight decay
    1e-4, cosine schedule with 10 warm-up epochs, plain momentum, no pad-and-crop) replace these
    where a config leaves them out.

    ``width``: the nin stages' width (192 = the paper's 192/160/96) or the light blocks' base
    width; small widths keep tests fast. Every random draw (initial weights, shuffling,
    augmentation) comes from ``seed``.
    """

    # Each field's doc, bounds and allowed values are the config schema's (poisoncert.schema generates
    # experiments.<name>.extractor from them: edit here, then `python -m poisoncert.schema --write`).
    arch: str = param("nin", "nin: the paper's RotNet (Gidaris' NetworkInNetwork: 5x5 192/160/96, max-pool, 5x5 192, avg-pool, "
                      "3x3 stages; rotation prediction); light: small 3x3 blocks, pooled features (CPU option, rotation "
                      "prediction); resnet18: SimCLR's CIFAR ResNet-18 (contrastive; learner simclr).", enum=EXTRACTOR_ARCHS)
    width: int = param(192, "nin: stage width (192 = the paper's 192/160/96); light: channels of block 1 (2x after); resnet18: unused.",
                       minimum=1, maximum=4096)
    n_blocks: int = param(4, "nin: NiN stages (4 in the paper); light: blocks; resnet18: unused.", minimum=1, maximum=64)
    feature_block: int = param(2, "nin, light: stage / block whose output is the feature (2: RotNet's conv2, 192x7x7 on MNIST, "
                               "192x8x8 on CIFAR-10).", minimum=1, maximum=64)
    feature_pool: int = param(2, "light only: the feature block's output is average-pooled to this many rows and columns.", minimum=1, maximum=64)
    epochs: int = param(200, "Training epochs (RotNet 200; SimCLR 1000).", minimum=0, maximum=100000)
    lr: float = param(0.1, "Initial SGD learning rate.", exclusive_minimum=0)
    momentum: float = param(0.9, "SGD momentum.", minimum=0, exclusive_maximum=1)
    nesterov: bool = param(True, "Nesterov momentum (RotNet yes, SimCLR no).")
    weight_decay: float = param(5e-4, "SGD weight decay.", minimum=0)
    batch_size: int = param(128, "Images per minibatch (RotNet: each in all 4 rotations; SimCLR: 2 views each).", minimum=1, maximum=1000000)
    lr_schedule: str = param("step", "step: lr x lr_gamma at each of lr_milestones (RotNet); cosine: to 0 over all steps (SimCLR, "
                             "and the light twins).", enum=LR_SCHEDULES)
    lr_milestones: tuple[int, ...] = param((60, 120, 160), "Step schedule: epochs from which the learning rate is multiplied by "
                                           "lr_gamma once more (Gidaris' LUT).", item_minimum=1, item_maximum=100000)
    lr_gamma: float = param(0.2, "Step-schedule decay factor.", exclusive_minimum=0)
    warmup_epochs: int = param(0, "Linear learning-rate warm-up over this many epochs before the schedule (SimCLR: 10).", minimum=0, maximum=100000)
    crop_pad: int = param(4, "RotNet: seeded random crop with this zero padding, once per image before its rotations (0 = off).",
                          minimum=0, maximum=64)
    hflip: bool = param(False, "Random horizontal flips (CIFAR-10 only in the papers; not for digits, MNIST, GTSRB).")
    temperature: float = param(0.5, "SimCLR only: NT-Xent temperature.", exclusive_minimum=0)
    proj_dim: int = param(128, "SimCLR only: output size of the projection MLP 512-512-proj_dim.", minimum=1, maximum=65536)
    min_crop_scale: float = param(0.2, "SimCLR only: smallest area fraction of the random resized crop.", exclusive_minimum=0, maximum=1)
    color_jitter: float = param(0.4, "SimCLR only: brightness / contrast / saturation jitter strength (hue: a quarter of it).", minimum=0)
    jitter_prob: float = param(0.8, "SimCLR only: probability of colour jitter.", minimum=0, maximum=1)
    grayscale_prob: float = param(0.2, "SimCLR only: probability of grayscale (3-channel images).", minimum=0, maximum=1)
    seed: int = param(0, "Seed of every random draw of the extractor.", minimum=0, maximum=4611686018427387904)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        if self.arch not in EXTRACTOR_ARCHS:
            raise PoisonCertError(f"extractor arch must be one of {', '.join(EXTRACTOR_ARCHS)}, got {self.arch!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise PoisonCertError(f"extractor lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if (self.width < 1 or self.n_blocks < 1 or self.epochs < 0 or self.batch_size < 1 or self.feature_pool < 1
                or not 0 <= self.momentum < 1 or self.weight_decay < 0 or self.lr <= 0 or self.crop_pad < 0 or self.seed < 0
                or self.lr_gamma <= 0 or self.warmup_epochs < 0 or any(m < 1 for m in self.lr_milestones)
                or self.temperature <= 0 or self.proj_dim < 1 or not 0 < self.min_crop_scale <= 1 or self.color_jitter < 0
                or not 0 <= self.jitter_prob <= 1 or not 0 <= self.grayscale_prob <= 1):
            raise PoisonCertError(f"bad extractor configuration: {self}")
        if not 1 <= self.feature_block <= self.n_blocks:
            raise PoisonCertError(f"feature_block must lie in [1, n_blocks={self.n_blocks}], got {self.feature_block}")

    @property
    def learner(self) -> str:
        """The registry learner this extractor belongs to: ``simclr`` for resnet18, else ``rotnet``."""
        return "simclr" if self.arch == "resnet18" else "rotnet"


def _build_rotnet(config: ExtractorConfig, in_channels: int, height: int):
    """The ``light`` RotNet (see :class:`ExtractorConfig`)."""
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

        def features(self, x: torch.Tensor) -> torch.Tensor:
            f = self(x, feature_block=config.feature_block)
            p = config.feature_pool
            f = nn.functional.adaptive_avg_pool2d(f, (min(p, f.shape[2]), min(p, f.shape[3])))
            return f.flatten(1)

    return RotNet()


def _build_nin_rotnet(config: ExtractorConfig, in_channels: int):
    """The paper's RotNet: ``n_blocks`` stages of Gidaris' ``NetworkInNetwork`` + a 4-way linear layer.

    PyTorch's default initialisation, as in the reference: its ``NetworkInNetwork`` defines
    ``weight_initialization`` but neither Gidaris' ``Algorithm`` nor the DPA code calls it."""
    from torch import nn

    from .models import GlobalAvgPool, nin_stage, nin_stage_out_channels

    class NinRotNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            stages, cin = [], in_channels
            for b in range(config.n_blocks):
                stages.append(nn.Sequential(*nin_stage(b, cin, config.width)))
                cin = nin_stage_out_channels(b, config.width)
            self.stages = nn.ModuleList(stages)
            self.pool = GlobalAvgPool()
            self.fc = nn.Linear(cin, 4)

        def forward(self, x):
            for stage in self.stages:
                x = stage(x)
            return self.fc(self.pool(x))

        def features(self, x):
            for stage in self.stages[: config.feature_block]:
                x = stage(x)
            return x

    return NinRotNet()


def _build_simclr(config: ExtractorConfig, in_channels: int):
    """SimCLR's ResNet-18 backbone (512 features) and projection MLP 512-512-``proj_dim``."""
    from torch import nn

    from .models import resnet18_backbone

    class SimCLRNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(*resnet18_backbone(in_channels))
            self.projection = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, config.proj_dim))

        def forward(self, x):
            return self.projection(self.backbone(x))

        def features(self, x):
            return self.backbone(x)

    return SimCLRNet()


def _build_extractor(config: ExtractorConfig, in_channels: int, height: int):
    if config.arch == "light":
        return _build_rotnet(config, in_channels, height)
    if config.arch == "nin":
        return _build_nin_rotnet(config, in_channels)
    return _build_simclr(config, in_channels)


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


def _random_hflip(x, gen):
    import torch

    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _gray(x):
    """Luminance (ITU-R 601) of (n, 3, H, W) images, (n, 1, H, W)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _simclr_view(x, config: ExtractorConfig, gen):
    """One SimCLR view of a batch x in [0, 1] (n, C, H, W), all draws from ``gen`` (CPU), in order:
    crop boxes, flips, jitter (apply?, brightness, contrast, saturation, hue), grayscale.

    Random resized crop: area fraction ~ U[min_crop_scale, 1], log aspect ratio ~ U[log 3/4, log 4/3]
    (clipped to the image), resized back bilinearly with ``grid_sample``. Colour jitter (fixed order
    brightness, contrast, saturation, hue; torchvision draws the order at random): factors in
    [1 - s, 1 + s], hue as a rotation of the chroma plane (YIQ) by up to s/4 of a turn -- an
    approximation of torchvision's HSV hue shift. Saturation, hue and grayscale act on 3-channel
    images only.
    """
    import math as _m

    import torch
    import torch.nn.functional as F

    n, C, H, W = x.shape
    u = torch.rand(n, 4, generator=gen)
    area = config.min_crop_scale + (1.0 - config.min_crop_scale) * u[:, 0]
    logr = _m.log(3 / 4) + (_m.log(4 / 3) - _m.log(3 / 4)) * u[:, 1]
    r = torch.exp(logr)
    cw = torch.sqrt(area * r).clamp(max=1.0)  # crop width / W
    ch = torch.sqrt(area / r).clamp(max=1.0)
    cx = (u[:, 2] * 2 - 1) * (1 - cw)  # centre in [-1 + cw, 1 - cw] (normalised coordinates)
    cy = (u[:, 3] * 2 - 1) * (1 - ch)
    flip = (torch.rand(n, generator=gen) < 0.5) if config.hflip else torch.zeros(n, dtype=torch.bool)
    sx = torch.where(flip, -cw, cw)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, ch, cy
    theta = theta.to(x.device)
    grid = F.affine_grid(theta, (n, C, H, W), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    s = config.color_jitter
    j = torch.rand(n, 5, generator=gen).to(x.device)
    apply = (j[:, 0] < config.jitter_prob).view(n, 1, 1, 1)
    b = 1 - s + 2 * s * j[:, 1].view(n, 1, 1, 1)
    c = 1 - s + 2 * s * j[:, 2].view(n, 1, 1, 1)
    jit = (v * b).clamp(0, 1)
    g = _gray(jit) if C == 3 else jit
    jit = ((jit - g.mean(dim=(1, 2, 3), keepdim=True)) * c + g.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    if C == 3:
        sat = 1 - s + 2 * s * j[:, 3].view(n, 1, 1, 1)
        g = _gray(jit)
        jit = (g + (jit - g) * sat).clamp(0, 1)
        ang = (2 * j[:, 4] - 1) * (s / 4) * 2 * _m.pi
        yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
        q = torch.einsum("ij,njhw->nihw", yiq, jit)
        cos, sin = torch.cos(ang).view(n, 1, 1), torch.sin(ang).view(n, 1, 1)
        i2 = cos * q[:, 1] - sin * q[:, 2]
        q2 = sin * q[:, 1] + cos * q[:, 2]
        q = torch.stack([q[:, 0], i2, q2], dim=1)
        jit = torch.einsum("ij,njhw->nihw", torch.linalg.inv(yiq), q).clamp(0, 1)
    v = torch.where(apply, jit, v)
    if C == 3:
        gray = (torch.rand(n, generator=gen) < config.grayscale_prob).to(x.device).view(n, 1, 1, 1)
        v = torch.where(gray, _gray(v).expand(-1, 3, -1, -1), v)
    return v


def nt_xent(z, temperature: float):
    """SimCLR's NT-Xent loss of 2N projections ``z`` (views i and i + N are positives), mean over 2N.

    >>> import torch
    >>> z = torch.eye(4)[[0, 1, 0, 1]] * 10.0   # perfectly matched views
    >>> float(nt_xent(z, 0.1)) < 1e-3            # log(1 + 2 exp(-10))
    True
    """
    import torch
    import torch.nn.functional as F

    n2 = z.shape[0]
    n = n2 // 2
    z = F.normalize(z, dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, n2), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def _scheduler(opt, config: ExtractorConfig, steps_per_epoch: int):
    """Per-step schedule: cosine to 0 over all steps (``CosineAnnealingLR``) or lr x gamma at each
    milestone epoch; with ``warmup_epochs`` a linear warm-up from lr / (warm-up steps) first."""
    import torch

    total = max(1, config.epochs * steps_per_epoch)
    warm = min(config.warmup_epochs * steps_per_epoch, total)
    if config.lr_schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm))
    else:
        main = torch.optim.lr_scheduler.MultiStepLR(opt, [m * steps_per_epoch - warm for m in config.lr_milestones if m * steps_per_epoch > warm],
                                                    gamma=config.lr_gamma)
    if not warm:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[warm])


def _pretext_loss(model, xb, config: ExtractorConfig, gen, m_t, s_t, dev):
    """The label-free loss of one batch of images in [0, 1] (CPU): rotation prediction or NT-Xent."""
    import torch

    if config.arch == "resnet18":  # the views are made on the device; their random draws come from the CPU ``gen``
        xb = xb.to(dev)
        v = torch.cat([_simclr_view(xb, config, gen), _simclr_view(xb, config, gen)])
        return nt_xent(model((v - m_t) / s_t), config.temperature), len(v)
    if config.crop_pad:
        xb = _random_shift(xb, config.crop_pad, gen)
    if config.hflip:
        xb = _random_hflip(xb, gen)
    xb = (xb.to(dev) - m_t) / s_t
    xr, yr = _rotations(xb)
    return torch.nn.functional.cross_entropy(model(xr), yr), len(xr)


def train_extractor(images_uint8: np.ndarray, config: ExtractorConfig = ExtractorConfig(), device: str | None = "cpu") -> dict[str, Any]:
    """Train the label-free extractor on the *set* of unlabeled images ``images_uint8`` (N, C, H, W).

    Labels are never an input. The images are deduplicated and sorted by content first, so the
    result is bit-identical for any order (and any multiplicities) of the same images, given the
    same config, torch build, device and thread count. Returns a state dict::

        {"config": dict, "image_shape": [C, H, W], "mean": float32 (C,), "std": float32 (C,),
         "weights": {name: CPU tensor}, "feature_shape": [F] or [C', h, w],
         "feature_mean": float32 (F,), "feature_std": float32 (F,), "n_features": F (flattened),
         "n_images": distinct images used, "images_sha256": str,
         "history": [training loss per epoch]}
    """
    import torch

    from .train import deterministic_mode, resolve_device

    x = _check_images(images_uint8)
    _, C, H, W = x.shape
    if H != W and config.arch != "resnet18":
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
        model = _build_extractor(config, C, H).to(dev)
        nesterov = config.nesterov and config.momentum > 0
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay, nesterov=nesterov)
        steps_per_epoch = -(-len(u) // config.batch_size)
        sched = _scheduler(opt, config, steps_per_epoch)
        m_t = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, C, 1, 1)
        s_t = torch.tensor(std, dtype=torch.float32, device=dev).view(1, C, 1, 1)
        data = torch.from_numpy(u)
        model.train()
        for _ in range(config.epochs):
            perm = torch.randperm(len(u), generator=gen)
            total, count = 0.0, 0
            for s in range(0, len(u), config.batch_size):
                xb = data[perm[s:s + config.batch_size]].float().div_(255.0)
                loss, rows = _pretext_loss(model, xb, config, gen, m_t, s_t, dev)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * rows
                count += rows
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
    # feature standardisation (for the logistic head): statistics over the sorted distinct training images
    raw = _raw_features(state, u, device)
    state["feature_shape"] = [int(s) for s in raw.shape[1:]]
    raw = raw.reshape(len(raw), -1)
    fm = raw.astype(np.float64).mean(axis=0)
    fs = raw.astype(np.float64).std(axis=0)
    state["feature_mean"] = fm.astype(np.float32)
    state["feature_std"] = np.where(fs > 1e-6, fs, 1.0).astype(np.float32)
    state["n_features"] = int(raw.shape[1])
    return state


def extractor_config(state: dict[str, Any]) -> ExtractorConfig:
    """The :class:`ExtractorConfig` an extractor state was trained with (older light states included)."""
    cfg = dict(state["config"])
    if "arch" not in cfg:  # written before the nin / resnet18 extractors: the light RotNet, cosine schedule
        cfg.update(arch="light", lr_schedule="cosine")
    return ExtractorConfig(**cfg)


class _Frozen:
    """An extractor in eval mode on a device, with its input normalisation."""

    def __init__(self, state: dict[str, Any], device: str | None) -> None:
        import torch

        from .train import resolve_device

        self.config = extractor_config(state)
        C, H, W = state["image_shape"]
        self.shape = (C, H, W)
        self.dev = resolve_device(device)
        with torch.random.fork_rng(devices=[]):
            self.model = _build_extractor(self.config, C, H)
        self.model.load_state_dict(state["weights"])
        self.model.to(self.dev).eval()
        self.mean = torch.as_tensor(np.asarray(state["mean"]), dtype=torch.float32, device=self.dev).view(1, C, 1, 1)
        self.std = torch.as_tensor(np.asarray(state["std"]), dtype=torch.float32, device=self.dev).view(1, C, 1, 1)

    def __call__(self, u8):
        """Raw features of a uint8 tensor batch (n, C, H, W) on any device (no grad)."""
        import torch

        with torch.no_grad():
            x = (u8.to(self.dev).float() / 255.0 - self.mean) / self.std
            return self.model.features(x)


def _raw_features(state: dict[str, Any], images: np.ndarray, device: str | None, batch_size: int = 512) -> np.ndarray:
    """Unstandardised features of ``images`` in fixed batches of ``batch_size``: (N, *feature_shape)."""
    import torch

    from .train import deterministic_mode

    C, H, W = state["image_shape"]
    if tuple(images.shape[1:]) != (C, H, W):
        raise PoisonCertError(f"extractor was trained on images of shape {(C, H, W)}, got {tuple(images.shape[1:])}")
    out = []
    with deterministic_mode(seed=int(state["config"]["seed"])):
        frozen = _Frozen(state, device)
        for s in range(0, len(images), batch_size):
            out.append(frozen(torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size]))).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def extract_features(state: dict[str, Any], images_uint8: np.ndarray, device: str | None = "cpu", standardize: bool = True) -> np.ndarray:
    """Extractor features of the images (train or test): float32 (N, F) standardised with the
    training-set statistics, or with ``standardize=False`` the raw (N, *feature_shape).

    The images are processed in sorted-unique order and scattered back, so each image's feature
    row does not depend on the order of ``images_uint8`` or on which other images it is with
    (beyond the fixed batch layout of the distinct sorted images).
    """
    x = _check_images(images_uint8)
    shape = tuple(state.get("feature_shape", [state["n_features"]]))
    if len(x) == 0:
        return np.zeros((0, int(state["n_features"])) if standardize else (0, *shape), np.float32)
    from .partition import sorted_index

    u = unique_sorted_images(x)
    raw = _raw_features(state, u, device)
    if not standardize:
        return np.ascontiguousarray(raw[sorted_index(x)])
    raw = raw.reshape(len(raw), -1)
    feats = (raw - np.asarray(state["feature_mean"], np.float32)) / np.asarray(state["feature_std"], np.float32)
    return np.ascontiguousarray(feats[sorted_index(x)].astype(np.float32))


# ---------------------------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class LogisticHeadConfig:
    """The light per-partition classifier on standardised, flattened features (numpy, float64).

    ``hidden`` = 0: multinomial logistic regression; > 0: one hidden ReLU layer of that width.
    Full-batch Adam (``lr``, betas 0.9/0.999) for ``steps`` steps on the mean cross-entropy plus
    ``0.5 * weight_decay * ||W||^2`` over the weight matrices. Weights start from
    ``numpy.random.default_rng([seed, 0x4EAD])`` (He-normal for the hidden layer, N(0, 0.01^2)
    for the output layer), so the partition seed matters (DPA App. F) while staying a pure
    function of (the partition's (feature, label) set, seed). Not the paper's head: the CPU
    option of the digits twins and Fashion-MNIST.
    """

    hidden: int = param(0, "0: multinomial logistic regression; > 0: one hidden ReLU layer of this width.", minimum=0, maximum=65536)
    steps: int = param(200, "Full-batch Adam steps.", minimum=0, maximum=10000000)
    lr: float = param(0.05, "Adam learning rate.", exclusive_minimum=0)
    weight_decay: float = param(1e-3, "L2 penalty 0.5 * weight_decay * ||W||^2 on the weight matrices.", minimum=0)

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.steps < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise PoisonCertError(f"bad head configuration: {self}")


@dataclass(frozen=True)
class SGDHeadConfig:
    """A per-partition network on the frozen extractor, trained with minibatch SGD on augmented images.

    Every step crops (``crop_padding``) and flips (``hflip``) the partition's images, passes them
    through the frozen extractor (eval mode) and trains the head on the result, as the DPA code's
    ``train_mnist_rotnet.py`` does. Minibatches, crop offsets and flips are drawn exactly as
    :func:`poisoncert.train.train_one` draws them (``numpy`` PCG64 of ``[seed, 0x5EED]``, one
    permutation + offsets + flips per epoch), the learning rate of epoch e is
    ``lr * lr_gamma ** #{milestones <= e}`` (:meth:`poisoncert.train.TrainConfig.lr_at`). Defaults:
    the ``nin_block`` head of the DPA paper (Gidaris' ``CIFAR10_ConvClassifier_on_RotNet_NIN4blocks_Conv2_feats``:
    100 epochs, batch 128, lr 0.1, Nesterov 0.9, weight decay 5e-4, lr x 0.2 at 35, 70, 85; the
    DPA MNIST script steps one epoch later, after epochs 35, 70, 85 have run). ``width``: the
    ``nin_block`` head's channels (192 in the paper).
    """

    epochs: int = param(100, "Passes over the partition.", minimum=1, maximum=100000)
    batch_size: int = param(128, "Minibatch size.", minimum=1, maximum=1000000)
    lr: float = param(0.1, "Initial SGD learning rate.", exclusive_minimum=0)
    momentum: float = param(0.9, "SGD momentum.", minimum=0, exclusive_maximum=1)
    nesterov: bool = param(True, "Nesterov momentum.")
    weight_decay: float = param(5e-4, "SGD weight decay.", minimum=0)
    lr_milestones: tuple[int, ...] = param((35, 70, 85), "Epochs from which the learning rate is multiplied by lr_gamma once more.",
                                           item_minimum=1, item_maximum=100000)
    lr_gamma: float = param(0.2, "Decay factor at each milestone.", exclusive_minimum=0)
    crop_padding: int = param(4, "Random crops of the images (before the frozen extractor) with this zero padding (0 = off).", minimum=0, maximum=64)
    hflip: bool = param(False, "Random horizontal flips (CIFAR-10 only).")
    width: int = param(192, "Channels of the NiN block (192 in the paper); unused by the linear head.", minimum=1, maximum=4096)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        self.train_config()  # the shared checks
        if self.width < 1:
            raise PoisonCertError(f"bad head configuration: width must be >= 1, got {self.width}")

    def train_config(self):
        """The :class:`poisoncert.train.TrainConfig` with these SGD settings (for its minibatch plan and schedule)."""
        from .train import TrainConfig

        try:
            return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                               nesterov=self.nesterov, weight_decay=self.weight_decay, lr_milestones=self.lr_milestones,
                               lr_gamma=self.lr_gamma, crop_padding=self.crop_padding, hflip=self.hflip)
        except PoisonCertError as exc:
            raise PoisonCertError(f"bad head configuration: {exc}") from None


def _linear_head_defaults() -> SGDHeadConfig:
    # DPA code, SupContrast/train_cifar_ensemble_example.sh + main_linear.py: batch 512, lr 1, plain
    # momentum 0.9, no weight decay, 100 epochs, lr x 0.2 at 60, 75, 90
    return SGDHeadConfig(epochs=100, batch_size=512, lr=1.0, nesterov=False, weight_decay=0.0, lr_milestones=(60, 75, 90))


HEAD_KINDS = ("auto", "nin_block", "linear", "logistic")
#: ``head.kind: auto``: each extractor's own head.
AUTO_HEAD = {"nin": "nin_block", "resnet18": "linear", "light": "logistic"}


@dataclass(frozen=True)
class HeadConfig:
    """SS-DPA's per-partition base classifier on the shared extractor (eq. 8: f_i(x) = f(samples(T), P_i, x)).

    ``kind``: ``nin_block`` (the DPA paper's: Gidaris' ``NonLinearClassifier`` ``NIN_ConvBlock3``
    on the extractor's feature maps: NiN stage 3x3 + 1x1 + 1x1 at ``nin_block.width``, global
    average pool, linear; trained with :class:`SGDHeadConfig` ``nin_block``), ``linear`` (a linear
    layer on flat features, the DPA code's SimCLR head, settings ``linear``), ``logistic`` (the
    light numpy head, :class:`LogisticHeadConfig` ``logistic``), or ``auto`` = the extractor's own
    (:data:`AUTO_HEAD`: nin -> nin_block, resnet18 -> linear, light -> logistic).
    """

    # Each field's doc, bounds and allowed values are the config schema's (poisoncert.schema generates
    # experiments.<name>.head from them: edit here, then `python -m poisoncert.schema --write`).
    kind: str = param("auto", "nin_block: the DPA paper's NiN ConvBlock3 on the extractor's feature maps (arch nin); linear: a "
                      "linear layer (the DPA code's SimCLR head); logistic: the light full-batch numpy head on standardised "
                      "features (CPU option); auto: the extractor's own (nin -> nin_block, resnet18 -> linear, light -> logistic).",
                      enum=HEAD_KINDS)
    nin_block: SGDHeadConfig = param(doc="SGD settings of the nin_block head (Gidaris' ConvClassifier on RotNet conv2 features).",
                                     default_factory=SGDHeadConfig)
    linear: SGDHeadConfig = param(doc="SGD settings of the linear head (the DPA code's SupContrast/main_linear.py: batch 512, lr 1, "
                                  "no weight decay, lr x 0.2 at 60/75/90).", default_factory=_linear_head_defaults)
    logistic: LogisticHeadConfig = param(doc="The light head (poisoncert.semisup.LogisticHeadConfig): full-batch Adam on "
                                         "standardised flattened features.", default_factory=LogisticHeadConfig)

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise PoisonCertError(f"head kind must be one of {', '.join(HEAD_KINDS)}, got {self.kind!r}")

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "HeadConfig":
        """From a config mapping (``kind`` and the nested ``nin_block`` / ``linear`` / ``logistic``).

        >>> HeadConfig.from_dict({"kind": "logistic", "logistic": {"steps": 5}}).logistic.steps
        5
        >>> HeadConfig.from_dict({"linear": {"epochs": 3}}).linear.lr   # the rest keep their defaults
        1.0
        """
        try:
            f = dict(fields)
            default = cls()
            for name, kind in (("nin_block", SGDHeadConfig), ("linear", SGDHeadConfig), ("logistic", LogisticHeadConfig)):
                if name in f:
                    f[name] = kind(**{**asdict(getattr(default, name)), **f[name]})
            return cls(**f)
        except TypeError as exc:
            raise PoisonCertError(f"bad head configuration: {exc}") from None

    def resolved(self, extractor_arch: str) -> str:
        """The head kind used on an extractor of ``extractor_arch`` (``auto`` resolved); checks they fit."""
        kind = AUTO_HEAD[extractor_arch] if self.kind == "auto" else self.kind
        if kind == "nin_block" and extractor_arch != "nin":
            raise PoisonCertError(f"head nin_block needs the feature maps of a nin extractor, not of {extractor_arch!r}; use head kind linear or logistic")
        return kind


def _train_one_head(f: np.ndarray, y: np.ndarray, seed: int, test: np.ndarray, n_classes: int, config: LogisticHeadConfig) -> np.ndarray:
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
    config: LogisticHeadConfig = LogisticHeadConfig(),
) -> np.ndarray:
    """SS-DPA logistic base classifiers: head b trained on ``train_features[members[b]]`` with their labels.

    Returns float32 logits (B, n_test, n_classes). Head b is a deterministic function of the set
    of (feature, label) pairs of its members and ``seeds[b]`` only: heads are trained one at a
    time (numpy, CPU), each on its rows sorted by content, so its logits are bit-identical whatever
    the other partitions hold. An empty partition gets zero logits (a vote for class 0) and a warning.
    """
    ftr, ytr, fte = check_feature_sets(train_features, train_labels, members, seeds, test_features, n_classes, np.float32)

    def fit_one(b: int, idx: np.ndarray, seed: int) -> np.ndarray:
        f, y = ftr[idx], ytr[idx]
        o = canonical_order(f, y)
        return _train_one_head(np.ascontiguousarray(f[o]), y[o], int(seed), fte, n_classes, config)

    return per_partition(members, seeds, len(fte), n_classes, fit_one, "SS-DPA heads")


def _build_head(kind: str, feature_shape: Sequence[int], n_classes: int, config: SGDHeadConfig):
    """``nin_block``: NiN stage 3 (:func:`poisoncert.models.nin_stage`) on (C, h, w) maps, global average
    pool, linear; ``linear``: one linear layer on the flattened features. Initialised as Gidaris'
    ``NonLinearClassifier`` (conv N(0, sqrt(2/(k*k*out))), BN 1/0, linear N(0, sqrt(2/out)), bias 0)."""
    import math as _m

    from torch import nn

    from .models import GlobalAvgPool, nin_init, nin_stage

    if kind == "nin_block":
        head = nn.Sequential(*nin_stage(2, int(feature_shape[0]), config.width), GlobalAvgPool(), nn.Linear(config.width, n_classes))
    else:
        head = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(feature_shape)), n_classes))
    return nin_init(head, linear_std=lambda m: _m.sqrt(2.0 / m.out_features))


def _train_sgd_head(frozen: "_Frozen", kind: str, images: np.ndarray, labels: np.ndarray, seed: int, test_features,
                    n_classes: int, config: SGDHeadConfig, feature_shape: Sequence[int]) -> np.ndarray:
    """One partition's head (images, labels already in canonical order); float32 test logits."""
    import torch
    import torch.nn.functional as F

    from .train import _crop_flip, _Stream

    tc = config.train_config()
    dev = frozen.dev
    n, (C, H, W), pad = len(labels), frozen.shape, config.crop_padding
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        head = _build_head(kind, feature_shape, n_classes, config)
    head.to(dev).train()
    opt = torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                          nesterov=config.nesterov and config.momentum > 0)
    padded = np.zeros((n, C, H + 2 * pad, W + 2 * pad), np.uint8)
    padded[:, :, pad: pad + H, pad: pad + W] = images
    store = torch.from_numpy(padded).to(dev)
    ys = torch.from_numpy(labels.astype(np.int64)).to(dev)
    stream = _Stream(n, seed, tc)
    for t in range(stream.total_steps):
        rows, offs, flips, _, _, epoch = stream.batch(t)  # heads: crops and flips only (augment none)
        for g in opt.param_groups:
            g["lr"] = tc.lr_at(epoch)
        r = torch.from_numpy(np.ascontiguousarray(rows)).to(dev)
        u8 = _crop_flip(store[r], torch.from_numpy(np.ascontiguousarray(offs)).to(dev),
                        torch.from_numpy(np.ascontiguousarray(flips)).to(dev), H, W, pad, config.hflip)
        loss = F.cross_entropy(head(frozen(u8)), ys[r])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    head.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(test_features), 500):
            out.append(head(test_features[s: s + 500]).cpu())
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, n_classes), np.float32)


def train_base_heads(
    state: dict[str, Any],
    train_images: np.ndarray,
    train_labels: np.ndarray,
    members: Sequence[np.ndarray],
    seeds: Sequence[int],
    test_images: np.ndarray,
    n_classes: int,
    config: HeadConfig = HeadConfig(),
    device: str | None = "cpu",
) -> np.ndarray:
    """SS-DPA base classifiers on the extractor ``state``: head b trained on partition ``members[b]``.

    Returns float32 logits (B, n_test, n_classes). ``logistic``: :func:`train_heads` on the
    standardised features of ``train_images`` + ``test_images`` (extracted together on the CPU).
    ``nin_block`` / ``linear``: each head is trained alone (:class:`SGDHeadConfig`), on its
    partition's images sorted by (pixels, label), with the frozen extractor in the loop; the test
    features are extracted once (sorted-unique order). Either way head b is a function of its
    partition's (image, label) set, ``seeds[b]`` and the extractor only: bit-identical whatever the
    other partitions of the shard hold. An empty partition gets zero logits and a warning.
    """
    import torch

    from .train import _check_set, _check_seed, deterministic_mode

    ext = extractor_config(state)
    kind = config.resolved(ext.arch)
    xtr, xte = _check_images(train_images, "train_images"), _check_images(test_images, "test_images")
    ytr = np.asarray(train_labels)
    if len(members) != len(seeds):
        raise PoisonCertError(f"{len(members)} partitions but {len(seeds)} seeds")
    if kind == "logistic":  # features on the CPU whatever ``device`` is, as this light head always had them
        feats = extract_features(state, np.concatenate([xtr, xte]), "cpu")
        return train_heads(feats[: len(xtr)], ytr, members, seeds, feats[len(xtr):], n_classes, config.logistic)
    sgd = config.nin_block if kind == "nin_block" else config.linear
    test_raw = extract_features(state, xte, device, standardize=False)
    shape = tuple(state.get("feature_shape", test_raw.shape[1:]))
    with deterministic_mode(seed=ext.seed):
        frozen = _Frozen(state, device)
        test_t = torch.from_numpy(test_raw).to(frozen.dev)

        def fit_one(b: int, idx: np.ndarray, seed: int) -> np.ndarray:
            im, lb = _check_set(b, xtr[idx], ytr[idx], frozen.shape, n_classes)
            return _train_sgd_head(frozen, kind, im, lb, _check_seed(seed), test_t, n_classes, sgd, shape)

        return per_partition(members, seeds, len(xte), n_classes, fit_one, "SS-DPA heads")


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
