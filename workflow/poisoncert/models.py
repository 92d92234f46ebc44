"""Base-model architectures, as plain ``nn.Module`` s and as *stacked* (vectorised) functions.

Every architecture is an ordinary ``nn.Module`` built from a small set of layer types
(``Conv2d``, ``BatchNorm2d``, ``Linear``, ``ReLU``, ``MaxPool2d``, ``AvgPool2d``, ``Flatten``,
plus :class:`GlobalAvgPool` and :class:`ResidualBlock`). :func:`batched_forward` runs B copies
of such a module at once from *stacked* state (every parameter and buffer with a leading model
axis of size B) — the training engine in :mod:`poisoncert.train` uses it; the reference path
(:func:`poisoncert.train.train_one`) calls the module itself.

Two batched layouts (B models, n samples per model), one interpreter (:func:`_run`):

* grouped (:func:`batched_forward`): images ``(n, B*C, H, W)`` — model b owns channels
  ``b*C:(b+1)*C``, so a convolution is one grouped convolution with ``groups=B`` (per-model
  weights, no mixing);
* stacked (:func:`stacked_forward`): images ``(B, n, H, W, C)`` — model-major, channels last, so
  a convolution is one ``bmm`` of each model's im2col patches with its own weight matrix, pooling
  runs torch's channels-last kernels on ``(B*n, C, H, W)``, and no layer copies between layouts;
* features in both: ``(B, n, F)`` — a linear layer is one ``baddbmm``.

Batch normalisation is *masked*: its batch statistics are taken per model over that model's real
(unpadded) rows only, and its running statistics are per model and updated only for models that
are still training. Nothing in a batched forward mixes values across models.

Architectures avoid layers whose CUDA backward is non-deterministic (adaptive pooling), so they
run with ``torch.use_deterministic_algorithms(True)`` on GPU too.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PoisonCertError

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "batched_forward",
    "stacked_forward",
    "training_flops_per_sample",
    "GlobalAvgPool",
    "ResidualBlock",
    "nin_stage",
    "nin_stage_out_channels",
    "nin_init",
    "resnet18_backbone",
]


# --------------------------------------------------------------------------------------------
# custom layers
# --------------------------------------------------------------------------------------------


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes: (n, C, H, W) -> (n, C). (Not AdaptiveAvgPool2d, whose CUDA
    backward is non-deterministic.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class ResidualBlock(nn.Module):
    """CIFAR-style ResNet basic block (He et al. 2016; as in kuangliu/pytorch-cifar)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))

    def batched(self, run, x):  # run(child_name, x) applies the batched interpreter to a child
        out = F.relu(run("bn1", run("conv1", x)))
        out = run("bn2", run("conv2", out))
        return F.relu(out + run("shortcut", x))


# --------------------------------------------------------------------------------------------
# architectures: builder(in_channels, height, width, n_classes) -> nn.Module
# --------------------------------------------------------------------------------------------


def _small_cnn(c: int, h: int, w: int, k: int) -> nn.Module:
    """Small CNN for 8x8 digits (also works on 28x28 / 32x32): conv 3x3 (32) - max-pool 2 - ReLU -
    linear (max-pool and ReLU commute; pooling first makes the ReLU 4x cheaper). On digits with
    ~30 images per model it beat deeper variants (2-3 convs, 16-64 channels) and a 2-layer MLP
    on base accuracy, at a fraction of their cost."""
    if h < 2 or w < 2:
        raise PoisonCertError(f"small_cnn needs images of at least 2x2 pixels, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * (h // 2) * (w // 2), k),
    )


def _mlp(c: int, h: int, w: int, k: int) -> nn.Module:
    """Two hidden layers of 128 ReLU units on the flattened image."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 128), nn.ReLU(),
        nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, k),
    )


def _nin_block(cin: int, cout: int, ks: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, ks, padding=(ks - 1) // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def nin_stage(stage: int, cin: int, width: int = 192) -> list[nn.Module]:
    """Stage ``stage`` (0-based) of Gidaris et al.'s ``NetworkInNetwork``: three conv-BN-ReLU blocks.

    Stage 0: 5x5 to ``width``, 1x1 to ``width*5//6``, 1x1 to ``width//2`` (192/160/96), then
    max-pool (3, stride 2, pad 1); stage 1: 5x5 + two 1x1 at ``width``, then avg-pool (3, 2, 1);
    stages >= 2: 3x3 + two 1x1 at ``width``, no pooling (RotNet's 4-stage net has
    ``use_avg_on_conv3=False``). The one NiN definition of the package: the supervised NiN
    (:func:`_nin`), SS-DPA's RotNet extractor and its per-partition ``NIN_ConvBlock3`` head (stage 2
    on the extracted feature maps) are all built from it (:mod:`poisoncert.learners.heads`).

    >>> [type(m).__name__ for m in nin_stage(0, 1)][-1], nin_stage(0, 1)[6].out_channels
    ('MaxPool2d', 96)
    """
    if stage == 0:
        mid, out = max(1, width * 5 // 6), max(1, width // 2)
        return [*_nin_block(cin, width, 5), *_nin_block(width, mid, 1), *_nin_block(mid, out, 1),
                nn.MaxPool2d(3, stride=2, padding=1)]
    if stage == 1:
        return [*_nin_block(cin, width, 5), *_nin_block(width, width, 1), *_nin_block(width, width, 1),
                nn.AvgPool2d(3, stride=2, padding=1)]
    return [*_nin_block(cin, width, 3), *_nin_block(width, width, 1), *_nin_block(width, width, 1)]


def nin_stage_out_channels(stage: int, width: int = 192) -> int:
    """Channels a :func:`nin_stage` outputs (stage 0: ``width // 2``, else ``width``)."""
    return max(1, width // 2) if stage == 0 else width


def nin_init(model: nn.Module, linear_std: Callable[[nn.Linear], float] | None = None) -> nn.Module:
    """Gidaris et al.'s NiN initialisation: conv weights ~ N(0, sqrt(2 / (k*k*out))), BN weight 1 /
    bias 0, linear bias 0; linear weights keep torch's default unless ``linear_std`` gives their std
    (``NonLinearClassifier``: sqrt(2 / out_features))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                m.weight.data.normal_(0.0, linear_std(m))
            if m.bias is not None:
                m.bias.data.zero_()
    return model


def _nin(c: int, h: int, w: int, k: int) -> nn.Module:
    """Network-in-Network as the supervised baseline of Gidaris et al. (2018, RotNet code,
    ``NetworkInNetwork`` with 3 stages), which DPA / FA / ROE use as base model: 3 blocks of
    (5x5|3x3, 1x1, 1x1) conv-BN-ReLU with 192/160/96, 192/192/192, 192/192/192 channels,
    max-pool and avg-pool (3, stride 2, pad 1) between blocks, global average pooling, linear.
    Conv weights ~ N(0, sqrt(2 / (k*k*out))), BN weight 1 / bias 0, linear bias 0, as there."""
    model = nn.Sequential(
        *nin_stage(0, c), *nin_stage(1, nin_stage_out_channels(0)), *nin_stage(2, nin_stage_out_channels(1)),
        GlobalAvgPool(),
        nn.Linear(192, k),
    )
    return nin_init(model)


def _lenet(c: int, h: int, w: int, k: int) -> nn.Module:
    """LeNet-5 (ReLU, max-pool) as used for MNIST by Chen et al.; conv1 pads by 2 so 28x28
    behaves like the classic 32x32 input. Needs images of at least 12x12."""
    if h < 12 or w < 12:
        raise PoisonCertError(f"lenet needs images of at least 12x12 pixels, got {h}x{w}; use small_cnn")
    h2, w2 = (h // 2 - 4) // 2, (w // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * h2 * w2, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, k),
    )


def resnet18_backbone(c: int) -> list[nn.Module]:
    """CIFAR-style ResNet-18 up to its 512 pooled features: 3x3 stem (64, no stem pooling),
    [2,2,2,2] basic blocks of 64/128/256/512 channels, global average pooling. The supervised
    ``resnet18`` adds a linear layer; the SimCLR extractor (:mod:`poisoncert.learners.heads`) a projection."""
    layers: list[nn.Module] = [nn.Conv2d(c, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for s in (stride, 1):
            layers.append(ResidualBlock(in_planes, planes, s))
            in_planes = planes
    return layers + [GlobalAvgPool()]


def _resnet18(c: int, h: int, w: int, k: int) -> nn.Module:
    """CIFAR-style ResNet-18 (:func:`resnet18_backbone`, then linear)."""
    return nn.Sequential(*resnet18_backbone(c), nn.Linear(512, k))


ARCHITECTURES: dict[str, Callable[[int, int, int, int], nn.Module]] = {
    "small_cnn": _small_cnn,
    "mlp": _mlp,
    "nin": _nin,
    "lenet": _lenet,
    "resnet18": _resnet18,
}


def build_model(arch: str, in_channels: int, height: int, width: int, n_classes: int) -> nn.Module:
    """A fresh model (initialised from torch's global CPU RNG: seed it, or call inside
    ``torch.random.fork_rng``)."""
    if arch not in ARCHITECTURES:
        raise PoisonCertError(
            f"unknown architecture {arch!r}; valid ones: {', '.join(sorted(ARCHITECTURES))}"
        )
    for name, v in (("in_channels", in_channels), ("height", height), ("width", width), ("n_classes", n_classes)):
        if int(v) < 1:
            raise PoisonCertError(f"{name} must be >= 1, got {v}")
    return ARCHITECTURES[arch](int(in_channels), int(height), int(width), int(n_classes))


# --------------------------------------------------------------------------------------------
# batched (stacked) forward
# --------------------------------------------------------------------------------------------


class BatchedContext:
    """What one batched forward needs besides the input.

    ``mask``: float (n, B), 1 for real rows, 0 for padding (training only; None in eval, where
    BatchNorm uses running statistics). ``bn_updates`` collects (name, new running mean, new
    running var) for the caller to commit for the models that are active.
    """

    def __init__(self, n_models: int, mask: torch.Tensor | None, real_rows: list[int] | None = None):
        self.B = n_models
        self.mask = mask
        self.training = mask is not None
        self.bn_updates: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self.cache: dict[str, torch.Tensor] = {}  # evaluation: weights rearranged once (stacked_forward)
        self.hwc: frozenset[str] = frozenset()  # stacked: Linear weights the state holds in (h, w, c) order already
        self.hwc_seen: dict[str, tuple[int, int, int]] | None = None  # stacked_hwc_linears' record
        self._real_rows: list[int] | None = list(real_rows) if real_rows is not None else None  # the trainer knows them

    def real_rows(self) -> list[int] | None:
        """Training: each model's number of real rows when they lead its batch (the trainer puts them
        first, then its padding), else None (another mask, or evaluation). Decided once per context.

        >>> BatchedContext(2, torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])).real_rows()
        [2, 1]
        >>> BatchedContext(1, torch.tensor([[0.0], [1.0]])).real_rows() is None
        True
        """
        if self.mask is None:
            return None
        if self._real_rows is None:
            n = self.mask.shape[0]
            counts = self.mask.sum(0).round().to(torch.int64)
            lead = (torch.arange(n, device=self.mask.device).unsqueeze(1) < counts.unsqueeze(0)).to(self.mask.dtype)
            self._real_rows = counts.tolist() if torch.equal(lead, self.mask) else []
        return self._real_rows or None


def _masked_bn(m: nn.BatchNorm2d, name: str, state, xv: torch.Tensor, ctx: BatchedContext, stat_shape: tuple,
               dims: tuple, m5: torch.Tensor | None, hw: int) -> torch.Tensor:
    """BatchNorm2d of B models on a 5-d view ``xv`` of the activations, in either layout: statistics per
    (model, channel) over ``dims`` (rows and space), in training over the real rows only (``m5``: the
    row mask broadcast to ``xv``), running statistics per model collected in ``ctx.bn_updates``.
    ``stat_shape`` broadcasts a (B, C) statistic against ``xv``; ``hw`` = H * W."""
    B = ctx.B
    weight = state[name + ".weight"].view(stat_shape) if m.affine else None
    bias = state[name + ".bias"].view(stat_shape) if m.affine else None
    if ctx.training:
        cnt = (ctx.mask.sum(0) * hw).view(B, 1)  # real values per (model, channel)
        cnt1 = cnt.clamp(min=1.0)
        mean = (xv * m5).sum(dim=dims) / cnt1  # (B, C)
        centred = xv - mean.view(stat_shape)
        var = ((centred * m5) ** 2).sum(dim=dims) / cnt1  # biased, as BN normalises with
        y = centred * torch.rsqrt(var.view(stat_shape) + m.eps)
        if m.track_running_stats:
            with torch.no_grad():
                mom = m.momentum if m.momentum is not None else 0.1
                unbiased = var.detach() * (cnt / (cnt - 1.0).clamp(min=1.0))
                rm = state[name + ".running_mean"]
                rv = state[name + ".running_var"]
                ctx.bn_updates.append(
                    (name, rm * (1.0 - mom) + mean.detach() * mom, rv * (1.0 - mom) + unbiased * mom)
                )
    else:
        rm = state[name + ".running_mean"].view(stat_shape)
        rv = state[name + ".running_var"].view(stat_shape)
        y = (xv - rm) * torch.rsqrt(rv + m.eps)
    if weight is not None:
        y = y * weight + bias
    return y


def _img_to_feat(x: torch.Tensor, B: int) -> torch.Tensor:
    n = x.shape[0]
    return x.reshape(n, B, -1).transpose(0, 1)  # (B, n, C*H*W)


class _GroupedLayout:
    """Images (n, B*C, H, W): model b owns channels b*C:(b+1)*C; a convolution is one grouped
    convolution (``groups=B``); features (B, n, F)."""

    folds_pools = False

    @staticmethod
    def conv(m: nn.Conv2d, p: str, state, x: torch.Tensor, ctx: BatchedContext, pool_k: int = 0,
             relu: bool = False, head=None) -> torch.Tensor:  # pool_k, relu, head: never set (folds_pools is False)
        w = state[p + "weight"]
        w = w.reshape(ctx.B * w.shape[1], *w.shape[2:])
        b = state[p + "bias"].reshape(-1) if m.bias is not None else None
        if m.groups != 1 or m.padding_mode != "zeros":
            raise PoisonCertError(f"{p[:-1]}: only plain zero-padded, ungrouped Conv2d is supported")
        return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, groups=ctx.B)

    @staticmethod
    def bn(m: nn.BatchNorm2d, name: str, state, x: torch.Tensor, ctx: BatchedContext) -> torch.Tensor:
        B = ctx.B
        n, BC, H, W = x.shape
        C = BC // B
        m5 = ctx.mask.view(n, B, 1, 1, 1) if ctx.training else None
        y = _masked_bn(m, name, state, x.view(n, B, C, H, W), ctx, (1, B, C, 1, 1), (0, 3, 4), m5, H * W)
        return y.view(n, BC, H, W)

    @staticmethod
    def pool(fn, x: torch.Tensor) -> torch.Tensor:
        return fn(x)

    @staticmethod
    def gap(x: torch.Tensor, B: int) -> torch.Tensor:
        return _img_to_feat(x.mean(dim=(2, 3)), B)

    @staticmethod
    def flatten(x: torch.Tensor, B: int):
        return _img_to_feat(x, B), "feat"

    @staticmethod
    def linear_weight(w: torch.Tensor, layout, ctx: BatchedContext, key: str) -> torch.Tensor:
        return w


def _stacked_weight(ctx: "BatchedContext", key: str, make):
    """A weight rearranged for the stacked layout: built per call while training (it changes every
    step), once per context in evaluation (the context is reused over the test chunks)."""
    if ctx.training:
        return make()
    if key not in ctx.cache:
        ctx.cache[key] = make()
    return ctx.cache[key]


def _pool_window(pool: nn.Module | None) -> int:
    """The window k of a MaxPool2d that tiles its input (kernel = stride = k, no padding, dilation 1,
    floor mode), else 0: such a pool can be folded into the convolution before it in evaluation."""
    if not isinstance(pool, nn.MaxPool2d):
        return 0
    k, s, pad, dil = (pool.kernel_size, pool.stride, pool.padding, pool.dilation)
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    k, s, pad, dil = pair(k), pair(s), pair(pad), pair(dil)
    ok = k[0] == k[1] == s[0] == s[1] and pad == (0, 0) and dil == (1, 1) and not pool.ceil_mode
    return k[0] if ok else 0


def _stacked_conv(m: nn.Conv2d, p: str, state, x: torch.Tensor, ctx: "BatchedContext", pool_k: int = 0,
                  relu: bool = False, head: tuple[nn.Linear, str] | None = None) -> torch.Tensor:
    """Conv2d of B models on (B, n, H, W, C) as one ``bmm``: im2col patches (B, rows, kh*kw*C (+1))
    times each model's weight as a (kh*kw*C (+1), Cout) matrix, the bias as the weight of a column of
    ones (no separate pass over the output). Patches are gathered by slices of the zero-padded input:
    with one input channel into (B, kh*kw, rows) (contiguous rows, transposed for the product), else
    into (B, rows, kh*kw*C) (kernel offset major, channel minor). Returns (B, n, Ho, Wo, Cout).

    ``pool_k`` > 0 (evaluation only): the k x k max-pool that follows, folded in. The rows are the
    conv outputs ordered by their offset inside the pooling window, so the pool is a maximum over the
    offsets' blocks (:func:`_window_max`: the same values as max-pooling the full output, each an exact max); returns the pooled
    (B, n, Ho // k, Wo // k, Cout), rectified if ``relu`` (the ReLU that follows the pool).

    ``head`` (training, with ``pool_k``): the Linear (and its qualified name) that reads the pooled
    maps through a Flatten, applied too; returns its (B, n, out) output. Where the per-model kernels
    run, :class:`_ConvPool` computes the Linear's input gradient model by model."""
    if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise PoisonCertError(f"{p[:-1]}: only plain zero-padded, ungrouped Conv2d is supported")
    B, n, H, W, C = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
    Ho, Wo = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    train_pool = pool_k if ctx.training else 0  # training: rows in (n, Ho, Wo) order, pooled per model (_ConvPool)
    q = 1 if train_pool else max(pool_k, 1)  # output positions per window side
    Ho, Wo = Ho // q, Wo // q
    K, M, bias = kh * kw * C, q * q * n * Ho * Wo, m.bias is not None
    if (ph or pw) and not ctx.training and not x.requires_grad and x.device.type == "cpu":
        # CPU evaluation: a zero border written once per context, the buffer shared by every layer of this padded
        # shape (each call rewrites the whole interior and is done reading it when it returns)
        key = f"padded{tuple(x.shape)}{ph},{pw}"
        if key not in ctx.cache:
            ctx.cache[key] = x.new_zeros(B, n, H + 2 * ph, W + 2 * pw, C)
        xp = ctx.cache[key]
        xp[:, :, ph: ph + H, pw: pw + W].copy_(x)
    else:
        xp = F.pad(x, (0, 0, pw, pw, ph, ph)) if (ph or pw) else x

    def taps(a: int, b: int) -> list[torch.Tensor]:  # input slices of the outputs at window offset (a, b)
        r0, c0, rs, cs = a * sh, b * sw, q * sh, q * sw
        return [xp[:, :, r0 + i * dh: r0 + i * dh + (Ho - 1) * rs + 1: rs, c0 + j * dw: c0 + j * dw + (Wo - 1) * cs + 1: cs]
                for i in range(kh) for j in range(kw)]

    def weight():
        w = state[p + "weight"]  # (B, Cout, C, kh, kw) -> (B, kh*kw*C (+1), Cout)
        w = w.permute(0, 3, 4, 2, 1).reshape(B, K, w.shape[1])
        return torch.cat([w, state[p + "bias"].unsqueeze(1)], dim=1) if bias else w

    if not x.requires_grad:  # one strided view of every patch (no autograd through as_strided)
        sB, sN, sH, sW, sC = xp.stride()
        win, grid = (sh * sH, sw * sW), (q * sh * sH, q * sw * sW)
        if C == 1:
            view = xp.as_strided((B, kh, kw, q, q, n, Ho, Wo), (sB, dh * sH, dw * sW, *win, sN, *grid), xp.storage_offset())
        else:
            view = xp.as_strided((B, q, q, n, Ho, Wo, kh, kw, C), (sB, *win, sN, *grid, dh * sH, dw * sW, sC), xp.storage_offset())

        def fill(buf: torch.Tensor, b: slice | int, ones: bool = True) -> torch.Tensor:
            """Model(s) b's patches into ``buf`` ((..., K (+1), M) if C == 1, else (..., M, K (+1)));
            returns them as (..., M, K (+1)) (column-major if C == 1)."""
            if C == 1:
                buf[..., :K, :].view(view[b].shape).copy_(view[b])
                if bias and ones:
                    buf[..., K, :].fill_(1.0)
                return buf.transpose(-1, -2)
            buf[..., :K].view(view[b].shape).copy_(view[b])
            if bias and ones:
                buf[..., K].fill_(1.0)
            return buf

        per_model = mm_matches_bmm(M, K + bias, m.out_channels, C == 1, B, x.dtype, x.device)
        if per_model and not ctx.training and not torch.is_grad_enabled():
            return _stacked_conv_eval(ctx, p, _stacked_weight(ctx, p + "weight", weight), fill, (n, Ho, Wo), M, K + bias, C == 1, q, relu)
        # the same memory every step (autograd's version counter refuses a backward after it is refilled)
        patches = fill(_scratch("patches", (B, K + bias, M) if C == 1 else (B, M, K + bias), xp), slice(None))
        if train_pool and per_model and bmm_pairs_match(M, K + bias, m.out_channels, C != 1, B, x.dtype, x.device):
            w = _stacked_weight(ctx, p + "weight", weight)
            pooled_shape = ("hwc", m.out_channels, Ho // train_pool, Wo // train_pool)
            real = ctx.real_rows()  # the padding images need no product, pooling or pooling gradient (_ConvPool)
            conv_rows = None if real is None else _prefix_rows(real, Ho * Wo, n, K + bias, m.out_channels, C == 1, x.dtype, x.device)
            if head is not None:
                lin, lp = head
                F_in = m.out_channels * (Ho // train_pool) * (Wo // train_pool)
                if (lin.bias is not None and mm_matches_bmm(n, lin.out_features, F_in, False, B, x.dtype, x.device)
                        and mm_matches_bmm(F_in, n, lin.out_features, True, B, x.dtype, x.device)):
                    w_lin = _StackedLayout.linear_weight(state[lp + "weight"], pooled_shape, ctx, lp + "weight")
                    head_rows = None if real is None else _prefix_rows(real, 1, n, lin.out_features, F_in, False, x.dtype, x.device)
                    return _ConvPool.apply(patches, w, (n, Ho, Wo), train_pool, relu, real, conv_rows, w_lin, state[lp + "bias"],
                                           head_rows)
            pooled = _ConvPool.apply(patches, w, (n, Ho, Wo), train_pool, relu, real, conv_rows)
            return _linear(head[0], head[1], state, *_StackedLayout.flatten(pooled, B), ctx, _StackedLayout) if head else pooled
    else:
        offsets = [(a, b) for a in range(q) for b in range(q)]
        if C == 1:
            per_tap = list(zip(*[taps(a, b) for a, b in offsets]))  # [tap][offset]
            rows = [t.squeeze(-1) for tap in per_tap for t in tap] + ([x.new_ones(B, n, Ho, Wo)] * len(offsets) if bias else [])
            patches = torch.stack(rows, dim=1).view(B, K + bias, M).transpose(1, 2)  # (B, M, K (+1)), column-major
        else:
            ones = [x.new_ones(B, n, Ho, Wo, 1)] if bias else []
            blocks = [torch.cat(taps(a, b) + ones, dim=-1) for a, b in offsets]
            patches = (blocks[0] if q == 1 else torch.stack(blocks, dim=1)).reshape(B, M, K + bias)

    out = torch.bmm(patches, _stacked_weight(ctx, p + "weight", weight))
    if train_pool:  # training, whole group: torch's pooling kernel on the full-resolution output
        out = _stacked_pool(lambda t: F.max_pool2d(t, train_pool, train_pool), out.view(B, n, Ho, Wo, -1))
    elif pool_k:
        out = _window_max(out.view(B, q * q, n, Ho, Wo, -1).unbind(1))
    else:
        return out.view(B, n, Ho, Wo, -1)
    out = F.relu(out) if relu else out
    return _linear(head[0], head[1], state, *_StackedLayout.flatten(out, B), ctx, _StackedLayout) if head else out


def kernel_settings() -> tuple:
    """What decides a BLAS kernel's blocking besides the shapes and the device: the CPU thread count
    and the float32 matmul precision (TF32 on a GPU). Part of every cached bit-agreement check."""
    return (torch.get_num_threads(), torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32)


def mm_matches_bmm(M: int, K: int, N: int, col_major: bool, B: int = 2, dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> bool:
    """Whether this machine's ``torch.mm`` of an (M, K) by a (K, N) matrix gives the bits of the same
    product inside a ``bmm`` over a group of ``B`` (column-major left operands if ``col_major``, as the
    stacked convolution's patches with one input channel). The per-model kernels of the stacked layout
    (:class:`_ConvPool`, :func:`_stacked_conv_eval`) run only where it does, so they never change a
    model's logits: BLAS libraries choose their blocking from the shapes, the CPU and the thread
    count, and a long reduction (K in the thousands) is blocked differently by ``mm`` and ``bmm`` on
    this machine. Decided once per process, shape, group size and :func:`kernel_settings`, on random
    operands (a differing accumulation order shows on almost every one of the M x N outputs).

    >>> mm_matches_bmm(64, 10, 32, True)  # a short reduction: one block, the same bits
    True
    """
    return _mm_matches_bmm(M, K, N, col_major, max(B, 2), dtype, torch.device(device), kernel_settings())


@functools.lru_cache(maxsize=256)
def _mm_matches_bmm(M: int, K: int, N: int, col_major: bool, B: int, dtype: torch.dtype, device: torch.device, settings: tuple) -> bool:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(B, K, M, generator=g, dtype=dtype).transpose(1, 2) if col_major else torch.randn(B, M, K, generator=g, dtype=dtype)
    a, w = a.to(device), torch.randn(B, K, N, generator=g, dtype=dtype).to(device)  # on the device that will run them
    ref = torch.bmm(a, w)
    return all(torch.equal(torch.mm(a[b], w[b]), ref[b]) for b in range(B))


def mm_row_blocks_match(M: int, K: int, N: int, col_major: bool, blocks: tuple[tuple[int, int], ...],
                        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> bool:
    """Whether this machine's ``torch.mm`` of rows [r0, r1) of an (M, K) matrix (column-major if
    ``col_major``, a slice of the same storage) by a (K, N) one gives those rows the bits of the whole
    product, for every block of ``blocks``: the per-model kernels skip a model's padding images
    (:class:`_ConvPool`, the blocks are prefixes: :func:`_prefix_rows`) and multiply one pooling-window
    offset at a time (:func:`_stacked_conv_eval`, the blocks are the offsets' rows) where it does (a
    block of one row may run as a matrix-vector product, rounded otherwise). Decided once per process,
    shape, blocks and :func:`kernel_settings`, on random operands.

    >>> mm_row_blocks_match(64, 10, 32, True, ((0, 16), (0, 32), (0, 48)))
    True
    """
    return _mm_row_blocks_match(M, K, N, col_major, tuple(blocks), dtype, torch.device(device), kernel_settings())


@functools.lru_cache(maxsize=256)
def _mm_row_blocks_match(M: int, K: int, N: int, col_major: bool, blocks: tuple, dtype: torch.dtype, device: torch.device,
                         settings: tuple) -> bool:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(K, M, generator=g, dtype=dtype).t() if col_major else torch.randn(M, K, generator=g, dtype=dtype)
    a, w = a.to(device), torch.randn(K, N, generator=g, dtype=dtype).to(device)
    ref = torch.mm(a, w)
    return all(torch.equal(torch.mm(a[r0:r1], w), ref[r0:r1]) for r0, r1 in blocks)


def _prefix_rows(real: list[int], rows: int, n: int, K: int, N: int, col_major: bool, dtype: torch.dtype,
                 device: torch.device) -> list[int]:
    """For each model's r real images (of n, ``rows`` product rows each), the fewest images r' >= r whose
    product, an ``mm`` of the first r' * ``rows`` rows, gives them the whole product's bits
    (:func:`mm_row_blocks_match`, each prefix checked once; n always does, and r = 0 needs none). On
    this machine only a prefix of one row fails (a matrix-vector product, rounded otherwise)."""
    out = []
    for r in real:
        r2 = r
        while 0 < r2 < n and not mm_row_blocks_match(n * rows, K, N, col_major, ((0, r2 * rows),), dtype, device):
            r2 += 1
        out.append(r2)
    return out


_THREAD = threading.local()


def _scratch(tag: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A buffer of ``shape`` reused by every call with the same ``tag`` in this thread (never
    returned to a caller: only a kernel's intermediate): the same memory every step, still in the
    cache, where a fresh allocation lands wherever the allocator finds room and its first writes miss."""
    if like.device.type != "cpu":  # a GPU's caching allocator already reuses memory; and its backward runs on
        return like.new_empty(shape)  # autograd's device thread, shared by every caller thread
    cache = getattr(_THREAD, "scratch", None)
    if cache is None:
        cache = _THREAD.scratch = {}
    key = (tag, tuple(shape), like.dtype, like.device)
    if key not in cache:
        if len(cache) >= 16:  # a long session over many shapes: drop the old buffers, not grow without bound
            cache.clear()
        cache[key] = like.new_empty(shape)
    return cache[key]


def release_scratch() -> None:
    """Free this thread's :func:`_scratch` buffers (the trainer calls it after each group: a group of
    a whole large shard holds large patch buffers)."""
    _THREAD.scratch = {}


def bmm_pairs_match(M: int, K: int, N: int, col_major: bool, B: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> bool:
    """Whether a ``bmm`` of (K, M) by (M, N) matrices (the weight gradient of a convolution: a
    reduction over M rows; column-major left operands if ``col_major``) gives each item the same bits
    over the batches of two (or three) of :func:`_pairs` as over the whole group of ``B``, on this
    machine; decided once per process, shape, group size and :func:`kernel_settings`, on random
    operands. Where it does, :class:`_ConvPool` builds the pooling gradient two models at a time.

    >>> bmm_pairs_match(64, 10, 32, False, 8)
    True
    """
    return _bmm_pairs_match(M, K, N, col_major, B, dtype, torch.device(device), kernel_settings())


@functools.lru_cache(maxsize=256)
def _bmm_pairs_match(M: int, K: int, N: int, col_major: bool, B: int, dtype: torch.dtype, device: torch.device, settings: tuple) -> bool:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(B, M, K, generator=g, dtype=dtype).transpose(1, 2) if col_major else torch.randn(B, K, M, generator=g, dtype=dtype)
    a, b = a.to(device), torch.randn(B, M, N, generator=g, dtype=dtype).to(device)
    ref = torch.bmm(a, b)
    return all(torch.equal(torch.bmm(a[b0:b1], b[b0:b1]), ref[b0:b1]) for b0, b1 in _pairs(B))


def _pairs(B: int) -> list[tuple[int, int]]:
    """[b0, b1) ranges of two models covering range(B), the last of three if B is odd (one if B is 1).

    >>> _pairs(5), _pairs(1)
    ([(0, 2), (2, 5)], [(0, 1)])
    """
    if B < 2:
        return [(0, B)]
    starts = list(range(0, B - 1, 2))
    return [(b0, b0 + 2) for b0 in starts[:-1]] + [(starts[-1], B)]


class _ConvPool(torch.autograd.Function):
    """Training, stacked layout: a convolution whose input needs no gradient (the first layer), the
    k x k max-pool that tiles its output and (``relu``) the ReLU after it, one model at a time.
    ``patches``: (B, M, K (+1)), the rows in (n, Ho, Wo) order; ``w``: (B, K (+1), Cout). Forward:
    model b's product into a scratch buffer reused across models, max-pooled (torch's channels-last
    kernel, with indices) and rectified into the output. Backward: model b's gradient masked by its
    ReLU, scattered back through its pooling indices into a full-resolution buffer of two models,
    multiplied by their patches into their weight gradients by a ``bmm`` of two (a reduction over
    every row, whose blocking a per-model ``mm`` may not share, while a ``bmm`` computes each item
    alike whatever the batch, from two up: :func:`bmm_pairs_match`). The same kernels on the same
    operands as the ``bmm``, ``max_pool2d``, ``relu`` and their backward over the whole group, bit
    for bit, but a model's full-resolution output and gradient stay in the core's cache instead of
    streaming the whole group's (the zero fill of the pooling gradient included) through memory.

    ``real`` (the trainer's batches: each model's real images first, :meth:`BatchedContext.real_rows`):
    a model's padding images get no pooling or pooling gradient and, as far as ``conv_rows`` allows
    (:func:`_prefix_rows`: a shorter ``mm`` must give the real rows their bits), no product; their
    pooled maps are zeros and their gradient rows zeros (the loss never reads them; the trainer pads
    28% of the rows of Fashion-MNIST's k = 1200 partitions at batch 16). The patch gather and the
    weight gradient's reduction still cover every row (the padding's gradient rows are zeros, so the
    real rows' sums are the group's, as long as the padding images are finite: the trainer's are
    blank images). ``w_lin``, ``b_lin``: the Linear that reads
    the flattened maps joins the step (training's ``Flatten`` -> ``Linear`` after the pool, as in
    ``small_cnn``), so its input gradient is computed model by model too (an ``mm`` each, where
    :func:`mm_matches_bmm` says it is a slice of the group's ``bmm``) and goes through the ReLU and
    pooling backward while it is in the cache, instead of the whole group's streaming through memory
    in between (over ``head_rows`` rows per model, :func:`_prefix_rows`). Returns the pooled maps, or with
    the Linear its (B, n, out) output."""

    @staticmethod
    def forward(ctx, patches: torch.Tensor, w: torch.Tensor, grid: tuple, k: int, relu: bool, real: list[int] | None = None,
                conv_rows: list[int] | None = None, w_lin: torch.Tensor | None = None, b_lin: torch.Tensor | None = None,
                head_rows: list[int] | None = None) -> torch.Tensor:
        B, M, _ = patches.shape
        n, Ho, Wo = grid
        Cout = w.shape[-1]
        conv = _scratch("conv", (M, Cout), w)
        img = conv.view(n, Ho, Wo, Cout).permute(0, 3, 1, 2)  # (n, Cout, Ho, Wo), channels last
        # the output, too, is the same memory every step (a view of it: autograd refuses to differentiate
        # through a view whose base a later forward rewrote, so a stale value never reaches a gradient)
        out = _scratch("pooled", (B, n, Ho // k, Wo // k, Cout), w)[...]
        real = list(real) if real is not None else [n] * B
        conv_rows = list(conv_rows) if conv_rows is not None else [n if r else 0 for r in real]
        indices = []
        for b in range(B):
            r = real[b]  # model b's real images lead its batch; its padding images' maps are zeros
            if r < n:
                out[b, r:].zero_()
            if r == 0:
                indices.append(None)
                continue
            c = conv_rows[b] * Ho * Wo  # at least r images' rows: a product of fewer may round otherwise
            torch.mm(patches[b, :c], w[b], out=conv[:c])
            y, i = F.max_pool2d(img[:r], k, k, return_indices=True)  # small fresh tensors: the allocator's warm chunks
            if relu:
                torch.clamp_min(y.permute(0, 2, 3, 1), 0.0, out=out[b, :r])
            else:
                out[b, :r].copy_(y.permute(0, 2, 3, 1))
            indices.append(i)
        ctx.k, ctx.relu, ctx.img = k, relu, img  # img: the input's shape and strides for the pooling backward (never read)
        ctx.head, ctx.real = w_lin is not None, real
        ctx.head_rows = list(head_rows) if head_rows is not None else [n] * B
        ctx.idx = [j for j, i in enumerate(indices) if i is not None]
        kept = [i for i in indices if i is not None]
        if not ctx.head:
            ctx.save_for_backward(patches, out, *kept)
            return out
        ctx.save_for_backward(patches, out, w_lin, *kept)  # the Linear as _run applies it, on the flattened maps
        return torch.baddbmm(b_lin.unsqueeze(1), out.view(B, n, -1), w_lin.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if ctx.head:
            patches, out, w_lin, *kept = ctx.saved_tensors
        else:
            patches, out, *kept = ctx.saved_tensors
        indices: list[torch.Tensor | None] = [None] * len(ctx.real)
        for j, i in zip(ctx.idx, kept):
            indices[j] = i
        k, img = ctx.k, ctx.img
        B, M, Kb = patches.shape
        g = g.contiguous()
        n, Cout, Ho, Wo = img.shape
        pt = patches.transpose(1, 2)
        grad_w = g.new_empty(B, Kb, Cout)
        grads_lin: tuple = (None, None)
        if ctx.head:  # baddbmm's backward as autograd computes it (the bias's summed over the broadcast rows), per model
            x = out.view(B, n, -1)
            gw_lin = g.new_empty(B, x.shape[2], g.shape[2])  # bmm(x^T, g)'s (B, in, out), returned transposed
            grads_lin = (gw_lin.transpose(1, 2), g.sum(1, keepdim=True).squeeze(1))
            g_in = _scratch("head_grad", (n, x.shape[2]), g)  # one model's input gradient
        for b0, b1 in _pairs(B):
            full = _scratch("full", (b1 - b0, n, Ho, Wo, Cout), g)  # these models' full-resolution gradient
            for b in range(b0, b1):
                r = ctx.real[b]  # the padding images' gradient is zero
                if ctx.head:  # (these mm give the bits of the group's bmm: mm_matches_bmm)
                    torch.mm(x[b].t(), g[b], out=gw_lin[b])
                if r < n:
                    full[b - b0, r:].zero_()
                if r == 0:
                    continue
                if ctx.head:  # the real rows' input gradient (over more rows where a shorter mm may round otherwise)
                    rows = ctx.head_rows[b]
                    gb = torch.mm(g[b, :rows], w_lin[b], out=g_in[:rows])[:r].view(out[b, :r].shape)
                else:
                    gb = g[b, :r]
                gb = torch.ops.aten.threshold_backward(gb, out[b, :r], 0.0) if ctx.relu else gb
                torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                    gb.permute(0, 3, 1, 2), img[:r], [k, k], [k, k], [0, 0], [1, 1], False, indices[b],
                    grad_input=full[b - b0, :r].permute(0, 3, 1, 2))
            torch.bmm(pt[b0:b1], full.view(b1 - b0, M, Cout), out=grad_w[b0:b1])
        return None, grad_w, None, None, None, None, None, *grads_lin, None


def _window_max(offsets, out: torch.Tensor | None = None) -> torch.Tensor:
    """The max-pool of a tiling window in evaluation: the element-wise maximum of the conv outputs at
    each window offset, taken in offset order, ((v0 max v1) max v2) ..., into ``out`` if given. One
    definition for the group's path and the per-model one, so that they agree bit for bit (NaN
    included); the values are the window's maxima, as max-pooling computes them.

    >>> _window_max([torch.tensor([1.0, 5.0]), torch.tensor([3.0, 2.0])]).tolist()
    [3.0, 5.0]
    """
    offsets = list(offsets)
    if len(offsets) == 1:  # a window of one
        return offsets[0] if out is None else out.copy_(offsets[0])
    if out is None:  # (differentiable)
        out = torch.maximum(offsets[0], offsets[1])
        for v in offsets[2:]:
            out = torch.maximum(out, v)
        return out
    torch.maximum(offsets[0], offsets[1], out=out)
    for v in offsets[2:]:
        torch.maximum(out, v, out=out)
    return out


def _stacked_conv_eval(ctx: "BatchedContext", p: str, w: torch.Tensor, fill, grid: tuple, M: int, Kb: int,
                       col_major: bool, q: int, relu: bool) -> torch.Tensor:
    """:func:`_stacked_conv` in evaluation, one model at a time: model b's patches are gathered into
    a scratch buffer reused across models and test chunks (its column of ones written once; the
    output too is the same memory in every chunk, its first write a cache hit, not a miss),
    multiplied by its (K (+1), Cout) weight one window offset at a time (the rows of one offset, where
    :func:`mm_row_blocks_match` confirms their bits; else all at once into a second scratch buffer),
    each product folded into the running maximum over the q*q offsets straight in the output
    (:func:`_window_max`'s order), rectified there if ``relu``. Each model's working set stays in the
    core's cache instead of streaming every model's full-resolution output through memory before
    pooling (one offset's product instead of all four: 15% less time than the whole product, then
    the maximum); the arithmetic (each ``mm`` a slice of the ``bmm``, the same maxima in the same
    order) is unchanged, bit for bit. (The Linear after it stays one ``baddbmm`` of the group: one
    item at a time, in the cache, measured 5% slower.)"""
    B, Cout = w.shape[0], w.shape[-1]
    n, Ho, Wo = grid
    key = f"{p}scratch{M}"
    fresh = key not in ctx.cache
    if fresh:  # (K (+1), M) / (M, K (+1)) patches, the (M, Cout) product and the output (rewritten every chunk)
        ctx.cache[key] = (w.new_empty((Kb, M) if col_major else (M, Kb)), w.new_empty(M, Cout) if q > 1 else None,
                          w.new_empty(B, n, Ho, Wo, Cout))
    pbuf, obuf, out = ctx.cache[key]
    Q = M // (q * q)  # rows per window offset
    by_offset = q > 1 and mm_row_blocks_match(M, Kb, Cout, col_major, tuple((o * Q, (o + 1) * Q) for o in range(q * q)),
                                             w.dtype, w.device)
    for b in range(B):
        patches = fill(pbuf, b, ones=fresh and b == 0)
        ob = out[b].view(Q, Cout)
        if q == 1:
            torch.mm(patches, w[b], out=ob)
        elif by_offset:  # one window offset at a time, its product folded into the running maximum (ob)
            torch.mm(patches[:Q], w[b], out=ob)
            for o in range(1, q * q):
                torch.maximum(ob, torch.mm(patches[o * Q: (o + 1) * Q], w[b], out=obuf[:Q]), out=ob)
        else:
            torch.mm(patches, w[b], out=obuf)
            _window_max(obuf.view(q * q, Q, Cout).unbind(0), out=ob)
        if relu:
            ob.clamp_min_(0.0)
    return out


def _stacked_pool(fn, x: torch.Tensor) -> torch.Tensor:
    """A 2-d pooling ``fn`` of (B, n, H, W, C) run as torch's channels-last kernel on (B*n, C, H, W)."""
    B, n, H, W, C = x.shape
    y = fn(x.reshape(B * n, H, W, C).permute(0, 3, 1, 2))
    return y.permute(0, 2, 3, 1).reshape(B, n, y.shape[2], y.shape[3], C)


class _StackedLayout:
    """Images (B, n, H, W, C) (model-major, channels last): a convolution is one ``bmm`` over im2col
    patches (:func:`_stacked_conv`), pooling torch's channels-last kernel on (B*n, C, H, W), a Flatten
    keeps (h, w, c) order (the next Linear permutes its weight to match); features (B, n, F). In
    evaluation a max-pool that tiles its input folds into the convolution before it."""

    folds_pools = True
    conv = staticmethod(_stacked_conv)
    pool = staticmethod(_stacked_pool)

    @staticmethod
    def bn(m: nn.BatchNorm2d, name: str, state, x: torch.Tensor, ctx: BatchedContext) -> torch.Tensor:
        B, n, H, W, C = x.shape
        m5 = ctx.mask.t().reshape(B, n, 1, 1, 1) if ctx.training else None
        return _masked_bn(m, name, state, x, ctx, (B, 1, 1, 1, C), (1, 2, 3), m5, H * W)

    @staticmethod
    def gap(x: torch.Tensor, B: int) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    @staticmethod
    def flatten(x: torch.Tensor, B: int):
        _, n, H, W, C = x.shape
        return x.reshape(B, n, H * W * C), ("hwc", C, H, W)

    @staticmethod
    def linear_weight(w: torch.Tensor, layout, ctx: BatchedContext, key: str) -> torch.Tensor:
        if layout == "feat" or key in ctx.hwc:
            return w
        _, C, H, W = layout  # (c, h, w) columns -> (h, w, c), the order of the flattened features
        if ctx.hwc_seen is not None:
            ctx.hwc_seen[key] = (C, H, W)
        return _stacked_weight(ctx, key, lambda: hwc_order(w, (C, H, W)))


def hwc_order(w: torch.Tensor, chw: tuple[int, int, int], inverse: bool = False) -> torch.Tensor:
    """A stacked Linear weight (B, out, C*H*W) whose columns read a flattened (c, h, w) image,
    reordered to read the stacked layout's (h, w, c) features (``inverse``: back). A new tensor.

    >>> w = torch.arange(12.0).view(1, 1, 12)  # C=3, H=2, W=2
    >>> hwc_order(w, (3, 2, 2)).flatten().tolist()[:6]
    [0.0, 4.0, 8.0, 1.0, 5.0, 9.0]
    >>> torch.equal(hwc_order(hwc_order(w, (3, 2, 2)), (3, 2, 2), inverse=True), w)
    True
    """
    C, H, W = chw
    B = w.shape[0]
    if inverse:
        return w.view(B, -1, H, W, C).permute(0, 1, 4, 2, 3).reshape(B, -1, C * H * W)
    return w.view(B, -1, C, H, W).permute(0, 1, 3, 4, 2).reshape(B, -1, C * H * W)


def stacked_hwc_linears(template: nn.Module, state: dict[str, torch.Tensor], shape: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    """The Linear weights of ``template`` that read a flattened image in the stacked layout, each with
    the (C, H, W) it sees (found by one forward pass of one blank image per model). A trainer that
    keeps those weights in :func:`hwc_order` for the whole training (and sets ``BatchedContext.hwc``)
    saves a permuted copy of each, forward and backward, every step: the same values in other
    places, so the same bits (SGD works element by element)."""
    B = next(iter(state.values())).shape[0]
    C, H, W = shape
    ctx = BatchedContext(B, None)
    ctx.hwc_seen = {}
    with torch.no_grad():
        _forward(template, state, next(iter(state.values())).new_zeros(B, 1, H, W, C), ctx, _StackedLayout)
    return ctx.hwc_seen


def _children(module: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """A Sequential's children in the order the batched interpreters run them: a ReLU directly
    followed by a MaxPool2d runs after it. The two commute exactly (``relu(max(v)) == max(relu(v))``
    bit for bit, and both send the gradient to the window's first maximum when it is positive, none
    otherwise), and pooling first makes the ReLU and its backward 4x smaller (LeNet)."""
    kids = list(module.named_children())
    for i in range(len(kids) - 1):
        if isinstance(kids[i][1], nn.ReLU) and isinstance(kids[i + 1][1], nn.MaxPool2d):
            kids[i], kids[i + 1] = kids[i + 1], kids[i]
    return kids


def _run(module: nn.Module, name: str, state, x: torch.Tensor, layout, ctx: BatchedContext, L=_GroupedLayout):
    """Apply ``module`` (qualified name ``name``) batched over B models in the layout ``L``. ``layout``
    is ``"img"`` (images), ``"feat"`` (features) or, in the stacked layout right after a Flatten,
    ``("hwc", C, H, W)``. Returns (x, layout)."""
    B = ctx.B
    p = (name + ".") if name else ""
    if isinstance(module, nn.Sequential):
        kids = _children(module)
        i = 0
        while i < len(kids):
            child_name, child = kids[i]
            fold = (L.folds_pools and (not ctx.training or not x.requires_grad) and layout == "img"
                    and isinstance(child, nn.Conv2d) and i + 1 < len(kids) and _pool_window(kids[i + 1][1]))
            if fold:  # a convolution, the max-pool that tiles it (and a ReLU after it), as one step
                relu = i + 2 < len(kids) and isinstance(kids[i + 2][1], nn.ReLU)
                i += 3 if relu else 2
                head = None  # training: a Flatten and Linear after it join the step (_ConvPool)
                if (ctx.training and i + 1 < len(kids) and isinstance(kids[i][1], nn.Flatten)
                        and (kids[i][1].start_dim, kids[i][1].end_dim) == (1, -1) and isinstance(kids[i + 1][1], nn.Linear)):
                    head = (kids[i + 1][1], p + kids[i + 1][0] + ".")
                    i += 2
                x = L.conv(child, p + child_name + ".", state, x, ctx, pool_k=fold, relu=relu, head=head)
                layout = "feat" if head else layout
                continue
            x, layout = _run(child, p + child_name, state, x, layout, ctx, L)
            i += 1
        return x, layout
    if isinstance(module, nn.Conv2d):
        if layout != "img":
            raise PoisonCertError(f"{name}: Conv2d after flattening is not supported")
        return L.conv(module, p, state, x, ctx), layout
    if isinstance(module, nn.BatchNorm2d):
        return L.bn(module, p[:-1], state, x, ctx), layout
    if isinstance(module, nn.ReLU):
        return F.relu(x, inplace=not ctx.training), layout  # evaluation: x is a fresh activation
    if isinstance(module, nn.MaxPool2d):
        return L.pool(lambda t: F.max_pool2d(t, module.kernel_size, module.stride, module.padding, module.dilation,
                                             ceil_mode=module.ceil_mode), x), layout
    if isinstance(module, nn.AvgPool2d):
        return L.pool(lambda t: F.avg_pool2d(t, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                             module.count_include_pad, module.divisor_override), x), layout
    if isinstance(module, GlobalAvgPool):
        return L.gap(x, B), "feat"
    if isinstance(module, nn.Flatten):
        return L.flatten(x, B) if layout == "img" else (x, layout)
    if isinstance(module, nn.Linear):
        if layout == "img":
            raise PoisonCertError(f"{name}: Linear needs flattened input")
        return _linear(module, p, state, x, layout, ctx, L), "feat"
    if hasattr(module, "batched"):
        holder = {"layout": layout}

        def run(child_name, y):
            out, holder["layout"] = _run(getattr(module, child_name), p + child_name, state, y, holder["layout"], ctx, L)
            return out

        return module.batched(run, x), holder["layout"]
    raise PoisonCertError(f"{name}: layer type {type(module).__name__} has no batched implementation")


def _linear(module: nn.Linear, p: str, state, x: torch.Tensor, layout, ctx: BatchedContext, L) -> torch.Tensor:
    """A Linear layer (qualified name ``p`` with its dot) of B models on features (B, n, in): one
    ``baddbmm`` (``bmm`` without a bias), each model's weight in the order of its features."""
    w = L.linear_weight(state[p + "weight"], layout, ctx, p + "weight")  # (B, out, in)
    if module.bias is not None:
        return torch.baddbmm(state[p + "bias"].unsqueeze(1), x, w.transpose(1, 2))
    return torch.bmm(x, w.transpose(1, 2))


def _forward(template: nn.Module, state, x: torch.Tensor, ctx: BatchedContext, L) -> torch.Tensor:
    out, layout = _run(template, "", state, x, "img", ctx, L)
    if layout != "feat":
        raise PoisonCertError("architecture must end in a Linear layer")
    return out


def batched_forward(template: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor,
                    ctx: BatchedContext) -> torch.Tensor:
    """Run B copies of ``template`` at once.

    ``state``: every parameter and buffer of ``template`` stacked along a new leading axis of size
    B. ``x``: float (n, B*C, H, W) (image layout) — model b's input in channels b*C:(b+1)*C.
    Returns logits (B, n, n_classes).
    """
    return _forward(template, state, x, ctx, _GroupedLayout)


def stacked_forward(template: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor,
                    ctx: BatchedContext) -> torch.Tensor:
    """:func:`batched_forward` in the *stacked* (model-major) layout: ``x`` is float (B, n, H, W, C)
    (model b's images, channels last). Convolutions are batched matrix products over im2col patches
    (each model's own weight matrix), pooling runs torch's channels-last kernels on (B*n, C, H, W);
    per model every activation is contiguous, so no layer copies between layouts. The same function
    as :func:`batched_forward` up to float rounding. Returns logits (B, n, n_classes).

    In training, buffers reused from step to step hold what the backward pass needs and the first
    layer's output: one backward per forward (a second forward before it makes that backward raise
    autograd's error about a tensor "modified inplace", never a wrong gradient).

    >>> import torch
    >>> m = build_model("small_cnn", 1, 8, 8, 3)
    >>> state = {k: v.detach().unsqueeze(0) for k, v in list(m.named_parameters()) + list(m.named_buffers())}
    >>> x = torch.randn(2, 1, 8, 8)
    >>> out = stacked_forward(m, state, x.permute(0, 2, 3, 1).unsqueeze(0), BatchedContext(1, None))
    >>> torch.allclose(out[0], m(x), atol=1e-5)
    True
    """
    return _forward(template, state, x, ctx, _StackedLayout)


# --------------------------------------------------------------------------------------------
# cost model (for the benchmark's % of arithmetic peak)
# --------------------------------------------------------------------------------------------


def layer_flops_per_sample(model: nn.Module, in_channels: int, height: int, width: int) -> list[int]:
    """Multiply-add FLOPs (2 per MAC) of each conv and linear layer for one sample's forward pass,
    in the order the layers run."""
    flops: list[int] = []
    hooks = []

    def conv_hook(m, inp, out):
        kh, kw = m.kernel_size
        flops.append(2 * out.numel() // out.shape[0] * (m.in_channels // m.groups) * kh * kw)

    def lin_hook(m, inp, out):
        flops.append(2 * out.numel() // out.shape[0] * m.in_features)

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, height, width))
    model.train(was_training)
    for hk in hooks:
        hk.remove()
    return flops


def forward_flops_per_sample(model: nn.Module, in_channels: int, height: int, width: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of conv and linear layers for one sample's forward pass."""
    return sum(layer_flops_per_sample(model, in_channels, height, width))


def training_flops_per_sample(model: nn.Module, in_channels: int, height: int, width: int) -> int:
    """One training step's FLOPs per sample: the forward pass, the weight gradient of every layer
    (as many FLOPs as its forward) and the input gradient of every layer but the first (the image
    needs none): 3 x forward - the first layer's forward."""
    flops = layer_flops_per_sample(model, in_channels, height, width)
    return 3 * sum(flops) - (flops[0] if flops else 0)
