"""Training engine: a whole shard of base models trained in one process, vectorised over models.

Contract (what keeps the DPA / FA / ROE certificates valid)
-----------------------------------------------------------
A base model's logits are a deterministic function of (its training set *as a multiset*, its seed,
the :class:`TrainConfig` — including ``group_size`` and the resolved ``strategy`` — its position in its group, the device
type, the torch version and the CPU thread count). They do **not** depend, by a single bit, on the contents
or the sizes of the other partitions in its shard:

* **order**: the engine sorts each training set internally by (pixel bytes, label)
  lexicographically, so the order the caller passes does not matter (callers may still pass a
  canonical order; it is ignored).
* **fixed per-model shapes**: every model sees minibatches of exactly ``batch_size`` rows; a
  model's last minibatch of an epoch is padded with masked rows (zero loss weight, excluded from
  BatchNorm statistics). Each model runs ``epochs * ceil(n_i / batch_size)`` steps computed from
  its own size; the shard runs until its longest model is done and a model that has finished (or
  has no data) is *masked*: its parameters, momentum buffers and BatchNorm running statistics are
  kept by ``torch.where`` and its random generator is not advanced. Tensors are never padded to
  the largest partition.
* **per-model randomness**: weights are initialised from ``torch`` CPU RNG seeded with the model's
  seed alone; shuffling and augmentation draws (crop offsets, flips) come from a numpy
  ``Generator(PCG64(SeedSequence([seed, 0x5EED])))`` owned by that model and consumed once per
  *own* epoch: permutation, then crop offsets (n_i x 2), then flip coins (n_i), then, with
  ``augment="trivial_augment"`` only, one TrivialAugment op, strength bin and sign per sample
  (:mod:`poisoncert.augment`). A setting that is off draws nothing, so ``augment="none"`` (the
  default) consumes the generator exactly as before the option existed.
* **per-model normalisation**: each model normalises with :func:`channel_stats` of its own set.
* **no cross-model arithmetic**: the ``dense`` strategy (:data:`STRATEGIES`) runs each model alone through
  its own ``nn.Module``; under ``grouped`` convolutions are grouped (one group per model), under
  ``stacked`` they are one batched matrix product with each model's own weight matrix; linear layers are
  ``baddbmm``, BatchNorm statistics are per model, the loss is a sum of per-model losses (so each
  model's gradient is that of its own loss, exactly).
* **deterministic kernels**: ``torch.use_deterministic_algorithms(True)``, cuDNN benchmark off,
  TF32 off, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (set at import when unset), float32 throughout.
  The CPU thread count can change reductions' rounding: the engine runs with
  ``TrainConfig.cpu_threads`` threads (default 1, so the bits do not depend on the machine's core
  count; 0 = torch's current setting; record :func:`runtime_fingerprint` next to the results).
  One thread per job is also the fast choice on a shared CPU: with 2 OpenMP threads on 2 busy
  cores a shard ran up to 50x slower (measured); parallelise over jobs (snakemake --cores) instead.

Vector width: the shard is trained in consecutive *groups* of ``TrainConfig.group_size`` models
(default 8), the last group padded with empty dummy models, so every group has the same shapes and
a model's logits do not depend on the shard size B either (``group_size=0`` = the whole shard as
one group: then B matters). Measured on this CPU (torch 2.14, oneDNN 3.12): kernels choose
blocking from tensor sizes, so the group size (NiN, small_cnn with odd sizes: up to ~1e-6 per step,
amplified by training) and, for NiN, the CPU thread count change the bits; position inside a group
(tested for small_cnn) and the neighbours' data and sizes never did. Fix ``group_size`` and ``cpu_threads`` per
experiment and record :func:`runtime_fingerprint`. Shard composition must come from partition
indices and ``shard_size`` only — never from data. :func:`train_one` is an independent reference
implementation (plain ``nn.Module`` + ``torch.optim.SGD``) with the *same* initial weights,
minibatches and augmentation draws; it agrees with the engine up to float rounding.

Empty partitions: the model outputs all-zero logits (so its vote is class 0 under the
smallest-index tie-break, and ROE's round 2 sees equal logits); a ``UserWarning`` says so.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from .augment import AUGMENTATIONS, augment_batch, draw_augment  # noqa: E402
from .data import canonical_order  # noqa: E402  (pixels, then label: DPA paper 2.2.1)
from .errors import PoisonCertError  # noqa: E402
from .models import (ARCHITECTURES, BatchedContext, batched_forward, build_model, hwc_order, kernel_settings,  # noqa: E402
                     release_scratch, stacked_forward, stacked_hwc_linears)
from .schema import param  # noqa: E402

__all__ = [
    "TrainConfig",
    "channel_stats",
    "train_shard",
    "train_one",
    "runtime_fingerprint",
    "resolve_device",
    "resolve_strategy",
    "STRATEGIES",
    "device_name",
    "deterministic_mode",
    "STD_FLOOR",
]

STD_FLOOR = 1e-2
"""Lower bound on a channel's std (on the [0, 1] scale) so constant data does not divide by 0."""

_RNG_TAG = 0x5EED

STRATEGIES = ("grouped", "dense", "stacked")
"""How the engine executes a group of models (:attr:`TrainConfig.strategy`):

* ``grouped``: the group's models vectorised: grouped convolutions (one group per model),
  ``baddbmm`` linear layers, masked BatchNorm, minibatches padded to ``batch_size`` rows;
* ``stacked``: the group's models vectorised in the model-major layout (B, n, H, W, C)
  (:func:`poisoncert.models.stacked_forward`): every convolution one ``bmm`` over im2col patches
  with each model's own weight matrix, pooling by torch's channels-last kernels, no layout copies;
  minibatches padded as under ``grouped``;
* ``dense``: each model alone through its own ``nn.Module`` with dense kernels (the plain loop's
  kernels, ``channels_last``; the last minibatch of an epoch keeps its real rows only), one after
  the other; ``group_size`` then changes no bits.
"""

STRATEGY_TABLE: dict[tuple[str, str], str] = {
    ("small_cnn", "cpu"): "stacked",
    ("nin", "cpu"): "dense",
    ("resnet18", "cpu"): "dense",
}
"""``strategy: auto`` per (arch, device type), chosen by ``benchmarks/bench_engine.py`` (CPU; every pair
not listed is ``grouped``). On one CPU thread the dense per-model convolutions of NiN and ResNet-18
run at about half the fp32 matmul rate while their grouped convolutions reach a few percent: dense
wins 10x there. small_cnn (one 3x3 convolution of one channel, then a 2x2 max-pool) wins stacked:
its convolution becomes one ``bmm`` with no layout copies, and in evaluation the pool folds into the
product. lenet (6-channel maps, where a model-major layout vectorises badly) wins grouped. CUDA is
unmeasured: ``benchmarks/gpu_check.py`` compares the strategies on a GPU (issue 23)."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one base model's training (identical for every model of a shard).

    Defaults are tuned for scikit-learn digits (8x8) with k ~ 10..50 partitions on a laptop CPU.
    The papers' NiN setup (DPA / FA / ROE, after Gidaris et al. 2018): ``arch="nin", epochs=200,
    batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
    lr_milestones=(60, 120, 160), lr_gamma=0.2``, random crop (padding 4 on CIFAR-10, 32x32) and
    horizontal flips on CIFAR-10 only.

    Augmentation, applied in this order to every training minibatch (never to test images):
    random crop (``crop_padding``), horizontal flip (``hflip``; only where flips preserve the label,
    :attr:`poisoncert.registry.DatasetRecord.hflip_ok`), then the ``augment`` policy:
    ``"none"`` (default, the papers' setting) or ``"trivial_augment"`` (TrivialAugment, Mueller &
    Hutter 2021: one random op of :data:`poisoncert.augment.TA_OPS` at a random strength per image
    and epoch; a more data-efficient base learner in the sense of the Lethal Dose Conjecture).
    """

    # Each field's doc, bounds and allowed values are the config schema's (poisoncert.schema generates
    # $defs.train from them: edit here, then `python -m poisoncert.schema --write`).
    arch: str = param("small_cnn", "Base model architecture (poisoncert.models registry).", enum=tuple(ARCHITECTURES))
    epochs: int = param(30, "Passes over each partition.", minimum=1, maximum=100000)
    batch_size: int = param(16, "Minibatch size (fixed; the last batch is masked).", minimum=1, maximum=1000000)
    lr: float = param(0.05, "Initial SGD learning rate.", exclusive_minimum=0)
    momentum: float = param(0.9, "SGD momentum.", minimum=0, exclusive_maximum=1)
    weight_decay: float = param(5e-4, "SGD weight decay.", minimum=0)
    nesterov: bool = param(True, "Nesterov momentum.")
    lr_milestones: tuple[int, ...] = param((), "Epochs after which the learning rate is multiplied by lr_gamma.", item_minimum=1, item_maximum=100000)
    lr_gamma: float = param(0.2, "Learning-rate decay factor at each milestone.", exclusive_minimum=0)
    crop_padding: int = param(0, "Random-crop augmentation with this zero padding (0 = off).", minimum=0, maximum=64)
    hflip: bool = param(False, "Random horizontal flips; only on datasets whose labels survive a mirror image (cifar10, as in "
                        "the papers, and fashion_mnist; refused on digits, digits17, mnist, mnist17, gtsrb).")
    augment: str = param("none", "Augmentation policy applied after crop_padding and hflip (poisoncert.augment): none (the "
                         "papers' setting) or trivial_augment (TrivialAugment, Mueller and Hutter 2021: per image and epoch one "
                         "of identity, auto_contrast, brightness, contrast, solarize, posterize, rotate, shear_x, shear_y, "
                         "translate_x, translate_y at a random strength; drawn from the model's own seed, so models stay pure "
                         "functions of their sets). Random crop is crop_padding > 0, flips are hflip: true.", enum=AUGMENTATIONS)
    warmup_epochs: int = param(0, "Linear learning-rate warm-up: epoch e < warmup_epochs uses lr * (e + 1) / warmup_epochs.", minimum=0, maximum=100000)
    eval_batch_size: int = param(0, "Test images per forward pass (fixed per device, so logits never depend on the data). 0 = "
                                 "auto: 1000 on a GPU; on a CPU 8 for the grouped strategy (the activations stay in the caches, about 7x faster "
                                 "than 1000), 16 for the stacked one and 128 for the dense one (poisoncert.train.CPU_EVAL_BATCH).",
                                 minimum=0, maximum=1000000)
    #: torch CPU threads while training (0 = leave torch's setting); see module doc. Set from the config's train_threads.
    cpu_threads: int = param(1, in_schema=False)
    group_size: int = param(8, "Models vectorised together by the engine (0 = the whole shard). Part of a model's identity: "
                            "changing it can change the bits of the logits, so it retrains the ensemble.", minimum=0, maximum=4096)
    channels_last: bool = param(True, "Memory format of the vectorised engine's activations (a speed setting, but recorded: it "
                                "may change the bits).")
    strategy: str = param("auto", "How the engine executes the models (poisoncert.train.STRATEGIES): grouped (vectorised: "
                          "grouped convolutions, one group per model), stacked (vectorised in a model-major layout: every "
                          "convolution one batched matrix product over im2col patches), dense (each model alone with dense "
                          "kernels) or auto (the measured choice per arch and device, poisoncert.train.STRATEGY_TABLE; the "
                          "workflow records the resolved one). Part of a model's identity.", enum=("auto",) + STRATEGIES)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise PoisonCertError(
                f"unknown architecture {self.arch!r}; valid ones: {', '.join(sorted(ARCHITECTURES))}"
            )
        if self.strategy not in ("auto",) + STRATEGIES:
            raise PoisonCertError(f"TrainConfig: unknown strategy {self.strategy!r}; valid ones: auto, {', '.join(STRATEGIES)}")
        if self.augment not in AUGMENTATIONS:
            raise PoisonCertError(f"TrainConfig: unknown augment {self.augment!r}; valid ones: {', '.join(AUGMENTATIONS)}")
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (not self.nesterov or self.momentum > 0, "nesterov needs momentum > 0"),
            (self.lr_gamma > 0, "lr_gamma must be > 0"),
            (all(m >= 1 for m in self.lr_milestones), "lr_milestones must be >= 1"),
            (self.crop_padding >= 0, "crop_padding must be >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.eval_batch_size >= 0, "eval_batch_size must be >= 0 (0 = auto)"),
            (self.cpu_threads >= 0, "cpu_threads must be >= 0"),
            (self.group_size >= 0, "group_size must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise PoisonCertError(f"TrainConfig: {msg}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of a model's own (0-based) epoch."""
        lr = self.lr * self.lr_gamma ** sum(1 for m in self.lr_milestones if epoch >= m)
        if epoch < self.warmup_epochs:
            lr *= (epoch + 1) / self.warmup_epochs
        return lr


# --------------------------------------------------------------------------------------------
# data helpers
# --------------------------------------------------------------------------------------------


def channel_stats(images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of uint8 images (n, C, H, W) on the [0, 1] scale,
    float64. The std is floored at :data:`STD_FLOOR`; empty data gives mean 0, std 1."""
    x = np.asarray(images_uint8)
    if x.ndim != 4:
        raise PoisonCertError(f"images must have shape (n, C, H, W), got {x.shape}")
    c = x.shape[1]
    if x.shape[0] == 0 or x[0].size == 0:
        return np.zeros(c, np.float64), np.ones(c, np.float64)
    xf = x.astype(np.float64) / 255.0
    mean = xf.mean(axis=(0, 2, 3))
    std = xf.std(axis=(0, 2, 3))
    return mean, np.maximum(std, STD_FLOOR)


def _check_set(i: int, images, labels, shape, n_classes: int):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8:
        raise PoisonCertError(f"training set {i}: images must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != shape:
        raise PoisonCertError(f"training set {i}: images must have shape (n, {', '.join(map(str, shape))}), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise PoisonCertError(f"training set {i}: {images.shape[0]} images but labels of shape {labels.shape}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise PoisonCertError(f"training set {i}: labels must be in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    order = canonical_order(images, labels)
    return np.ascontiguousarray(images[order]), np.ascontiguousarray(labels[order])


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise PoisonCertError(f"seeds must be integers in [0, 2**63), got {seed!r}")
    return int(seed)


class _Stream:
    """One model's minibatch plan: consumed once per own epoch, independent of any neighbour."""

    def __init__(self, n: int, seed: int, config: TrainConfig):
        self.n = n
        self.b = config.batch_size
        self.steps_per_epoch = -(-n // self.b) if n else 0
        self.total_steps = config.epochs * self.steps_per_epoch
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _RNG_TAG])))
        self.config = config
        self.epoch = -1

    def draw_epoch(self):
        c = self.config
        self.epoch += 1
        self.perm = self.rng.permutation(self.n)
        p = c.crop_padding
        self.offsets = self.rng.integers(0, 2 * p + 1, size=(self.n, 2)) if p else np.full((self.n, 2), 0)
        self.flips = self.rng.random(self.n) < 0.5 if c.hflip else np.zeros(self.n, bool)
        self.ops, self.strengths = draw_augment(self.rng, self.n, c.augment)

    def batch(self, step: int):
        """Rows (positions in the sorted set), crop offsets, flips, augment ops and signed
        strengths, and the epoch of the model's ``step``-th step."""
        e, j = divmod(step, self.steps_per_epoch)
        if j == 0:
            self.draw_epoch()
        assert e == self.epoch
        sl = slice(j * self.b, (j + 1) * self.b)
        return self.perm[sl], self.offsets[sl], self.flips[sl], self.ops[sl], self.strengths[sl], e


def _crop_flip(u8: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, H: int, W: int, pad: int,
               hflip: bool) -> torch.Tensor:
    """u8: (m, C, H+2p, W+2p) zero-padded uint8 -> (m, C, H, W) crops, flipped where ``flips``."""
    if pad:
        m, C = u8.shape[:2]
        dev = u8.device
        rows = offsets[:, 0:1] + torch.arange(H, device=dev)  # (m, H)
        cols = offsets[:, 1:2] + torch.arange(W, device=dev)  # (m, W)
        u8 = u8[torch.arange(m, device=dev)[:, None, None, None], torch.arange(C, device=dev)[None, :, None, None],
                rows[:, None, :, None], cols[:, None, None, :]]
    if hflip:
        u8 = torch.where(flips[:, None, None, None], u8.flip(-1), u8)
    return u8


def _normalize(u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 ((x / 255) - mean) / std; mean, std broadcastable (..., C, 1, 1)."""
    return (u8.to(torch.float32) / 255.0 - mean) / std


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------


def resolve_device(device: str | None = None) -> torch.device:
    """The device to train on: ``None``/``"auto"`` = a GPU when one is visible, else the CPU.

    The one device resolver of the package; asking for ``cuda`` without a GPU is a one-line error.
    """
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PoisonCertError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PoisonCertError(f"device: {device} was asked for but no GPU is visible; set device: auto or cpu")
    return dev


_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Stop glibc from returning every large freed buffer to the kernel (Linux only; once per process).

    By default glibc serves allocations above a dynamic threshold with mmap and unmaps them on
    free, so each training step's activations are fresh pages the kernel must zero: on 2 cores
    that cost more *system* time than the arithmetic (issue 11: 19 min sys vs 12 min user). With
    a fixed 32 MiB mmap threshold and no trimming the heap keeps and reuses them. Memory use and
    results are unchanged; only the page faults go. No effect where glibc is not the allocator.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: the largest glibc accepts on 64-bit
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    except (OSError, AttributeError):
        pass


def resolve_strategy(config: TrainConfig, device: str | torch.device | None = None) -> str:
    """The execution strategy of ``config`` on ``device``: its ``strategy``, or for ``auto`` the
    measured choice of :data:`STRATEGY_TABLE` for (arch, device type).

    >>> resolve_strategy(TrainConfig(arch="nin"), "cpu"), resolve_strategy(TrainConfig(arch="small_cnn"), "cpu")
    ('dense', 'stacked')
    """
    if config.strategy != "auto":
        return config.strategy
    if isinstance(device, torch.device):
        kind = device.type
    elif device in (None, "auto"):
        kind = resolve_device(device).type
    else:  # a named device need not be visible here (the rules resolve a GPU config on a login node)
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError):
            kind = resolve_device(device).type  # the one-line error
    return STRATEGY_TABLE.get((config.arch, kind), "grouped")


CPU_EVAL_BATCH = {"grouped": 8, "stacked": 16, "dense": 128}
"""Test images per forward pass on a CPU (``eval_batch_size: 0``) per strategy, measured by
``benchmarks/bench_engine.py``: a group's activations stay in the caches (grouped, stacked); a
single model's kernels want larger batches (dense)."""


def eval_batch_size(config: TrainConfig, dev: torch.device, strategy: str = "grouped") -> int:
    """Test images per forward pass: the config's, or for 0 (auto) 1000 on a GPU and on a CPU
    :data:`CPU_EVAL_BATCH` of the strategy. Fixed per device and strategy, so a model's logits never
    depend on the data."""
    if config.eval_batch_size:
        return config.eval_batch_size
    return 1000 if dev.type == "cuda" else CPU_EVAL_BATCH[strategy]


def device_name(dev: torch.device) -> str:
    """The recorded name of a device: ``cpu`` or ``cuda:<GPU model>``."""
    return "cpu" if dev.type == "cpu" else f"cuda:{torch.cuda.get_device_name(dev)}"


@contextmanager
def deterministic_mode(config: TrainConfig | None = None, seed: int | None = None):
    """Deterministic kernels, no TF32, fixed CPU thread count; restores the previous settings.

    The one determinism context of the package (engine, SS-DPA extractor and heads). With
    ``seed`` the global torch RNGs are also forked and seeded for the block.
    """
    if seed is not None:
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            with deterministic_mode(config):
                yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.get_num_threads(),
            torch.utils.deterministic.fill_uninitialized_memory,
        )
        torch.use_deterministic_algorithms(True)
        # Deterministic mode also fills every new tensor with NaN (a guard against kernels that read
        # memory they did not write); our kernels write every output element, so the fill only costs:
        # a third of small_cnn's evaluation time (issue 25, torch.profiler). Results are unchanged.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if config is not None and config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
            torch.backends.cudnn.deterministic = prev[2]
            torch.backends.cudnn.benchmark = prev[3]
            torch.backends.cuda.matmul.allow_tf32 = prev[4]
            torch.backends.cudnn.allow_tf32 = prev[5]
            if torch.get_num_threads() != prev[6]:
                torch.set_num_threads(prev[6])
            torch.utils.deterministic.fill_uninitialized_memory = prev[7]


def runtime_fingerprint(config: TrainConfig | None = None, device: str | None = None) -> dict:
    """What besides data, seed and config the logits depend on; store it with the results."""
    dev = resolve_device(device)
    threads = config.cpu_threads if (config is not None and config.cpu_threads) else torch.get_num_threads()
    out = {"torch": torch.__version__, "numpy": np.__version__, "device": dev.type, "cpu_threads": threads}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def _init_model(config: TrainConfig, shape, n_classes: int, seed: int) -> torch.nn.Module:
    """The model's initial weights: a function of its seed alone (torch CPU RNG, forked)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build_model(config.arch, *shape, n_classes)


def _empty_warning(idx: list[int]):
    warnings.warn(
        f"{len(idx)} empty training set(s) (shard positions {idx[:10]}{'...' if len(idx) > 10 else ''}): "
        "their models output all-zero logits (vote for class 0)",
        UserWarning,
        stacklevel=3,
    )


def _validate_common(test_images, n_classes):
    test_images = np.asarray(test_images)
    if test_images.dtype != np.uint8 or test_images.ndim != 4:
        raise PoisonCertError(f"test images must be uint8 (n, C, H, W), got {test_images.dtype} {test_images.shape}")
    if int(n_classes) < 1:
        raise PoisonCertError(f"n_classes must be >= 1, got {n_classes}")
    return test_images, tuple(int(s) for s in test_images.shape[1:]), int(n_classes)


# --------------------------------------------------------------------------------------------
# the vectorised engine
# --------------------------------------------------------------------------------------------


def train_shard(
    train_sets: list[tuple[np.ndarray, np.ndarray]],
    seeds: list[int],
    test_images: np.ndarray,
    n_classes: int,
    config: TrainConfig,
    device: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Train B = len(train_sets) base models together; return float32 logits (B, n_test, n_classes).

    ``train_sets[i]`` = (uint8 images (n_i, C, H, W), int64 labels (n_i,)); any order (sorted
    internally). ``seeds[i]`` seeds model i. Model i's output does not depend on the other sets.

    The shard is processed in consecutive groups of ``config.group_size`` models (the last one
    padded with empty dummy models), each group vectorised; so model i's logits depend on
    ``group_size`` and ``i % group_size`` but not on B.
    """
    test_images, shape, K = _validate_common(test_images, n_classes)
    if len(train_sets) != len(seeds):
        raise PoisonCertError(f"{len(train_sets)} training sets but {len(seeds)} seeds")
    B = len(train_sets)
    n_test = test_images.shape[0]
    if B == 0:
        return np.zeros((0, n_test, K), np.float32)
    seeds = [_check_seed(s) for s in seeds]
    sets = [_check_set(i, im, lb, shape, K) for i, (im, lb) in enumerate(train_sets)]
    empty = [i for i, (_, lb) in enumerate(sets) if len(lb) == 0]
    if empty:
        _empty_warning(empty)
    dev = resolve_device(device)
    keep_freed_memory()
    strategy = resolve_strategy(config, dev)
    G = config.group_size or B
    n_groups = -(-B // G)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_groups * config.epochs, desc=f"train {B} x {config.arch}", unit="epoch",
                   file=sys.stderr, leave=False)
    out = np.zeros((B, n_test, K), np.float32)
    blank = (np.zeros((0,) + shape, np.uint8), np.zeros(0, np.int64))
    try:
        with deterministic_mode(config):
            test = torch.from_numpy(np.ascontiguousarray(test_images)).to(dev)
            for g0 in range(0, B, G):
                g_sets = sets[g0: g0 + G]
                g_seeds = seeds[g0: g0 + G]
                n_real = len(g_sets)
                # pad the last group with empty dummies so that every group has G models
                g_sets = g_sets + [blank] * (G - n_real)
                g_seeds = g_seeds + [0] * (G - n_real)
                fitted = _fit(g_sets, g_seeds, shape, K, config, dev, strategy, bar)
                out[g0: g0 + n_real] = _evaluate(fitted, test, config, dev, strategy, n_real)[:n_real]
    finally:
        if bar is not None:
            bar.close()
    return _finish(out, empty)


def _finish(out: np.ndarray, empty: list[int]) -> np.ndarray:
    for i in empty:
        out[i] = 0.0
    return out


def _fit(sets, seeds, shape, K: int, config: TrainConfig, dev: torch.device, strategy: str, bar=None):
    """Train one group of G models with ``strategy`` (:data:`STRATEGIES`); :func:`_evaluate` takes the result."""
    if strategy in _VECTORISED:
        return _fit_group(sets, seeds, shape, K, config, dev, bar, strategy)
    fitted = []
    for (im, lb), sd in zip(sets, seeds):  # dense: each model alone, one after the other
        fitted.append(_fit_one(im, lb, sd, shape, K, config, dev, channels_last=config.channels_last, fast=True) if len(lb) else None)
    if bar is not None:
        bar.update(config.epochs)
    return K, fitted


def _evaluate(fitted, test: torch.Tensor, config: TrainConfig, dev: torch.device, strategy: str,
              n_models: int | None = None) -> np.ndarray:
    """Logits (G, n_test, K) of a group fitted by :func:`_fit` (all-zero for an empty set under ``dense``);
    ``n_models``: only the first ones are needed (the group's padding follows), at least those are returned."""
    if strategy in _VECTORISED:
        return _evaluate_group(fitted, test, config, dev, n_models)
    K, models = fitted
    out = np.zeros((len(models), test.shape[0], K), np.float32)
    eb = eval_batch_size(config, dev, "dense")
    for i, f in enumerate(models):
        if f is not None:
            out[i] = _evaluate_one(f, test, eb, dev, channels_last=config.channels_last)
    return out


def _grouped_input(x: torch.Tensor, cl) -> torch.Tensor:
    """Normalised images (B, n, C, H, W) -> the grouped layout (n, B*C, H, W)."""
    B, n, C, H, W = x.shape
    return x.transpose(0, 1).reshape(n, B * C, H, W).contiguous(memory_format=cl)


def _stacked_input(x: torch.Tensor, cl) -> torch.Tensor:
    """Normalised images (B, n, C, H, W) -> the stacked layout (B, n, H, W, C)."""
    return x.permute(0, 1, 3, 4, 2).contiguous()


_VECTORISED = {"grouped": (_grouped_input, batched_forward, False), "stacked": (_stacked_input, stacked_forward, True)}
"""The vectorised strategies: (input layout, forward, per model) of each. *Per model*: in evaluation
the first m >= 2 models of a group get the same logits, bit for bit, when the others are dropped
(every kernel works on one model's slice: :func:`poisoncert.models._stacked_conv_eval`, batched
products over at least two models, which this machine's BLAS runs item by item, while a batch of one
is an ``mm`` and may be blocked differently), so a group's padding dummies are not evaluated, where
:func:`_dropping_is_exact` confirms it on the group's own weights and test chunks. The grouped convolution of ``grouped`` depends on the
number of groups, so it evaluates the whole group."""


def _fit_group(sets, seeds, shape, K: int, config: TrainConfig, dev: torch.device, bar, strategy: str = "grouped"):
    """Train one group of G models vectorised; returns what :func:`_evaluate_group` needs."""
    to_layout, forward, _ = _VECTORISED[strategy]
    B = len(sets)
    C, H, W = shape
    pad = config.crop_padding
    bsz = config.batch_size
    sizes = [len(lb) for _, lb in sets]
    cl = torch.channels_last if config.channels_last else torch.contiguous_format

    # ---- stacked initial state (every model initialised from its own seed) -----------------
    models = [_init_model(config, shape, K, s) for s in seeds]
    template = models[0]
    names = [n for n, _ in template.named_parameters()]
    per_model = [dict(list(m.named_parameters()) + list(m.named_buffers())) for m in models]
    state: dict[str, torch.Tensor] = {
        name: torch.stack([pm[name].detach() for pm in per_model]).to(dev) for name in per_model[0]
    }
    del models, per_model
    params = [state[n].requires_grad_(True) for n in names]
    bufs = [torch.zeros_like(p) for p in params]  # momentum buffers (0 -> first step = grad)
    sgd_width = _sgd_width(params, dev)
    # stacked: a Linear after a Flatten reads (h, w, c) features; its weight is kept in that order while
    # training (no permuted copy per step, forward and backward) and put back in the module's order after
    hwc = stacked_hwc_linears(template, state, shape) if strategy == "stacked" else {}
    with torch.no_grad():
        for key, chw in hwc.items():
            state[key].copy_(hwc_order(state[key], chw))

    # ---- data: one store of all (sorted) sets, zero-padded for cropping; last row = dummy ----
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    dummy = int(offsets[-1])
    store_np = np.zeros((dummy + 1, C, H + 2 * pad, W + 2 * pad), np.uint8)
    lab_np = np.zeros(dummy + 1, np.int64)
    for i, (im, lb) in enumerate(sets):
        store_np[offsets[i]: offsets[i + 1], :, pad: pad + H, pad: pad + W] = im
        lab_np[offsets[i]: offsets[i + 1]] = lb
    store = torch.from_numpy(store_np).to(dev)
    label_store = torch.from_numpy(lab_np).to(dev)
    stats = [channel_stats(im) for im, _ in sets]
    mean = torch.tensor(np.stack([m for m, _ in stats]), dtype=torch.float32, device=dev)  # (B, C)
    std = torch.tensor(np.stack([s for _, s in stats]), dtype=torch.float32, device=dev)
    mean_b, std_b = mean.view(B, 1, C, 1, 1), std.view(B, 1, C, 1, 1)

    streams = [_Stream(n, s, config) for n, s in zip(sizes, seeds)]
    T = max(s.total_steps for s in streams)
    spe_max = max(s.steps_per_epoch for s in streams)

    idx_np = np.empty((B, bsz), np.int64)
    msk_np = np.empty((B, bsz), np.float32)
    off_np = np.empty((B, bsz, 2), np.int64)
    flp_np = np.empty((B, bsz), bool)
    ops_np = np.empty((B, bsz), np.int64)
    str_np = np.empty((B, bsz), np.float32)
    act_np = np.empty(B, bool)
    lr_np = np.empty(B, np.float32)
    for t in range(T):
        idx_np.fill(dummy)
        msk_np.fill(0.0)
        off_np.fill(0)
        flp_np.fill(False)
        ops_np.fill(0)  # op 0 = identity (also for padding rows)
        str_np.fill(0.0)
        for i, st in enumerate(streams):
            act = t < st.total_steps
            act_np[i] = act
            lr_np[i] = 0.0
            if not act:
                continue
            rows, offs, flips, ops, strengths, epoch = st.batch(t)
            r = len(rows)
            idx_np[i, :r] = offsets[i] + rows
            msk_np[i, :r] = 1.0
            off_np[i, :r] = offs
            flp_np[i, :r] = flips
            ops_np[i, :r] = ops
            str_np[i, :r] = strengths
            lr_np[i] = config.lr_at(epoch)
        idx = torch.from_numpy(idx_np).to(dev).view(-1)
        mask_bt = torch.from_numpy(msk_np).to(dev)  # (B, b)
        u8 = _crop_flip(store[idx], torch.from_numpy(off_np).to(dev).view(-1, 2),
                        torch.from_numpy(flp_np).to(dev).view(-1), H, W, pad, config.hflip)
        if config.augment != "none":
            u8 = augment_batch(u8, torch.from_numpy(ops_np).to(dev).view(-1), torch.from_numpy(str_np).to(dev).view(-1))
        x = to_layout(_normalize(u8.view(B, bsz, C, H, W), mean_b, std_b), cl)  # from (B, b, C, H, W)
        y1h = F.one_hot(label_store[idx].view(B, bsz), K).to(torch.float32)

        ctx = BatchedContext(B, mask_bt.t().contiguous(), real_rows=[int(c) for c in msk_np.sum(1)])  # real rows lead
        ctx.hwc = frozenset(hwc)
        logits = forward(template, state, x, ctx)  # (B, b, K)
        nll = -(torch.log_softmax(logits, dim=-1) * y1h).sum(-1)  # (B, b)
        loss_m = (nll * mask_bt).sum(1) / mask_bt.sum(1).clamp(min=1.0)
        grads = torch.autograd.grad(loss_m.sum(), params)

        with torch.no_grad():
            _sgd_step(params, grads, bufs, act_np, lr_np, config, sgd_width)
            active = torch.from_numpy(act_np).to(dev)
            for name, rm_new, rv_new in ctx.bn_updates:
                a = active.view(B, 1)
                state[name + ".running_mean"].copy_(torch.where(a, rm_new, state[name + ".running_mean"]))
                state[name + ".running_var"].copy_(torch.where(a, rv_new, state[name + ".running_var"]))
                nbt = state.get(name + ".num_batches_tracked")
                if nbt is not None:
                    nbt.add_(active.to(nbt.dtype))
        if bar is not None and (t + 1) % spe_max == 0:
            bar.update(1)
    if bar is not None and T == 0:
        bar.update(config.epochs)
    with torch.no_grad():
        for key, chw in hwc.items():
            state[key].copy_(hwc_order(state[key], chw, inverse=True))
    release_scratch()

    return template, state, mean_b, std_b, strategy


SGD_CACHE_BYTES = 1 << 20
"""The working set one run of :func:`_sgd_step` may touch on a CPU (parameters, gradients, momentum and
two temporaries of its models): half of this machine's 2 MiB per-core L2 cache (the development VM's),
so each array comes from memory once per step and its next five uses hit the cache."""


def _sgd_width(params: list[torch.Tensor], dev: torch.device) -> int:
    """Models per run of :func:`_sgd_step`: as many as fit :data:`SGD_CACHE_BYTES` on a CPU (at least
    one), the whole group on a GPU (fewer, larger kernels)."""
    B = params[0].shape[0]
    if dev.type != "cpu":
        return B
    per_model = 5 * sum(p[0].numel() * p.element_size() for p in params)
    return max(1, min(B, SGD_CACHE_BYTES // max(per_model, 1)))


def _sgd_runs(active: np.ndarray, lrs: np.ndarray, width: int) -> list[tuple[int, int, float]]:
    """The [b0, b1) runs of consecutive active models sharing a learning rate, at most ``width`` models
    each, with that rate: the models :func:`_sgd_step` updates together.

    >>> _sgd_runs(np.array([True, True, False, True, True]), np.array([.1, .1, .1, .1, .2], np.float32), 8)
    [(0, 2, 0.10000000149011612), (3, 4, 0.10000000149011612), (4, 5, 0.20000000298023224)]
    """
    runs: list[tuple[int, int, float]] = []
    b, B = 0, len(active)
    while b < B:
        if not active[b]:
            b += 1
            continue
        e = b + 1
        while e < B and e - b < width and active[e] and lrs[e] == lrs[b]:
            e += 1
        runs.append((b, e, float(lrs[b])))
        b = e
    return runs


def _sgd_step(params: list[torch.Tensor], grads, bufs: list[torch.Tensor], active: np.ndarray, lrs: np.ndarray,
              config: TrainConfig, width: int) -> None:
    """One SGD step (weight decay, momentum, Nesterov) of the active models of a stacked group, in place:
    ``torch.optim.SGD``'s update for each model alone, d = g + wd * p, m = mom * m + d, then
    p -= lr * (d + mom * m) (Nesterov) or p -= lr * m (each product and sum rounded on its own); a
    model that is not active keeps its parameters and momentum. Element-wise, with no reduction, so a
    slice of models computes exactly the bits the whole stack would (tested against the group's
    ``torch.where`` formula). Runs of at most ``width`` consecutive models (:func:`_sgd_runs`) each take the five
    stages with one ``foreach`` op per stage while their arrays are still in the cache: a whole group's
    stack streams every array through memory once per stage. A learning rate is exactly a float32
    (``lrs``), so the scalar multiplies as the tensor would."""
    wd, mom = config.weight_decay, config.momentum
    for b0, b1, lr in _sgd_runs(active, lrs, width):
        P = [p[b0:b1] for p in params]
        G = [g[b0:b1] for g in grads]
        M = [m[b0:b1] for m in bufs]
        if wd:
            d = torch._foreach_mul(P, wd)
            torch._foreach_add_(d, G)  # wd * p + g
        else:
            d = G
        torch._foreach_mul_(M, mom)
        torch._foreach_add_(M, d)  # the new momentum, mom * m + d
        if config.nesterov:
            step = torch._foreach_mul(M, mom)
            torch._foreach_add_(step, d)  # mom * m_new + d
            torch._foreach_mul_(step, lr)
        else:
            step = torch._foreach_mul(M, lr)
        torch._foreach_sub_(P, step)


_DROP_EXACT: dict[tuple, bool] = {}


def _dropping_is_exact(template, state, mean_b, std_b, test, eb: int, keep: int, to_layout, forward, cl) -> bool:
    """Whether evaluating only a group's first ``keep`` models gives them the bits of evaluating the
    whole group, for every chunk shape of this test set (the full chunk and the last, smaller one),
    on this machine: every kernel of a per-model strategy works on one model's slice, but a batched
    product may still pick its kernel by the batch count (a GPU's, a many-core CPU's). Checked once
    per process, shapes and :func:`poisoncert.models.kernel_settings`, on this group's own weights
    and the test images."""
    n_test = test.shape[0]
    sizes = sorted({min(eb, n_test)} | ({n_test % eb} if n_test % eb else set()))
    key = (tuple((k, tuple(v.shape), v.dtype) for k, v in state.items()), tuple(test.shape[1:]), keep, tuple(sizes),
           str(test.device), kernel_settings())
    if key not in _DROP_EXACT:
        ok = True
        part = {k: v[:keep] for k, v in state.items()}
        with torch.no_grad():
            for c in sizes:
                u8 = test[:c].unsqueeze(0)
                full = forward(template, state, to_layout(_normalize(u8, mean_b, std_b), cl), BatchedContext(mean_b.shape[0], None))
                few = forward(template, part, to_layout(_normalize(u8, mean_b[:keep], std_b[:keep]), cl), BatchedContext(keep, None))
                ok = ok and torch.equal(full[:keep], few)
        _DROP_EXACT[key] = ok
    return _DROP_EXACT[key]


def _evaluate_group(fitted, test: torch.Tensor, config: TrainConfig, dev: torch.device, n_models: int | None = None) -> np.ndarray:
    """Logits (G, n_test, K) of a fitted group: running BN statistics, fixed chunks of the test set.
    ``n_models``: only the first ones are needed (the rest pad the group); a per-model strategy
    (:data:`_VECTORISED`) returns just those."""
    template, state, mean_b, std_b, strategy = fitted
    to_layout, forward, per_model = _VECTORISED[strategy]
    cl = torch.channels_last if config.channels_last else torch.contiguous_format
    n_test = test.shape[0]
    eb = eval_batch_size(config, dev, strategy)
    keep = max(n_models or 0, 2)  # a bmm of one matrix runs as an mm
    if per_model and n_models is not None and keep < mean_b.shape[0] and _dropping_is_exact(
            template, state, mean_b, std_b, test, eb, keep, to_layout, forward, cl):  # drop the padding dummies
        state = {k: v[:keep] for k, v in state.items()}
        mean_b, std_b = mean_b[:keep], std_b[:keep]
    B = mean_b.shape[0]
    _, C, H, W = test.shape
    K = state[[n for n, _ in template.named_parameters()][-1]].shape[1]
    out = torch.empty(B, n_test, K, dtype=torch.float32)
    ctx = BatchedContext(B, None)  # one context for every chunk: its cache holds the rearranged weights
    with torch.no_grad():
        for s in range(0, n_test, eb):
            u8 = test[s: s + eb]
            x = to_layout(_normalize(u8.unsqueeze(0), mean_b, std_b), cl)  # from (B, m, C, H, W)
            out[:, s: s + u8.shape[0]] = forward(template, state, x, ctx).cpu()
    return out.numpy()


# --------------------------------------------------------------------------------------------
# the reference path: one model, plain nn.Module + torch.optim.SGD
# --------------------------------------------------------------------------------------------


def train_one(train_set, seed, test_images, n_classes, config: TrainConfig, device: str | None = None) -> np.ndarray:
    """Train one model alone with a plain loop; float32 logits (n_test, n_classes).

    Same initial weights, minibatches and augmentation draws as :func:`train_shard`; differs from
    it only by float rounding (different kernel shapes). The reference implementation: contiguous
    (NCHW) activations and the config's ``eval_batch_size`` resolved as for the grouped strategy,
    whatever ``config.strategy`` says."""
    test_images, shape, K = _validate_common(test_images, n_classes)
    seed = _check_seed(seed)
    images, labels = _check_set(0, train_set[0], train_set[1], shape, K)
    if len(labels) == 0:
        _empty_warning([0])
        return np.zeros((test_images.shape[0], K), np.float32)
    dev = resolve_device(device)
    with deterministic_mode(config):
        test = torch.from_numpy(np.ascontiguousarray(test_images)).to(dev)
        fitted = _fit_one(images, labels, seed, shape, K, config, dev, channels_last=False)
        return _evaluate_one(fitted, test, eval_batch_size(config, dev, "grouped"), dev, channels_last=False)


def _fit_one(images: np.ndarray, labels: np.ndarray, seed: int, shape, K: int, config: TrainConfig, dev: torch.device,
             channels_last: bool, fast: bool = False):
    """One model trained alone (nn.Module + torch.optim.SGD, the model's own minibatch stream);
    returns what :func:`_evaluate_one` needs. The reference loop and (``fast``: foreach SGD, BatchNorm
    folded into the preceding convolution for evaluation) the ``dense`` strategy."""
    n = len(labels)
    C, H, W = shape
    pad = config.crop_padding
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = _init_model(config, shape, K, seed).to(dev, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=config.nesterov, foreach=True if fast else None)
    m_np, s_np = channel_stats(images)
    mean = torch.tensor(m_np, dtype=torch.float32, device=dev).view(C, 1, 1)
    std = torch.tensor(s_np, dtype=torch.float32, device=dev).view(C, 1, 1)
    padded = np.zeros((n, C, H + 2 * pad, W + 2 * pad), np.uint8)
    padded[:, :, pad: pad + H, pad: pad + W] = images
    store = torch.from_numpy(padded).to(dev)
    ys = torch.from_numpy(labels).to(dev)
    stream = _Stream(n, seed, config)
    model.train()
    for t in range(stream.total_steps):
        rows, offs, flips, ops, strengths, epoch = stream.batch(t)
        for g in opt.param_groups:
            g["lr"] = config.lr_at(epoch)
        r = torch.from_numpy(np.ascontiguousarray(rows)).to(dev)
        u8 = _crop_flip(store[r], torch.from_numpy(np.ascontiguousarray(offs)).to(dev),
                        torch.from_numpy(np.ascontiguousarray(flips)).to(dev), H, W, pad, config.hflip)
        if config.augment != "none":
            u8 = augment_batch(u8, torch.from_numpy(np.ascontiguousarray(ops)).to(dev),
                               torch.from_numpy(np.ascontiguousarray(strengths)).to(dev))
        x = _normalize(u8, mean, std)
        if channels_last:
            x = x.contiguous(memory_format=fmt)
        logits = model(x)
        loss = -(torch.log_softmax(logits, -1) * F.one_hot(ys[r], K).to(torch.float32)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    if fast:
        model = _fold_batchnorm(model)
    return model, mean, std, K


def _fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Evaluation only: every BatchNorm2d that directly follows a Conv2d (in an ``nn.Sequential`` or a
    :class:`poisoncert.models.ResidualBlock`) folded into that convolution's weights and bias
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``), the BatchNorm replaced by the identity: the same
    function up to float rounding, one pass over the activations fewer per layer."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from .models import ResidualBlock

    with torch.no_grad():
        if isinstance(module, (torch.nn.Sequential, ResidualBlock)):
            names = [n for n, _ in module.named_children()]
            for a, b in zip(names, names[1:]):
                conv, bn = getattr(module, a), getattr(module, b)
                if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d) and bn.track_running_stats:
                    setattr(module, a, fuse_conv_bn_eval(conv, bn))
                    setattr(module, b, torch.nn.Identity())
        for _, child in module.named_children():
            _fold_batchnorm(child)
    return module


def _evaluate_one(fitted, test: torch.Tensor, eb: int, dev: torch.device, channels_last: bool) -> np.ndarray:
    """Logits (n_test, K) of a model from :func:`_fit_one`, ``eb`` test images per forward pass."""
    model, mean, std, K = fitted
    n_test = test.shape[0]
    out = torch.empty(n_test, K, dtype=torch.float32)
    with torch.inference_mode():
        for s in range(0, n_test, eb):
            x = _normalize(test[s: s + eb], mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out[s: s + eb] = model(x).cpu()
    return out.numpy()
