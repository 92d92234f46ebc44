"""One prepared GPU session (issue 12): determinism on the device, engine throughput, a paper-scale ensemble.

    python benchmarks/gpu_check.py            # on a machine with one CUDA GPU: under 8 minutes
    python benchmarks/gpu_check.py --cpu      # the same steps at toy size on the CPU (CI, rehearsal)

Everything measured goes to ``$OUT`` (when set, e.g. on the lent device machine) or
``results/benchmarks/gpu_check/``: ``checks.json`` (determinism), ``throughput.csv`` and
``ensemble.json``, plus ``summary.json`` with the environment. Steps:

1. determinism on the device: the same shard trained twice is bit-identical; a model's logits are
   bit-identical whatever its shard-mates' data and sizes (a neighbour relabelled and enlarged);
   agreement with the CPU engine (max |logit difference|, argmax agreement); ``device: cuda``
   without a visible GPU is still a one-line error;
2. throughput of the vectorised engine with NiN at 28x28x1 and 32x32x3, shards of 50 to 1,200
   models of 50 images (1 epoch each): training images per second, achieved TFLOP/s against the
   GPU's fp32 peak, peak GPU memory; the shard size where images/s stops growing;
   the same for the SS-DPA learners: the paper's NiN RotNet extractor and its NiN-block heads, and
   the SimCLR ResNet-18 extractor (tiny sizes: repeat bit-identical, one label flip changes one
   head only; ``ssdpa_checks.json``);
3. the execution strategies on the device (issue 25): NiN at 28x28x1 and 32x32x3, a shard of
   ``--strategy-models`` models of 50 images (1 epoch at the papers' batch 128, plus 1,000 test
   images): the engine ``grouped`` at several group sizes, the engine ``dense`` (each model alone),
   and the plain loop a user would write (one ``nn.Module``, ``torch.optim.SGD``, channels_last,
   evaluation at batch 128); wall seconds with the device synchronised, the fastest strategy per
   shape (``strategies.json``: what ``STRATEGY_TABLE`` should say for cuda);
4. a DPA k=1200 NiN ensemble on Fashion-MNIST (60,000 / 10,000, real files when present) for
   ``--epochs`` epochs, extrapolated to the papers' 200 epochs, beside the DPA paper's 0.28
   GPU-minutes per partition (336 GPU-minutes for k=1200).

Stops adding throughput points when the time budget (``--budget-s``) runs low.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from poisoncert.models import build_model, training_flops_per_sample  # noqa: E402
from poisoncert.train import TrainConfig, runtime_fingerprint, train_one, train_shard  # noqa: E402

#: fp32 (non-tensor-core) peak of GPUs this may run on, TFLOP/s (vendor data sheets).
FP32_PEAK_TFLOPS = {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L40S": 91.6, "V100": 15.7, "A10": 31.2, "T4": 8.1}

PAPER_GPU_MIN_PER_PARTITION = 0.28  # DPA Table 1, MNIST, NiN


def nin_config(epochs: int) -> TrainConfig:
    """The papers' NiN training (Gidaris et al. 2018 via DPA/FA): SGD 0.1, Nesterov, wd 5e-4, batch 128."""
    return TrainConfig(arch="nin", epochs=epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                       lr_milestones=(60, 120, 160), lr_gamma=0.2, crop_padding=2, group_size=0)


def synthetic_sets(n_models: int, size: int, shape, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (size,) + shape, dtype=np.uint8), rng.integers(0, 10, size)) for _ in range(n_models)]


def peak_for(device_name: str) -> float | None:
    return next((v for k, v in FP32_PEAK_TFLOPS.items() if k in device_name), None)


def check_determinism(device: str, toy: bool) -> dict:
    shape = (1, 28, 28)
    cfg = TrainConfig(arch="nin", epochs=1 if toy else 2, batch_size=16, crop_padding=2, group_size=4)
    sets = synthetic_sets(4, 16 if toy else 50, shape)
    test = np.random.default_rng(1).integers(0, 256, (32 if toy else 500,) + shape, dtype=np.uint8)
    a = train_shard(sets, [0, 1, 2, 3], test, 10, cfg, device=device, progress=False)
    b = train_shard(sets, [0, 1, 2, 3], test, 10, cfg, device=device, progress=False)
    poisoned = list(sets)
    x, y = sets[1]
    poisoned[1] = (np.concatenate([x, x[:10]]), (np.concatenate([y, y[:10]]) + 1) % 10)  # relabelled and enlarged
    c = train_shard(poisoned, [0, 1, 2, 3], test, 10, cfg, device=device, progress=False)
    if device == "cpu":  # the reference: each model alone through the plain loop
        ref = np.stack([train_one(s, i, test, 10, cfg, device="cpu") for i, s in enumerate(sets)])
        against = "train_one (per-model loop, CPU)"
    else:
        ref = train_shard(sets, [0, 1, 2, 3], test, 10, cfg, device="cpu", progress=False)
        against = "the CPU engine"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "workflow")}
    proc = subprocess.run([sys.executable, "-c", "import sys; from poisoncert.train import resolve_device\n"
                           "from poisoncert.errors import PoisonCertError\n"
                           "try: resolve_device('cuda')\nexcept PoisonCertError as e: print(f'poisoncert: error: {e}', file=sys.stderr); sys.exit(2)"],
                          capture_output=True, text=True, env=env, timeout=120)
    err = proc.stderr.strip().splitlines()
    return {
        "device": device,
        "repeat_bit_identical": bool(np.array_equal(a, b)),
        "shard_invariant_bit_identical": bool(np.array_equal(a[[0, 2, 3]], c[[0, 2, 3]])),
        "neighbour_changed": bool(not np.array_equal(a[1], c[1])),
        "agreement_against": against,
        "max_abs_logit_diff": float(np.abs(a - ref).max()),
        "argmax_agreement": float((a.argmax(-1) == ref.argmax(-1)).mean()),
        "cuda_without_gpu_one_line": proc.returncode == 2 and len(err) == 1 and err[0].startswith("poisoncert: error:"),
        "cuda_without_gpu_message": err[-1] if err else "",
    }


def check_ssdpa_determinism(device: str, toy: bool) -> dict:
    """SS-DPA on the device: the NiN RotNet and SimCLR extractors trained twice give bit-identical
    features; NiN-block heads are bit-identical on repeat and a label flip in one partition changes
    that head only (the threat model's unit: one flip reaches one base model)."""
    from poisoncert.learners.extractors import ExtractorConfig, extract_features, train_extractor
    from poisoncert.learners.heads import HeadConfig, train_base_heads

    rng = np.random.default_rng(2)
    out: dict = {"device": device}
    for name, shape, cfg in (
        ("rotnet_nin", (1, 28, 28), ExtractorConfig(arch="nin", width=16 if toy else 96, epochs=1, batch_size=32)),
        ("simclr_resnet18", (3, 32, 32), ExtractorConfig(arch="resnet18", epochs=1, batch_size=32, lr_schedule="cosine", crop_pad=0)),
    ):
        images = rng.integers(0, 256, (64 if toy else 512,) + shape, dtype=np.uint8)
        a = train_extractor(images, cfg, device=device)
        b = train_extractor(images, cfg, device=device)
        fa, fb = extract_features(a, images[:32], device=device), extract_features(b, images[:32], device=device)
        out[f"{name}_repeat_bit_identical"] = bool(np.array_equal(fa, fb))
        if name == "rotnet_nin":
            labels = rng.integers(0, 10, len(images))
            members = [np.arange(i, len(images), 4) for i in range(4)]
            head = HeadConfig.from_dict({"kind": "nin_block", "nin_block": {"epochs": 2, "batch_size": 16, "width": 16 if toy else 192}})
            h1 = train_base_heads(a, images, labels, members, [0, 1, 2, 3], images[:32], 10, head, device=device)
            h2 = train_base_heads(a, images, labels, members, [0, 1, 2, 3], images[:32], 10, head, device=device)
            flipped = labels.copy()
            flipped[members[1][0]] = (flipped[members[1][0]] + 1) % 10
            h3 = train_base_heads(a, images, flipped, members, [0, 1, 2, 3], images[:32], 10, head, device=device)
            out["nin_block_heads_repeat_bit_identical"] = bool(np.array_equal(h1, h2))
            out["nin_block_flip_changes_only_its_head"] = bool(np.array_equal(h1[[0, 2, 3]], h3[[0, 2, 3]]) and not np.array_equal(h1[1], h3[1]))
    return out


def throughput(device: str, toy: bool, deadline: float) -> list[dict]:
    rows = []
    sizes = [2, 4] if toy else [50, 100, 200, 400, 800, 1200]
    per_model = 20 if toy else 50
    for shape in ((1, 28, 28), (3, 32, 32)):
        trn = training_flops_per_sample(build_model("nin", shape[0], shape[1], shape[2], 10), *shape)
        best = 0.0
        for B in sizes:
            if time.time() > deadline:
                rows.append({"shape": "x".join(map(str, shape)), "models": B, "skipped": "time budget"})
                continue
            sets = synthetic_sets(B, per_model, shape)
            test = np.zeros((8,) + shape, np.uint8)
            cfg = nin_config(1)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            t = time.perf_counter()
            train_shard(sets, list(range(B)), test, 10, cfg, device=device, progress=False)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            images = per_model * B
            tflops = trn * images / dt / 1e12
            name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
            peak = peak_for(name)
            rows.append({
                "shape": "x".join(map(str, shape)), "models": B, "seconds": round(dt, 3), "train_images_per_s": round(images / dt, 1),
                "tflops": round(tflops, 3), "fraction_of_fp32_peak": round(tflops / peak, 4) if peak else None,
                "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
                "saturated": bool(best and images / dt < 1.1 * best),
            })
            best = max(best, images / dt)
            print(rows[-1], flush=True)
    return rows


def plain_loop(sets, seeds, test, cfg: TrainConfig, device: str) -> None:
    """The papers' way: one nn.Module per partition, torch.optim.SGD, channels_last, evaluation at batch 128."""
    import torch.nn.functional as F

    from poisoncert.train import channel_stats

    shape = tuple(test.shape[1:])
    if device == "cpu":  # as the engine: one thread (two on two busy cores can run many times slower)
        torch.set_num_threads(cfg.cpu_threads or 1)
    xt_u8 = torch.from_numpy(test).to(device)
    for (images, labels), seed in zip(sets, seeds):
        torch.manual_seed(seed)
        model = build_model(cfg.arch, *shape, 10).to(device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        m, s = channel_stats(images)
        mean = torch.tensor(m, dtype=torch.float32, device=device).view(-1, 1, 1)
        std = torch.tensor(s, dtype=torch.float32, device=device).view(-1, 1, 1)
        x = ((torch.from_numpy(images).to(device).float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(y), generator=gen).to(device)
            for i in range(0, len(y), cfg.batch_size):
                b = perm[i: i + cfg.batch_size]
                loss = F.cross_entropy(model(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(xt_u8), 128):
                model(((xt_u8[i: i + 128].float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last))


def strategies(device: str, toy: bool, n_models: int, deadline: float) -> dict:
    """Grouped (several group sizes) vs dense vs the plain loop for NiN on ``device``; the fastest per shape."""
    import dataclasses

    from poisoncert.train import STRATEGY_TABLE

    rows = []
    groups = [2] if toy else [4, 8, 16, 32]
    B = 2 if toy else n_models
    per_model, n_test = (8, 16) if toy else (50, 1000)

    def timed(fn):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for shape in ((1, 28, 28), (3, 32, 32)):
        sets = synthetic_sets(B, per_model, shape, seed=3)
        test = np.random.default_rng(4).integers(0, 256, (n_test,) + shape, dtype=np.uint8)
        base = dataclasses.replace(nin_config(1), crop_padding=0)
        candidates = [(f"grouped_g{g}", dataclasses.replace(base, strategy="grouped", group_size=g)) for g in groups]
        candidates += [(f"stacked_g{g}", dataclasses.replace(base, strategy="stacked", group_size=g)) for g in groups]
        candidates += [("dense", dataclasses.replace(base, strategy="dense", group_size=8)), ("plain_loop", base)]
        for name, cfg in candidates:
            if time.time() > deadline:
                rows.append({"shape": "x".join(map(str, shape)), "strategy": name, "skipped": "time budget"})
                continue
            if name == "plain_loop":
                fn = lambda: plain_loop(sets, list(range(B)), test, cfg, device)  # noqa: E731
            else:
                fn = lambda: train_shard(sets, list(range(B)), test, 10, cfg, device=device, progress=False)  # noqa: E731
            fn() if not toy else None  # warm-up (kernel selection, allocator)
            dt = timed(fn)
            rows.append({"shape": "x".join(map(str, shape)), "strategy": name, "models": B, "seconds": round(dt, 4),
                         "models_per_s": round(B / dt, 2),
                         "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None})
            print(rows[-1], flush=True)
    best = {}
    for shape in {r["shape"] for r in rows}:
        timed_rows = [r for r in rows if r["shape"] == shape and "seconds" in r and r["strategy"] != "plain_loop"]
        if timed_rows:
            b = min(timed_rows, key=lambda r: r["seconds"])
            loop = next((r["seconds"] for r in rows if r["shape"] == shape and r["strategy"] == "plain_loop" and "seconds" in r), None)
            best[shape] = {"fastest": b["strategy"], "seconds": b["seconds"], "speedup_vs_plain_loop": round(loop / b["seconds"], 2) if loop else None}
    kind = "cuda" if device == "cuda" else "cpu"
    return {"device": device, "rows": rows, "fastest": best, "current_table_nin": STRATEGY_TABLE.get(("nin", kind), "grouped")}


def ensemble(device: str, toy: bool, epochs: int) -> dict:
    from poisoncert.data import FASHION_MNIST_DEBIAN, load_dataset
    from poisoncert.partition import make_partitions

    if FASHION_MNIST_DEBIAN.is_dir():
        ds = load_dataset("fashion_mnist")
        xtr, ytr, xte, yte, source = ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, "fashion_mnist"
    else:
        rng = np.random.default_rng(0)
        xtr, ytr = rng.integers(0, 256, (60000, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 60000)
        xte, yte = rng.integers(0, 256, (10000, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10000)
        source = "synthetic fashion_mnist-sized"
    k = 1200
    parts = make_partitions(xtr, ytr, "dpa", k)
    n_models = 2 if toy else k
    n_test = 50 if toy else len(xte)
    sets = [(xtr[parts.members(m)], ytr[parts.members(m)]) for m in range(n_models)]
    cfg = nin_config(epochs)
    t = time.perf_counter()
    train_shard(sets, list(range(n_models)), xte[:8], 10, cfg, device=device, progress=False)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    logits = train_shard(sets, list(range(n_models)), xte[:n_test], 10, cfg, device=device, progress=False)
    t_eval = max(time.perf_counter() - t - t_train, 0.0)
    scale = k / n_models
    minutes_200 = (t_train / epochs * 200 + t_eval * len(xte) / n_test) * scale / 60
    return {
        "data": source, "k": k, "models_timed": n_models, "epochs_timed": epochs, "train_s": round(t_train, 2), "eval_s": round(t_eval, 2),
        "extrapolated_k1200_200_epochs_gpu_minutes": round(minutes_200, 2),
        "paper_gpu_minutes": PAPER_GPU_MIN_PER_PARTITION * k, "speedup_vs_paper": round(PAPER_GPU_MIN_PER_PARTITION * k / minutes_200, 1),
        "target_minutes": 15.0, "mean_base_accuracy_after_timed_epochs": round(float((logits.argmax(-1) == yte[None, :n_test]).mean()), 4),
        "runtime": runtime_fingerprint(cfg, device),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="the same steps at toy size on the CPU")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the timed k=1200 ensemble")
    ap.add_argument("--budget-s", type=float, default=420, help="stop adding throughput points after this many seconds")
    ap.add_argument("--strategy-models", type=int, default=32, help="models per shard in the strategy comparison")
    args = ap.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU is visible; run with --cpu for the toy-size rehearsal")
    out = Path(os.environ.get("OUT") or ROOT / "results" / "benchmarks" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
               "cuda": torch.version.cuda, "toy": args.cpu, "fp32_peak_tflops": peak_for(torch.cuda.get_device_name(0)) if device == "cuda" else None}
    checks = check_determinism(device, args.cpu)
    (out / "checks.json").write_text(json.dumps(checks, indent=1))
    print(json.dumps(checks, indent=1), flush=True)
    ssdpa = check_ssdpa_determinism(device, args.cpu)
    (out / "ssdpa_checks.json").write_text(json.dumps(ssdpa, indent=1))
    print(json.dumps(ssdpa, indent=1), flush=True)
    rows = throughput(device, args.cpu, start + args.budget_s * 0.5)
    with open(out / "throughput.csv", "w", newline="") as fh:
        keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    strat = strategies(device, args.cpu, args.strategy_models, start + args.budget_s * 0.8)
    (out / "strategies.json").write_text(json.dumps(strat, indent=1))
    print(json.dumps(strat["fastest"], indent=1), flush=True)
    ens = ensemble(device, args.cpu, 1 if args.cpu else args.epochs)
    (out / "ensemble.json").write_text(json.dumps(ens, indent=1))
    print(json.dumps(ens, indent=1), flush=True)
    summary["seconds"] = round(time.time() - start, 1)
    summary["all_checks_pass"] = all(checks[k] for k in ("repeat_bit_identical", "shard_invariant_bit_identical", "neighbour_changed", "cuda_without_gpu_one_line")) \
        and all(v for k, v in ssdpa.items() if k != "device")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"gpu_check: wrote {out} in {summary['seconds']} s; determinism checks {'pass' if summary['all_checks_pass'] else 'FAIL'}")
    sys.exit(0 if summary["all_checks_pass"] else 1)


if __name__ == "__main__":
    main()
