"""Base-model architectures, as plain ``nn.Module`` s and as *stacked* (vectorised) functions.

Every architecture is an ordinary ``nn.Module`` built from a small set of layer types
(``Conv2d``, ``BatchNorm2d``, ``Linear``, ``ReLU``, ``MaxPool2d``, ``AvgPool2d``, ``Flatten``,
plus :class:`GlobalAvgPool` and :class:`ResidualBlock`). :func:`batched_forward` runs B copies
of such a module at once from *stacked* state (every parameter and buffer with a leading model
axis of size B) — the training engine in :mod:`poisoncert.train` uses it; the reference path
(:func:`poisoncert.train.train_one`) calls the module itself.

Batched layouts (B models, n samples per model):

* image layout ``"img"``: ``(n, B*C, H, W)`` — model b owns channels ``b*C:(b+1)*C``, so a
  convolution is one grouped convolution with ``groups=B`` (per-model weights, no mixing);
* feature layout ``"feat"``: ``(B, n, F)`` — a linear layer is one ``baddbmm``.

Batch normalisation is *masked*: its batch statistics are taken per model over that model's real
(unpadded) rows only, and its running statistics are per model and updated only for models that
are still training. Nothing in a batched forward mixes values across models.

Architectures avoid layers whose CUDA backward is non-deterministic (adaptive pooling), so they
run with ``torch.use_deterministic_algorithms(True)`` on GPU too.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PoisonCertError

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "batched_forward",
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

    def __init__(self, n_models: int, mask: torch.Tensor | None):
        self.B = n_models
        self.mask = mask
        self.training = mask is not None
        self.bn_updates: list[tuple[str, torch.Tensor, torch.Tensor]] = []


def _img_to_feat(x: torch.Tensor, B: int) -> torch.Tensor:
    n = x.shape[0]
    return x.reshape(n, B, -1).transpose(0, 1)  # (B, n, C*H*W)


def _masked_bn(m: nn.BatchNorm2d, name: str, state, x: torch.Tensor, ctx: BatchedContext) -> torch.Tensor:
    B = ctx.B
    n, BC, H, W = x.shape
    C = BC // B
    xv = x.view(n, B, C, H, W)
    weight = state[name + ".weight"].view(1, B, C, 1, 1) if m.affine else None
    bias = state[name + ".bias"].view(1, B, C, 1, 1) if m.affine else None
    if ctx.training:
        m5 = ctx.mask.view(n, B, 1, 1, 1)
        cnt = (ctx.mask.sum(0) * (H * W)).view(B, 1)  # real values per (model, channel)
        cnt1 = cnt.clamp(min=1.0)
        mean = (xv * m5).sum(dim=(0, 3, 4)) / cnt1  # (B, C)
        centred = xv - mean.view(1, B, C, 1, 1)
        var = ((centred * m5) ** 2).sum(dim=(0, 3, 4)) / cnt1  # biased, as BN normalises with
        y = centred * torch.rsqrt(var.view(1, B, C, 1, 1) + m.eps)
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
        rm = state[name + ".running_mean"].view(1, B, C, 1, 1)
        rv = state[name + ".running_var"].view(1, B, C, 1, 1)
        y = (xv - rm) * torch.rsqrt(rv + m.eps)
    if weight is not None:
        y = y * weight + bias
    return y.view(n, BC, H, W)


def _run(module: nn.Module, name: str, state, x: torch.Tensor, layout: str, ctx: BatchedContext):
    """Apply ``module`` (qualified name ``name``) batched over B models. Returns (x, layout)."""
    B = ctx.B
    p = (name + ".") if name else ""
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            x, layout = _run(child, p + child_name, state, x, layout, ctx)
        return x, layout
    if isinstance(module, nn.Conv2d):
        if layout != "img":
            raise PoisonCertError(f"{name}: Conv2d after flattening is not supported")
        w = state[p + "weight"]
        w = w.reshape(B * w.shape[1], *w.shape[2:])
        b = state[p + "bias"].reshape(-1) if module.bias is not None else None
        if module.groups != 1 or module.padding_mode != "zeros":
            raise PoisonCertError(f"{name}: only plain zero-padded, ungrouped Conv2d is supported")
        return F.conv2d(x, w, b, module.stride, module.padding, module.dilation, groups=B), layout
    if isinstance(module, nn.BatchNorm2d):
        return _masked_bn(module, p[:-1], state, x, ctx), layout
    if isinstance(module, nn.ReLU):
        return F.relu(x), layout
    if isinstance(module, nn.MaxPool2d):
        return F.max_pool2d(x, module.kernel_size, module.stride, module.padding, module.dilation,
                            ceil_mode=module.ceil_mode), layout
    if isinstance(module, nn.AvgPool2d):
        return F.avg_pool2d(x, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                            module.count_include_pad, module.divisor_override), layout
    if isinstance(module, GlobalAvgPool):
        return _img_to_feat(x.mean(dim=(2, 3)), B), "feat"
    if isinstance(module, nn.Flatten):
        return (_img_to_feat(x, B) if layout == "img" else x), "feat"
    if isinstance(module, nn.Linear):
        if layout != "feat":
            raise PoisonCertError(f"{name}: Linear needs flattened input")
        w = state[p + "weight"]  # (B, out, in)
        if module.bias is not None:
            return torch.baddbmm(state[p + "bias"].unsqueeze(1), x, w.transpose(1, 2)), layout
        return torch.bmm(x, w.transpose(1, 2)), layout
    if hasattr(module, "batched"):
        holder = {"layout": layout}

        def run(child_name, y):
            out, holder["layout"] = _run(getattr(module, child_name), p + child_name, state, y, holder["layout"], ctx)
            return out

        return module.batched(run, x), holder["layout"]
    raise PoisonCertError(f"{name}: layer type {type(module).__name__} has no batched implementation")


def batched_forward(template: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor,
                    ctx: BatchedContext) -> torch.Tensor:
    """Run B copies of ``template`` at once.

    ``state``: every parameter and buffer of ``template`` stacked along a new leading axis of size
    B. ``x``: float (n, B*C, H, W) (image layout) — model b's input in channels b*C:(b+1)*C.
    Returns logits (B, n, n_classes).
    """
    out, layout = _run(template, "", state, x, "img", ctx)
    if layout != "feat":
        raise PoisonCertError("architecture must end in a Linear layer")
    return out


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
