"""Augmentation policies of the supervised base learners, batched on uint8 tensors and deterministic.

The Lethal Dose Conjecture (Wang, Levine & Feizi 2022) says that the certified robustness of DPA
/ FA at a given k is bounded by how data-efficient the base learner is: a learner that reaches
the same accuracy from fewer samples allows more partitions. Augmentation is the cheapest such
gain for the papers' supervised learners (``TrainConfig.augment``):

* ``"none"``: no policy (the papers' setting; random crop and flips stay the separate
  ``crop_padding`` and ``hflip`` options, applied before the policy);
* ``"trivial_augment"``: TrivialAugment (Mueller & Hutter 2021): for every training image and
  epoch, one op of :data:`TA_OPS` drawn uniformly, at a strength drawn uniformly from the 31
  bins 0, 1/30, ..., 1 (a random sign for the signed ops). The op set and ranges are
  RandAugment's "standard" ones for grayscale/colour images, without the ops that need a
  colour space or a blur kernel (color, sharpness, equalize), with translation capped at 30% of
  the image (the images here are 8x8 and 28x28: RandAugment's 45% would push the object out).

Determinism (what keeps the certificates valid): the draws come from the model's own stream
(:class:`poisoncert.train._Stream`), after its permutation, crops and flips, only when the policy
is on; :func:`augment_batch` is elementwise per image (exact integer reductions for the
per-image statistics, float32 elementwise arithmetic, round half to even), so an image's result
depends on its pixels, op and strength alone: never on the other images of the batch, their
number or their position.

>>> import torch
>>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) * 10
>>> ops = torch.tensor([TA_OPS.index("identity")])
>>> torch.equal(augment_batch(x, ops, torch.tensor([0.7])), x)
True
>>> augment_batch(x, torch.tensor([TA_OPS.index("translate_x")]), torch.tensor([0.5]))[0, 0, 0].tolist()  # 0.6 px, zero fill
[0, 4, 14, 24]
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["AUGMENTATIONS", "TA_OPS", "TA_BINS", "draw_augment", "augment_batch"]

#: The values of ``TrainConfig.augment``.
AUGMENTATIONS: tuple[str, ...] = ("none", "trivial_augment")

#: TrivialAugment's ops here, by index (0 = identity is also the op of padding rows).
TA_OPS: tuple[str, ...] = (
    "identity", "auto_contrast", "brightness", "contrast", "solarize", "posterize",
    "rotate", "shear_x", "shear_y", "translate_x", "translate_y",
)
#: Ops whose strength gets a random sign (the others use |strength|).
_SIGNED = frozenset({"brightness", "contrast", "rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
#: Number of strength bins (TrivialAugment: 31, strength = bin / 30).
TA_BINS = 31

MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3  # fraction of the image side
MAX_ENHANCE = 0.9  # brightness / contrast factor 1 +- 0.9
MAX_POSTERIZE_BITS = 4  # bits removed at full strength (8 -> 4)

_OP = {name: i for i, name in enumerate(TA_OPS)}


def draw_augment(rng: np.random.Generator, n: int, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's draws for ``n`` images: op indices (int64) and signed strengths in [-1, 1] (float32).

    ``policy="none"`` draws nothing (identity ops, zero strengths), so the generator's later draws
    are those of a config without the option. TrivialAugment draws, in this order, n ops, n
    strength bins and n sign coins.

    >>> ops, s = draw_augment(np.random.default_rng(0), 3, "none")
    >>> ops.tolist(), s.tolist()
    ([0, 0, 0], [0.0, 0.0, 0.0])
    >>> ops, s = draw_augment(np.random.default_rng(0), 1000, "trivial_augment")
    >>> sorted(set(ops.tolist())) == list(range(len(TA_OPS))), float(abs(s).max()) <= 1.0
    (True, True)
    """
    if policy == "none":
        return np.zeros(n, np.int64), np.zeros(n, np.float32)
    if policy != "trivial_augment":
        raise ValueError(f"unknown augmentation policy {policy!r}; valid ones: {', '.join(AUGMENTATIONS)}")
    ops = rng.integers(0, len(TA_OPS), size=n).astype(np.int64)
    strength = rng.integers(0, TA_BINS, size=n) / (TA_BINS - 1)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    signed = np.isin(ops, [_OP[o] for o in _SIGNED])
    return ops, np.where(signed, sign * strength, strength).astype(np.float32)


def _per_image(v: torch.Tensor) -> torch.Tensor:
    """(m,) -> (m, 1, 1, 1) for broadcasting over (m, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def _affine(x: torch.Tensor, op: str, s: torch.Tensor) -> torch.Tensor:
    """A geometric op (rotate, shear, translate) by bilinear sampling with zero fill; float32 out.

    Output pixel (i, j), with centred coordinates (u, v) = (j - (W-1)/2, i - (H-1)/2), reads the
    input at (a u + b v + c, d u + e v + f) (the inverse map). Each image's result is elementwise
    arithmetic on its own parameters.
    """
    m, C, H, W = x.shape
    dev = x.device
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    a, b, c, d, e, f = one, zero, zero, zero, one, zero
    if op == "rotate":
        theta = s * (MAX_ROTATE_DEG * math.pi / 180.0)
        a, b, d, e = torch.cos(theta), torch.sin(theta), -torch.sin(theta), torch.cos(theta)
    elif op == "shear_x":
        b = s * MAX_SHEAR
    elif op == "shear_y":
        d = s * MAX_SHEAR
    elif op == "translate_x":
        c = -(s * (MAX_TRANSLATE * W))
    else:  # translate_y
        f = -(s * (MAX_TRANSLATE * H))
    u = (torch.arange(W, device=dev, dtype=torch.float32) - (W - 1) / 2.0).view(1, 1, W)
    v = (torch.arange(H, device=dev, dtype=torch.float32) - (H - 1) / 2.0).view(1, H, 1)
    col = a.view(m, 1, 1) * u + b.view(m, 1, 1) * v + ((W - 1) / 2.0 + c).view(m, 1, 1)  # (m, H, W)
    row = d.view(m, 1, 1) * u + e.view(m, 1, 1) * v + ((H - 1) / 2.0 + f).view(m, 1, 1)
    c0, r0 = torch.floor(col), torch.floor(row)
    wc, wr = col - c0, row - r0
    c0, r0 = c0.to(torch.int64), r0.to(torch.int64)
    flat = x.reshape(m, C, H * W)
    out = torch.zeros(m, C, H, W, dtype=torch.float32, device=dev)
    for dr, dc, w in ((0, 0, (1 - wr) * (1 - wc)), (0, 1, (1 - wr) * wc), (1, 0, wr * (1 - wc)), (1, 1, wr * wc)):
        rr, cc = r0 + dr, c0 + dc
        valid = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        idx = (rr.clamp(0, H - 1) * W + cc.clamp(0, W - 1)).view(m, 1, H * W).expand(m, C, H * W)
        pix = torch.gather(flat, 2, idx).view(m, C, H, W)
        out = out + torch.where(valid.unsqueeze(1), w.unsqueeze(1) * pix, torch.zeros((), device=dev))
    return out


def _apply(op: str, u8: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Op ``op`` on uint8 images (m, C, H, W) at signed strengths ``s`` (m,); float32 out (unrounded)."""
    x = u8.to(torch.float32)
    a = s.abs()
    if op == "identity":
        return x
    if op == "brightness":
        return x * _per_image(1.0 + MAX_ENHANCE * s)
    if op == "contrast":
        npix = x[0].numel()
        mu = _per_image(u8.reshape(len(u8), -1).to(torch.int64).sum(1).to(torch.float64).div(npix).to(torch.float32))
        return mu + _per_image(1.0 + MAX_ENHANCE * s) * (x - mu)
    if op == "solarize":
        return torch.where(x >= _per_image(256.0 * (1.0 - a)), 255.0 - x, x)
    if op == "posterize":
        bits = torch.round(MAX_POSTERIZE_BITS * a).to(torch.int64)
        return (u8 & _per_image((255 >> bits) << bits).to(torch.uint8)).to(torch.float32)
    if op == "auto_contrast":
        lo = u8.amin(dim=(2, 3), keepdim=True).to(torch.float32)
        hi = u8.amax(dim=(2, 3), keepdim=True).to(torch.float32)
        return torch.where(hi > lo, (x - lo) * (255.0 / torch.where(hi > lo, hi - lo, torch.ones_like(hi))), x)
    return _affine(x, op, s)


def augment_batch(u8: torch.Tensor, ops: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """Apply op ``ops[i]`` at signed strength ``strengths[i]`` to image i of uint8 ``u8`` (m, C, H, W).

    Returns uint8 (m, C, H, W). Op semantics (s = strength, |s| for the unsigned ops):
    brightness ``x (1 + 0.9 s)``; contrast ``mu + (1 + 0.9 s)(x - mu)`` with mu the image's mean;
    solarize ``255 - x`` where ``x >= 256 (1 - s)``; posterize keeps ``8 - round(4 s)`` bits;
    auto_contrast stretches each channel's [min, max] to [0, 255]; rotate by ``30 s`` degrees,
    shear by ``0.3 s``, translate by ``0.3 s`` of the side (bilinear, zero fill). Each op runs on
    the images that drew it only (the others are not touched), rounded half to even.
    """
    ops = ops.to(torch.int64)
    s = strengths.to(torch.float32)
    out = u8.clone()
    for i, op in enumerate(TA_OPS):
        if op == "identity":
            continue
        idx = torch.nonzero(ops == i).flatten()
        if idx.numel():
            out[idx] = torch.round(_apply(op, u8[idx], s[idx])).clamp_(0, 255).to(torch.uint8)
    return out
