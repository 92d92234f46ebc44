"""SS-DPA's heads (DPA paper Section 2.3, eq. 8, ``f_i(x) = f(samples(T), P_i, x)``) and the
learners rotnet and simclr that train them: base classifier i is trained on partition i's labeled
samples only, on the frozen label-free extractor (upstream role ``extractor``,
:mod:`poisoncert.learners.extractors`; settings: the experiment's ``head`` block,
:class:`HeadConfig`): the paper's NiN ConvBlock3 on the feature maps (``nin_block``) or a linear
layer (``linear``), both by minibatch SGD on augmented images through the extractor
(:class:`SGDHeadConfig`); or the light numpy logistic regression on standardised features
(``logistic``, :func:`train_heads`). :func:`train_base_heads` dispatches.

A head is a function of (its partition's set of (image, label) pairs, its seed, the extractor):
it is trained alone, on its rows re-sorted by content, so nothing from another partition reaches
it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..data import canonical_order
from ..errors import PoisonCertError
from ..schema import param
from .base import BaseLearner, Fit, Shard, check_feature_sets, per_partition, register
from .extractors import _check_images, _Frozen, extract_features, extractor_config, read_checked_extractor

__all__ = ["HeadConfig", "SGDHeadConfig", "LogisticHeadConfig", "train_heads", "train_base_heads", "Heads"]


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
        from ..train import TrainConfig

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
    logistic: LogisticHeadConfig = param(doc="The light head (poisoncert.learners.heads.LogisticHeadConfig): full-batch Adam on "
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

    from ..models import GlobalAvgPool, nin_init, nin_stage

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

    from ..train import _crop_flip, _Stream

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

    from ..train import _check_set, _check_seed, deterministic_mode

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



class Heads(BaseLearner):
    upstream = ("extractor",)

    def __init__(self, name: str) -> None:
        self.name = self.record = name

    def fit_predict(self, shard: Shard) -> Fit:
        ds = shard.dataset
        path = shard.file("extractor")
        state = read_checked_extractor(path, shard.partitions_meta["dataset_hash"], "data; delete it and rerun")
        ext = extractor_config(state)
        if ext.learner != self.record:
            raise PoisonCertError(f"{path} is a {ext.learner} extractor, not the {self.record} learner's")
        head = HeadConfig.from_dict(dict(shard.options))
        logits = train_base_heads(state, ds.train_images, ds.train_labels, list(shard.members), list(shard.seeds), ds.test_images,
                                  ds.n_classes, head, device=shard.device)
        return Fit(logits, meta={"head_kind": head.resolved(ext.arch), "head": dataclasses.asdict(head)})

    def train_flags(self, exp_name: str, exp: Mapping[str, Any]) -> list[str]:
        return super().train_flags(exp_name, exp) + ["--head-config", json.dumps(exp["head"])]

    def check_config(self, exp: Mapping[str, Any], where: str) -> None:
        arch = exp["extractor"]["arch"]
        if exp["head"]["kind"] == "nin_block" and arch != "nin":
            raise PoisonCertError(f"{where}.head.kind: nin_block needs the feature maps of extractor.arch nin, not '{arch}'; use linear or logistic")


register(Heads("rotnet"))
register(Heads("simclr"))
