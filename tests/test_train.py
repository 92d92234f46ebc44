"""Training engine: shard invariance, determinism, masking, empty sets, architectures.

Tiny synthetic 8x8 data and 1-3 epochs, so the whole file runs in well under a minute on 2 CPU
cores. No GPU is assumed.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from poisoncert.errors import PoisonCertError
from poisoncert.models import ARCHITECTURES, BatchedContext, batched_forward, build_model
from poisoncert.train import STD_FLOOR, TrainConfig, channel_stats, train_one, train_shard

N_CLASSES = 4
SHAPE = (1, 8, 8)


def make_set(rng: np.random.Generator, n: int, shape=SHAPE, n_classes=N_CLASSES):
    """Learnable synthetic data: class c lights up row block c, plus noise."""
    labels = rng.integers(0, n_classes, size=n).astype(np.int64)
    imgs = rng.integers(0, 60, size=(n,) + shape).astype(np.int64)
    for i, c in enumerate(labels):
        imgs[i, :, 2 * c: 2 * c + 2, :] += 180
    return np.clip(imgs, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1234)
    sets = [make_set(rng, n) for n in (13, 0, 21, 9, 17)]
    test_images, test_labels = make_set(rng, 40)
    return sets, test_images, test_labels


CFG = TrainConfig(arch="small_cnn", epochs=3, batch_size=8, lr=0.05, crop_padding=1, hflip=True, group_size=0,
                  cpu_threads=1)  # 1 thread: robust to a busy shared CPU
#: TrivialAugment on top of crop and flip (poisoncert.augment): the same contract must hold
CFG_TA = dataclasses.replace(CFG, augment="trivial_augment")
# masked BatchNorm path: NiN is BN-heavy; keep it to 1 epoch of a handful of samples. strategy="grouped":
# NiN's measured CPU default (strategy auto) is dense, which has no masked BatchNorm
CFG_BN = TrainConfig(arch="nin", epochs=1, batch_size=4, lr=0.02, crop_padding=1, group_size=0, cpu_threads=1, strategy="grouped")
#: the dense strategy (each model alone through its nn.Module): the same contract must hold
CFG_DENSE = dataclasses.replace(CFG, strategy="dense", group_size=2)
#: every vectorised strategy explicitly (CFG's auto resolves to small_cnn's measured CPU choice)
CFG_GROUPED = dataclasses.replace(CFG, strategy="grouped")
CFG_STACKED = dataclasses.replace(CFG, strategy="stacked")


def _poison(sets, j, rng):
    """Flip every label of set j and add samples so that it becomes the largest set."""
    im, lb = sets[j]
    extra_im, extra_lb = make_set(rng, max(len(y) for _, y in sets) - len(lb) + 3)
    poisoned = (np.concatenate([im, extra_im]), np.concatenate([(lb + 1) % N_CLASSES, extra_lb]))
    out = list(sets)
    out[j] = poisoned
    assert len(poisoned[1]) > max(len(lb) for _, lb in sets)
    return out


@pytest.mark.parametrize("cfg", [CFG, dataclasses.replace(CFG, group_size=2), CFG_BN, CFG_TA, dataclasses.replace(CFG_TA, group_size=2),
                                 CFG_DENSE, dataclasses.replace(CFG_BN, strategy="auto"), CFG_GROUPED,
                                 dataclasses.replace(CFG_STACKED, group_size=2), dataclasses.replace(CFG_BN, strategy="stacked"),
                                 TrainConfig(arch="mlp", epochs=2, batch_size=8, crop_padding=1, group_size=0, cpu_threads=1, strategy="stacked")],
                         ids=["small_cnn", "small_cnn_groups_of_2", "nin_masked_bn", "trivial_augment", "trivial_augment_groups_of_2",
                              "small_cnn_dense", "nin_auto_dense", "small_cnn_grouped", "small_cnn_stacked_groups_of_2",
                              "nin_masked_bn_stacked", "mlp_stacked"])
@pytest.mark.parametrize("victim", [1, 3], ids=["empty_becomes_largest", "small_becomes_largest"])
def test_shard_invariance_neighbour_poisoned(data, cfg, victim):
    sets, test_images, _ = data
    if cfg.arch == "nin":
        sets = [(im[:6], lb[:6]) for im, lb in sets]
        test_images = test_images[:8]
    seeds = [10, 11, 12, 13, 14]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clean = train_shard(sets, seeds, test_images, N_CLASSES, cfg, device="cpu", progress=False)
        poisoned = train_shard(_poison(sets, victim, np.random.default_rng(victim)), seeds, test_images,
                               N_CLASSES, cfg, device="cpu", progress=False)
    for i in range(len(sets)):
        if i == victim:
            assert not np.array_equal(clean[i], poisoned[i])
        else:
            assert np.array_equal(clean[i], poisoned[i]), f"model {i} changed when model {victim} was poisoned"


@pytest.mark.parametrize("CFG", [CFG, CFG_TA], ids=["crop_flip", "trivial_augment"])
def test_repeatable_and_order_invariant(data, CFG):
    sets, test_images, _ = data
    seeds = [3, 4, 5, 6, 7]
    with pytest.warns(UserWarning, match="empty"):
        a = train_shard(sets, seeds, test_images, N_CLASSES, CFG, device="cpu", progress=False)
    with pytest.warns(UserWarning, match="empty"):
        b = train_shard(sets, seeds, test_images, N_CLASSES, CFG, device="cpu", progress=False)
    assert np.array_equal(a, b)
    rng = np.random.default_rng(0)
    shuffled = []
    for im, lb in sets:
        p = rng.permutation(len(lb))
        shuffled.append((im[p], lb[p]))
    with pytest.warns(UserWarning, match="empty"):
        c = train_shard(shuffled, seeds, test_images, N_CLASSES, CFG, device="cpu", progress=False)
    assert np.array_equal(a, c)
    # train_one: repeatable and order invariant too
    one = train_one(sets[0], 3, test_images, N_CLASSES, CFG, device="cpu")
    assert np.array_equal(one, train_one(shuffled[0], 3, test_images, N_CLASSES, CFG, device="cpu"))
    # different seeds give different models
    other = train_shard(sets[:1], [99], test_images, N_CLASSES, CFG, device="cpu", progress=False)
    assert not np.array_equal(a[0], other[0])


def test_group_padding_makes_logits_independent_of_shard_size(data):
    """With a fixed group_size the shard is cut into groups padded with dummies, so a model's
    logits are the same whether its shard holds 3 or 5 models."""
    sets, test_images, _ = data
    cfg = dataclasses.replace(CFG, group_size=4, cpu_threads=2)  # also exercises 2 threads
    seeds = [20, 21, 22, 23, 24]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        big = train_shard(sets, seeds, test_images, N_CLASSES, cfg, device="cpu", progress=False)
        small = train_shard(sets[:3], seeds[:3], test_images, N_CLASSES, cfg, device="cpu", progress=False)
        # the 5th model alone in its group (positions differ in size of the group's real part)
        last = train_shard(sets[4:], seeds[4:], test_images, N_CLASSES, cfg, device="cpu", progress=False)
    assert np.array_equal(big[:3], small)
    assert np.array_equal(big[4], last[0])


@pytest.mark.parametrize("CFG", [CFG, CFG_TA, CFG_GROUPED, CFG_STACKED], ids=["crop_flip", "trivial_augment", "grouped", "stacked"])
def test_different_sizes_match_reference_loop(data, CFG):
    """Models of sizes 13, 21, 9, 17 (batch 8: padded last minibatches, different step counts)
    trained together agree with the plain per-model loop up to float rounding."""
    sets, test_images, test_labels = data
    sets = [s for s in sets if len(s[1])]
    seeds = [1, 2, 3, 4]
    shard = train_shard(sets, seeds, test_images, N_CLASSES, CFG, device="cpu", progress=False)
    ref = np.stack([train_one(s, sd, test_images, N_CLASSES, CFG, device="cpu") for s, sd in zip(sets, seeds)])
    assert shard.dtype == np.float32 and shard.shape == (4, len(test_images), N_CLASSES)
    np.testing.assert_allclose(shard, ref, rtol=1e-3, atol=1e-3)
    # and they learned something (chance is 25%)
    assert (shard.argmax(-1) == test_labels).mean() > 0.5


def test_masked_batchnorm_matches_plain_module_on_real_rows():
    torch.manual_seed(0)
    models = [build_model("nin", 1, 8, 8, N_CLASSES) for _ in range(3)]
    names = list(dict(list(models[0].named_parameters()) + list(models[0].named_buffers())))
    state = {n: torch.stack([dict(list(m.named_parameters()) + list(m.named_buffers()))[n].detach() for m in models])
             for n in names}
    n_real = [5, 2, 0]
    x = torch.randn(3, 6, 1, 8, 8)
    mask = torch.zeros(6, 3)
    for b, r in enumerate(n_real):
        mask[:r, b] = 1
    ctx = BatchedContext(3, mask)
    out = batched_forward(models[0], state, x.transpose(0, 1).reshape(6, 3, 8, 8), ctx)
    for b, r in enumerate(n_real[:2]):
        models[b].train()
        ref = models[b](x[b, :r])
        torch.testing.assert_close(out[b, :r], ref, rtol=1e-4, atol=1e-4)
    # padded rows do not influence real rows (bitwise)
    x2 = x.clone()
    x2[0, 5:] = 1e3
    x2[1, 2:] = -7.0
    out2 = batched_forward(models[0], state, x2.transpose(0, 1).reshape(6, 3, 8, 8), BatchedContext(3, mask))
    assert torch.equal(out2[0, :5], out[0, :5]) and torch.equal(out2[1, :2], out[1, :2])


def test_empty_partition_gives_zero_logits(data):
    sets, test_images, _ = data
    with pytest.warns(UserWarning, match="empty"):
        out = train_shard(sets[:2], [0, 1], test_images, N_CLASSES, CFG, device="cpu", progress=False)
    assert np.array_equal(out[1], np.zeros_like(out[1]))
    assert np.abs(out[0]).sum() > 0
    with pytest.warns(UserWarning, match="empty"):
        one = train_one(sets[1], 5, test_images, N_CLASSES, CFG, device="cpu")
    assert one.shape == (len(test_images), N_CLASSES) and not one.any()


def test_channel_stats():
    x = np.full((4, 3, 2, 2), 51, np.uint8)
    mean, std = channel_stats(x)
    assert mean.dtype == np.float64 and np.allclose(mean, 0.2) and np.allclose(std, STD_FLOOR)
    mean, std = channel_stats(np.zeros((0, 2, 8, 8), np.uint8))
    assert np.array_equal(mean, [0, 0]) and np.array_equal(std, [1, 1])
    x = np.random.default_rng(0).integers(0, 256, (10, 1, 4, 4)).astype(np.uint8)
    mean, std = channel_stats(x)
    assert np.allclose(mean, x.mean() / 255) and np.allclose(std, x.std() / 255)


def test_unknown_arch_and_bad_inputs(data):
    with pytest.raises(PoisonCertError, match="small_cnn"):
        build_model("vgg", 1, 8, 8, 10)
    with pytest.raises(PoisonCertError, match="unknown architecture"):
        TrainConfig(arch="vgg")
    with pytest.raises(PoisonCertError):
        TrainConfig(batch_size=0)
    sets, test_images, _ = data
    with pytest.raises(PoisonCertError, match="labels"):
        train_shard([(sets[0][0], sets[0][1] + 10)], [0], test_images, N_CLASSES, CFG, progress=False)
    with pytest.raises(PoisonCertError, match="seeds"):
        train_shard(sets[:1], [0, 1], test_images, N_CLASSES, CFG, progress=False)
    with pytest.raises(PoisonCertError, match="lenet"):
        build_model("lenet", 1, 8, 8, 10)


INTENDED = {
    "small_cnn": [(1, 8, 8), (1, 28, 28), (3, 32, 32)],
    "mlp": [(1, 8, 8), (1, 28, 28)],
    "lenet": [(1, 28, 28), (3, 32, 32)],
    "nin": [(3, 32, 32), (1, 28, 28)],
    "resnet18": [(3, 32, 32), (1, 28, 28)],
}


def test_every_architecture_is_covered():
    assert set(INTENDED) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch,shape", [(a, s) for a, ss in INTENDED.items() for s in ss])
def test_architecture_forward_and_batched_forward(arch, shape):
    """Each architecture builds, runs forward, and its batched (stacked, B=2) evaluation equals the
    per-model forward."""
    torch.manual_seed(0)
    models = [build_model(arch, *shape, 10).eval() for _ in range(2)]
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        ref = torch.stack([m(x[b]) for b, m in enumerate(models)])
        assert ref.shape == (2, 2, 10)
        names = list(dict(list(models[0].named_parameters()) + list(models[0].named_buffers())))
        state = {n: torch.stack([dict(list(m.named_parameters()) + list(m.named_buffers()))[n] for m in models])
                 for n in names}
        out = batched_forward(models[0], state, x.transpose(0, 1).reshape(2, 2 * shape[0], *shape[1:]),
                              BatchedContext(2, None))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_progress_bar_on_stderr_and_settings_restored(data, capsys):
    sets, test_images, _ = data
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    cfg = dataclasses.replace(CFG, epochs=1, cpu_threads=1)
    train_shard(sets[:1], [0], test_images, N_CLASSES, cfg, device="cpu", progress=True)
    err = capsys.readouterr().err
    assert "small_cnn" in err
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


@pytest.mark.slow
def test_gpu_check_rehearses_on_the_cpu(repo_root, tmp_path):
    """benchmarks/gpu_check.py --cpu: the prepared GPU session's every step at toy size, and its checks pass."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(repo_root / "workflow")}
    proc = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "gpu_check.py"), "--cpu"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks["repeat_bit_identical"] and checks["shard_invariant_bit_identical"] and checks["neighbour_changed"]
    assert checks["cuda_without_gpu_one_line"] and "no GPU is visible" in checks["cuda_without_gpu_message"]
    assert checks["argmax_agreement"] > 0.5
    assert (tmp_path / "throughput.csv").read_text().count("\n") >= 3 and json.loads((tmp_path / "ensemble.json").read_text())["k"] == 1200
    ssdpa = json.loads((tmp_path / "ssdpa_checks.json").read_text())
    assert ssdpa["rotnet_nin_repeat_bit_identical"] and ssdpa["simclr_resnet18_repeat_bit_identical"]
    assert ssdpa["nin_block_heads_repeat_bit_identical"] and ssdpa["nin_block_flip_changes_only_its_head"]
    strategies = json.loads((tmp_path / "strategies.json").read_text())  # grouped vs dense vs the plain loop, per shape
    assert set(strategies["fastest"]) == {"1x28x28", "3x32x32"}
    assert {r["strategy"] for r in strategies["rows"]} >= {"grouped_g2", "stacked_g2", "dense", "plain_loop"}


# ---------------------------------------------------------------------------------------------- augmentation


def test_augment_none_draws_what_the_engine_drew_before_the_option():
    """augment="none" (the default) leaves the model's random stream as it was: permutation, crop
    offsets, flip coins per epoch and nothing else, so existing results keep their bits."""
    from poisoncert.train import _RNG_TAG, _Stream

    cfg = TrainConfig(epochs=2, batch_size=4, crop_padding=2, hflip=True)
    assert cfg.augment == "none"
    st = _Stream(10, 77, cfg)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([77, _RNG_TAG])))
    for epoch in range(2):
        st.batch(epoch * st.steps_per_epoch)
        assert np.array_equal(st.perm, rng.permutation(10))
        assert np.array_equal(st.offsets, rng.integers(0, 5, size=(10, 2)))
        assert np.array_equal(st.flips, rng.random(10) < 0.5)
        assert not st.ops.any() and not st.strengths.any()
    with pytest.raises(PoisonCertError, match="unknown augment"):
        TrainConfig(augment="autoaugment")


def test_trivial_augment_is_per_image_and_changes_the_training_images(rng):
    """An image's augmented pixels depend on its pixels, op and strength only: any subset, order or
    batch size gives the same bytes (what shard invariance needs); every op is reachable and the
    non-identity ops at full strength change a generic image."""
    from poisoncert.augment import TA_OPS, augment_batch, draw_augment

    imgs = torch.from_numpy(rng.integers(0, 256, size=(300, 1, 12, 12)).astype(np.uint8))
    ops, strengths = (torch.from_numpy(a) for a in draw_augment(np.random.default_rng(5), 300, "trivial_augment"))
    assert set(ops.tolist()) == set(range(len(TA_OPS)))
    full = augment_batch(imgs, ops, strengths)
    perm = torch.from_numpy(rng.permutation(300))
    for size in (1, 7, 128):
        sub = perm[:size]
        assert torch.equal(augment_batch(imgs[sub], ops[sub], strengths[sub]), full[sub])
    one = imgs[:1]
    for i, name in enumerate(TA_OPS):
        out = augment_batch(one, torch.tensor([i]), torch.tensor([1.0]))
        assert out.dtype == torch.uint8 and out.shape == one.shape
        assert torch.equal(out, one) == (name == "identity"), name
        assert torch.equal(augment_batch(one, torch.tensor([i]), torch.tensor([0.0])), one) or name == "auto_contrast", name


# ---------------------------------------------------------------------------------------------- strategies


def test_strategy_auto_resolves_per_arch_and_device_and_bad_ones_are_refused():
    from poisoncert.train import STRATEGY_TABLE, resolve_strategy

    assert resolve_strategy(TrainConfig(arch="nin"), "cpu") == STRATEGY_TABLE[("nin", "cpu")] == "dense"
    assert resolve_strategy(TrainConfig(arch="small_cnn"), "cpu") == STRATEGY_TABLE[("small_cnn", "cpu")] == "stacked"
    assert resolve_strategy(TrainConfig(arch="lenet"), "cpu") == "grouped"
    assert resolve_strategy(TrainConfig(arch="nin", strategy="grouped"), "cpu") == "grouped"
    # a named GPU need not be visible where the rules resolve it (a login node): no error, the cuda entry
    assert resolve_strategy(TrainConfig(arch="nin"), "cuda") == STRATEGY_TABLE.get(("nin", "cuda"), "grouped")
    with pytest.raises(PoisonCertError, match="unknown strategy 'fast'; valid ones: auto, grouped, dense, stacked"):
        TrainConfig(strategy="fast")


def test_dense_strategy_matches_reference_loop_and_ignores_group_size(data):
    """strategy="dense" trains each model alone with dense kernels: its logits agree with the
    reference loop up to float rounding (channels_last, evaluation batch) and do not change by a bit
    with the group size or the shard's other models."""
    sets, test_images, test_labels = data
    sets = [s for s in sets if len(s[1])]
    seeds = [1, 2, 3, 4]
    dense = train_shard(sets, seeds, test_images, N_CLASSES, CFG_DENSE, device="cpu", progress=False)
    ref = np.stack([train_one(s, sd, test_images, N_CLASSES, CFG, device="cpu") for s, sd in zip(sets, seeds)])
    np.testing.assert_allclose(dense, ref, rtol=1e-3, atol=1e-3)
    assert (dense.argmax(-1) == test_labels).mean() > 0.5
    for g in (1, 3, 0):
        other = train_shard(sets[1:], seeds[1:], test_images, N_CLASSES, dataclasses.replace(CFG_DENSE, group_size=g),
                            device="cpu", progress=False)
        assert np.array_equal(other, dense[1:]), g


def test_deterministic_mode_skips_the_nan_fill_and_restores_it():
    """The engine does not pay deterministic mode's NaN fill of new tensors (a third of small_cnn's
    evaluation time); the setting is restored afterwards."""
    from poisoncert.train import deterministic_mode

    before = torch.utils.deterministic.fill_uninitialized_memory
    with deterministic_mode(CFG):
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory == before


def test_stacked_training_keeps_flattened_linear_weights_in_hwc_order_without_changing_a_bit(data, monkeypatch):
    """The stacked trainer holds a Linear weight that reads a flattened image in the features' (h, w, c)
    order for the whole training and puts it back afterwards (poisoncert.models.stacked_hwc_linears):
    the fitted state is bit for bit the one of permuting a copy every step, and in the module's order."""
    from poisoncert import train as engine

    sets = [data[0][i] for i in (0, 2, 3)]
    cfg = dataclasses.replace(CFG_STACKED, group_size=3)
    dev = torch.device("cpu")
    found = engine.stacked_hwc_linears
    seen = []
    monkeypatch.setattr(engine, "stacked_hwc_linears", lambda *a: seen.append(found(*a)) or seen[-1])
    with engine.deterministic_mode(cfg):
        fast = engine._fit(sets, [1, 2, 3], SHAPE, N_CLASSES, cfg, dev, "stacked")
    assert seen == [{"4.weight": (32, 4, 4)}]  # small_cnn on 8x8: conv, pool, relu, flatten, linear
    monkeypatch.setattr(engine, "stacked_hwc_linears", lambda *a: {})
    with engine.deterministic_mode(cfg):
        plain = engine._fit(sets, [1, 2, 3], SHAPE, N_CLASSES, cfg, dev, "stacked")
    assert fast[1].keys() == plain[1].keys()
    for k in fast[1]:
        assert torch.equal(fast[1][k], plain[1][k]), k


def test_dropping_a_groups_padding_dummies_is_checked_and_can_be_refused(data, monkeypatch):
    """Stacked evaluation skips a group's padding dummies only where evaluating the first models alone
    gives their bits in the whole group (train._dropping_is_exact, on the group's own weights and both
    chunk shapes); refused, it evaluates the whole group, with the same logits."""
    from poisoncert import train as engine

    sets = [data[0][i] for i in (0, 2, 3)]
    cfg = dataclasses.replace(CFG_STACKED, group_size=8)
    ran = []
    real = engine._dropping_is_exact
    monkeypatch.setattr(engine, "_dropping_is_exact", lambda *a: ran.append(real(*a)) or ran[-1])
    kept = train_shard(sets, [1, 2, 3], data[1], N_CLASSES, cfg, device="cpu", progress=False)
    assert ran == [True]  # asked once (one group of 3 real models and 5 dummies), and exact here
    monkeypatch.setattr(engine, "_dropping_is_exact", lambda *a: False)
    whole = train_shard(sets, [1, 2, 3], data[1], N_CLASSES, cfg, device="cpu", progress=False)
    assert np.array_equal(kept, whole)


@pytest.mark.parametrize("kw", [{}, {"nesterov": False}, {"weight_decay": 0.0}, {"momentum": 0.0, "nesterov": False}])
def test_sgd_step_is_the_whole_group_update_bit_for_bit_per_run_of_models(kw):
    """The engine's SGD runs model by model (runs of consecutive active models with one learning rate,
    at most ``width`` of them, each run's stages back to back while its arrays are in the cache). It
    must be the whole group's update bit for bit, as the group computed it with ``torch.where`` over
    its stacks before: a model that is not active keeps its parameters and momentum exactly, every
    other gets its own learning rate."""
    from poisoncert.train import _sgd_step

    cfg = TrainConfig(**kw)
    g = torch.Generator().manual_seed(0)
    B = 7
    shapes = [(B, 10, 37), (B, 32, 1, 3, 3), (B, 10)]
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) * 1e-2 for s in shapes]
    bufs = [torch.randn(s, generator=g) * 1e-2 for s in shapes]
    active = np.array([True, True, False, True, True, True, False])
    lrs = np.array([0.05, 0.05, 0.05, 0.01, 0.01, 0.05, 0.01], np.float32)

    wd, mom = cfg.weight_decay, cfg.momentum
    ref_p, ref_m = [], []
    for p, gr, m in zip(params, grads, bufs):  # the whole group, as before
        a = torch.from_numpy(active).view((B,) + (1,) * (p.dim() - 1))
        lr = torch.from_numpy(lrs).view((B,) + (1,) * (p.dim() - 1))
        d = gr + p * wd if wd else gr
        m_new = m * mom + d
        step = d + m_new * mom if cfg.nesterov else m_new
        ref_p.append(torch.where(a, p - lr * step, p))
        ref_m.append(torch.where(a, m_new, m))
    for width in (1, 2, B):
        P, M = [p.clone() for p in params], [m.clone() for m in bufs]
        _sgd_step(P, [x.clone() for x in grads], M, active, lrs, cfg, width)
        for got, want in zip(P + M, ref_p + ref_m):
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (kw, width)
