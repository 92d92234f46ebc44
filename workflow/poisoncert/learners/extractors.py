"""The label-free extractors of SS-DPA (DPA paper, papers/000, Section 2.3.1), trained ONCE on the
unlabeled training images, and reading them back (the file rule ``extractor`` writes).

* **RotNet** (Gidaris et al. 2018): a network learns to predict which of the rotations
  0/90/180/270 degrees was applied to an unlabeled image; an intermediate stage's activations are
  the features. ``ExtractorConfig(arch="nin")`` (the default) is the paper's: Gidaris' 4-stage
  NetworkInNetwork (built from :func:`poisoncert.models.nin_stage`), its conv2 feature maps
  (192 x 7 x 7 on MNIST, 192 x 8 x 8 on CIFAR-10), step schedule, crops (and flips on CIFAR-10).
  ``arch="light"`` is the CPU-sized variant of the digits twins (small 3x3 blocks, features
  pooled to a small grid). :func:`train_extractor`, :func:`extract_features`.
* **SimCLR** (``arch="resnet18"``, learner ``simclr``; the DPA code's SS-DPA on CIFAR-10 / GTSRB):
  a CIFAR ResNet-18 trained with the NT-Xent loss (:func:`nt_xent`) on two augmented views of
  every unlabeled image; its 512 pooled features.

Why the certificates of the learners on top count label flips (Theorem 2): the features are a
function of the *set* of unlabeled training images only. The extractor takes images without
labels, deduplicates them and sorts them by content (so input order and multiplicities cannot
matter), seeds every random draw (one CPU ``torch.Generator`` of the extractor seed for shuffling
and augmentation), and runs with ``torch.use_deterministic_algorithms(True)``.

Pure functions but :func:`read_extractor`; torch is imported lazily. The learners that use the
features: :mod:`poisoncert.learners.heads`, :mod:`poisoncert.learners.frozen`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..data import row_keys
from ..errors import PoisonCertError
from ..schema import param

__all__ = [
    "EXTRACTOR_ARCHS",
    "ExtractorConfig",
    "extractor_config",
    "nt_xent",
    "unique_sorted_images",
    "train_extractor",
    "extract_features",
    "read_extractor",
    "read_checked_extractor",
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

    from ..models import GlobalAvgPool, nin_stage, nin_stage_out_channels

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

    from ..models import resnet18_backbone

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

    from ..train import deterministic_mode, resolve_device

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

        from ..train import resolve_device

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

    from ..train import deterministic_mode

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
    from ..partition import sorted_index

    u = unique_sorted_images(x)
    raw = _raw_features(state, u, device)
    if not standardize:
        return np.ascontiguousarray(raw[sorted_index(x)])
    raw = raw.reshape(len(raw), -1)
    feats = (raw - np.asarray(state["feature_mean"], np.float32)) / np.asarray(state["feature_std"], np.float32)
    return np.ascontiguousarray(feats[sorted_index(x)].astype(np.float32))

def read_extractor(path: str) -> dict[str, Any]:
    """Read an extractor file written by ``poisoncert extractor``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise PoisonCertError(f"extractor file {path} is missing or corrupt ({type(exc).__name__}); delete it and rerun") from None


def read_checked_extractor(path: str, dataset_hash: str | None, what: str = "data") -> dict[str, Any]:
    """The extractor of ``path``, refused unless it was trained on the data of ``dataset_hash``."""
    state = read_extractor(path)
    if state.get("dataset_hash") != dataset_hash:
        raise PoisonCertError(f"{path} was trained on other {what}")
    return state
