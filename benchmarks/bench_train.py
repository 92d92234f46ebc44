"""Benchmark of the training engine (poisoncert.train).

Default (CPU, a few minutes on 2 cores), on scikit-learn's digits (8x8, uint8 0..255), split 80/20
with a seeded permutation, DPA partitions by (sum of uint8 pixels) mod k:

1. per k in --ks: the vectorised engine (train_shard, the whole k as one shard) with the default
   TrainConfig: wall time, mean base accuracy, ensemble (plurality vote) accuracy;
2. at --loop-k: the per-model reference loop (train_one) over the same models: speed-up and
   accuracy parity (mean base accuracy, argmax agreement);
3. the engine with other group sizes (1 = models one at a time through the same engine);
4. a micro-benchmark of one training step: grouped convolutions (the engine) vs
   torch.func.vmap(grad(functional_call)) over stacked parameters;
5. arithmetic efficiency: FLOPs of the training (conv + linear, fwd + bwd ~= 3 x fwd) per second,
   against a measured float32 matmul rate with the same thread count.

--paper-gpu: paper-scale timing (NiN, 200 epochs, 1200 partitions of ~50 MNIST-shaped images,
synthetic data) on CUDA; trains --paper-shards shards of --paper-shard-size models and
extrapolates to all partitions.

Prints a table and writes a CSV (default results/benchmarks/train.csv).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from poisoncert.models import build_model, training_flops_per_sample  # noqa: E402
from poisoncert.train import TrainConfig, runtime_fingerprint, train_one, train_shard  # noqa: E402


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_tr = int(round(0.8 * len(y)))
    tr, te = perm[:n_tr], perm[n_tr:]
    return X[tr], y[tr], X[te], y[te]


def dpa_partitions(X: np.ndarray, y: np.ndarray, k: int):
    h = X.reshape(len(X), -1).astype(np.int64).sum(1) % k
    return [(X[h == i], y[h == i]) for i in range(k)]


def ensemble_accuracy(logits: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    pred = logits.argmax(-1)  # (k, n)
    votes = np.stack([(pred == c).sum(0) for c in range(n_classes)])  # ties -> smaller class index
    return float((votes.argmax(0) == labels).mean())


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best / 1e9


def train_flops(sets, cfg: TrainConfig, shape, n_classes: int) -> tuple[float, float]:
    """(useful FLOPs: epochs * n_i samples, computed FLOPs: incl. padded rows of last minibatches)."""
    per = training_flops_per_sample(build_model(cfg.arch, *shape, n_classes), *shape)
    n = np.array([len(lb) for _, lb in sets])
    useful = cfg.epochs * n.sum() * per
    computed = cfg.epochs * (np.ceil(n / cfg.batch_size) * cfg.batch_size).sum() * per
    return float(useful), float(computed)


def step_microbench(cfg: TrainConfig, G: int, shape, n_classes: int, reps: int = 20):
    """Seconds per training step (fwd + bwd, G models x batch) for the grouped engine vs vmap."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    from poisoncert.models import BatchedContext, batched_forward

    torch.manual_seed(0)
    models = [build_model(cfg.arch, *shape, n_classes) for _ in range(G)]
    params, buffers = stack_module_state(models)
    b = cfg.batch_size
    C, H, W = shape
    x = torch.randn(G, b, C, H, W)
    y = torch.randint(0, n_classes, (G, b))
    y1h = torch.nn.functional.one_hot(y, n_classes).float()
    template = models[0]

    def loss_one(p, bf, xb, yb):
        out = functional_call(template, (p, bf), (xb,))
        return -(torch.log_softmax(out, -1) * yb).sum(-1).mean()

    vgrad = vmap(grad(loss_one), in_dims=(0, 0, 0, 0))

    state = {**params, **buffers}
    leaves = [state[k].requires_grad_(True) for k in params]
    mask = torch.ones(b, G)
    xcl = x.transpose(0, 1).reshape(b, G * C, H, W).contiguous(memory_format=torch.channels_last)

    def grouped():
        out = batched_forward(template, state, xcl, BatchedContext(G, mask))
        loss = (-(torch.log_softmax(out, -1) * y1h).sum(-1).mean(1)).sum()
        return torch.autograd.grad(loss, leaves)

    def vmapped():
        return vgrad({k: v.detach() for k, v in params.items()}, buffers, x, y1h)

    res = {}
    for name, fn in (("grouped", grouped), ("vmap", vmapped)):
        try:
            fn()
        except Exception as e:  # e.g. vmap over in-place BatchNorm running-stat updates
            print(f"microbench {cfg.arch} {name}: {type(e).__name__}: {str(e)[:100]}", file=sys.stderr)
            continue
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            best = min(best, (time.perf_counter() - t) / reps)
        res[name] = best
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/benchmarks/train.csv")
    ap.add_argument("--ks", default="10,25,50")
    ap.add_argument("--loop-k", type=int, default=50, help="k at which the per-model loop is timed (0 = skip)")
    ap.add_argument("--group-sizes", default="1,8,0", help="engine group sizes timed at --loop-k (0 = whole shard)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (TrainConfig.cpu_threads)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=None, help="override TrainConfig.epochs")
    ap.add_argument("--paper-gpu", action="store_true", help="paper-scale NiN timing on CUDA")
    ap.add_argument("--paper-partitions", type=int, default=1200)
    ap.add_argument("--paper-size", type=int, default=50, help="images per partition")
    ap.add_argument("--paper-epochs", type=int, default=200)
    ap.add_argument("--paper-shard-size", type=int, default=100)
    ap.add_argument("--paper-shards", type=int, default=1, help="shards actually trained (then extrapolated)")
    ap.add_argument("--paper-test", type=int, default=10000, help="test images (MNIST: 10000)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cfg = TrainConfig(cpu_threads=args.threads)
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    rows: list[dict] = []
    fp = runtime_fingerprint(cfg, args.device)
    common = {"device": fp["device"], "threads": threads, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    peak = matmul_gflops()
    print(f"# torch {torch.__version__}, {threads} threads, float32 matmul (1024^3): {peak:.1f} GFLOP/s, "
          f"load avg {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows.append({"bench": "matmul_1024", "gflops": round(peak, 2), **common})

    if args.paper_gpu:
        rows += paper_gpu(args, common)
    else:
        rows += digits(args, cfg, peak, common)

    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    try:
        from tabulate import tabulate

        print(tabulate([[r.get(k, "") for k in keys] for r in rows], headers=keys))
    except ImportError:  # pragma: no cover
        for r in rows:
            print(r)
    print(f"wrote {out}", file=sys.stderr)


def digits(args, cfg: TrainConfig, peak: float, common: dict) -> list[dict]:
    Xtr, ytr, Xte, yte = load_digits_split(0)
    shape, K = Xtr.shape[1:], 10
    rows = []
    ks = [int(k) for k in args.ks.split(",") if k]
    shard_logits = {}
    warm = dpa_partitions(Xtr, ytr, 8)  # warm-up: first calls JIT-compile oneDNN kernels
    train_shard(warm, list(range(8)), Xte[:10], K, dataclasses.replace(cfg, epochs=1), device=args.device, progress=False)
    train_one(warm[0], 0, Xte[:10], K, dataclasses.replace(cfg, epochs=1), device=args.device)
    for k in sorted(set(ks) | ({args.loop_k} if args.loop_k else set())):
        sets = dpa_partitions(Xtr, ytr, k)
        t, c = time.perf_counter(), time.process_time()
        L = train_shard(sets, list(range(k)), Xte, K, cfg, device=args.device, progress=False)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        shard_logits[k] = L
        useful, computed = train_flops(sets, cfg, shape, K)
        rows.append({"bench": "digits_dpa", "path": f"train_shard(group_size={cfg.group_size})", "k": k,
                     "arch": cfg.arch, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                     "mean_part_size": round(len(ytr) / k, 1), "seconds": round(dt, 3), "cpu_seconds": round(dc, 3),
                     "mean_base_acc": round(float((L.argmax(-1) == yte).mean()), 4),
                     "ensemble_acc": round(ensemble_accuracy(L, yte, K), 4),
                     "gflops": round(computed / dt / 1e9, 2), "pct_of_matmul": round(100 * computed / dt / 1e9 / peak, 1),
                     "useful_gflops": round(useful / dt / 1e9, 2), **common})
        print(f"k={k}: engine {dt:.2f}s", file=sys.stderr)
    if args.loop_k:
        k = args.loop_k
        sets = dpa_partitions(Xtr, ytr, k)
        useful, computed = train_flops(sets, cfg, shape, K)
        t, c = time.perf_counter(), time.process_time()
        L1 = np.stack([train_one(s, i, Xte, K, cfg, device=args.device) for i, s in enumerate(sets)])
        dt_loop, dc_loop = time.perf_counter() - t, time.process_time() - c
        L = shard_logits[k]
        r0 = next(r for r in rows if r.get("k") == k and r["bench"] == "digits_dpa")
        dt_shard, dc_shard = r0["seconds"], r0["cpu_seconds"]
        rows.append({"bench": "digits_dpa", "path": "train_one loop", "k": k, "arch": cfg.arch, "epochs": cfg.epochs,
                     "batch_size": cfg.batch_size, "lr": cfg.lr, "mean_part_size": round(len(ytr) / k, 1),
                     "seconds": round(dt_loop, 3), "cpu_seconds": round(dc_loop, 3),
                     "mean_base_acc": round(float((L1.argmax(-1) == yte).mean()), 4),
                     "ensemble_acc": round(ensemble_accuracy(L1, yte, K), 4),
                     "gflops": round(useful / dt_loop / 1e9, 2), "pct_of_matmul": round(100 * useful / dt_loop / 1e9 / peak, 1),
                     "useful_gflops": round(useful / dt_loop / 1e9, 2),
                     "speedup_of_engine": round(dt_loop / dt_shard, 2),
                     "cpu_speedup_of_engine": round(dc_loop / dc_shard, 2),
                     "argmax_agreement": round(float((L1.argmax(-1) == L.argmax(-1)).mean()), 4),
                     "max_abs_logit_diff": float(np.abs(L1 - L).max()), **common})
        print(f"k={k}: loop {dt_loop:.2f}s -> speed-up {dt_loop / dt_shard:.2f}x", file=sys.stderr)
        for g in [int(g) for g in args.group_sizes.split(",") if g]:
            gcfg = dataclasses.replace(cfg, group_size=g)
            if g == cfg.group_size:
                continue
            t, c = time.perf_counter(), time.process_time()
            Lg = train_shard(sets, list(range(k)), Xte, K, gcfg, device=args.device, progress=False)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            rows.append({"bench": "digits_dpa", "path": f"train_shard(group_size={g})", "k": k, "arch": cfg.arch,
                         "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                         "mean_part_size": round(len(ytr) / k, 1), "seconds": round(dt, 3),
                         "cpu_seconds": round(dc, 3),
                         "mean_base_acc": round(float((Lg.argmax(-1) == yte).mean()), 4),
                         "ensemble_acc": round(ensemble_accuracy(Lg, yte, K), 4),
                         "gflops": round(computed / dt / 1e9, 2),
                         "pct_of_matmul": round(100 * computed / dt / 1e9 / peak, 1),
                         "useful_gflops": round(useful / dt / 1e9, 2),
                         "speedup_of_engine": round(dt_loop / dt, 2),
                         "cpu_speedup_of_engine": round(dc_loop / dc, 2), **common})
            print(f"k={k}: group_size={g} {dt:.2f}s", file=sys.stderr)
        G = cfg.group_size or k
        for arch, reps in ((cfg.arch, 20), ("nin", 2)):
            acfg = dataclasses.replace(cfg, arch=arch)
            flops = G * cfg.batch_size * training_flops_per_sample(build_model(arch, *shape, K), *shape)
            for name, sec in step_microbench(acfg, G, shape, K, reps).items():
                rows.append({"bench": "train_step_fwd_bwd", "path": name, "arch": arch, "batch_size": cfg.batch_size,
                             "group_size": G, "seconds": round(sec, 6), "gflops": round(flops / sec / 1e9, 2),
                             "pct_of_matmul": round(100 * flops / sec / 1e9 / peak, 1), **common})
    return rows


def paper_gpu(args, common: dict) -> list[dict]:
    if args.device == "cpu" and torch.cuda.is_available():
        args.device = "cuda"
    cfg = TrainConfig(arch="nin", epochs=args.paper_epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                      nesterov=True, lr_milestones=(60, 120, 160), lr_gamma=0.2, crop_padding=2, hflip=False,
                      group_size=args.paper_shard_size, cpu_threads=args.threads)
    rng = np.random.default_rng(0)
    test = rng.integers(0, 256, (args.paper_test, 1, 28, 28)).astype(np.uint8)
    rows = []
    for s in range(args.paper_shards):
        sets = []
        for _ in range(args.paper_shard_size):
            n = int(rng.poisson(args.paper_size))
            sets.append((rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int64)))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_shard(sets, list(range(s * args.paper_shard_size, (s + 1) * args.paper_shard_size)), test, 10, cfg,
                    device=args.device, progress=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        n_shards = -(-args.paper_partitions // args.paper_shard_size)
        rows.append({"bench": "paper_nin_mnist_shape", "path": f"train_shard(group_size={cfg.group_size})",
                     "arch": "nin", "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                     "mean_part_size": args.paper_size, "shard_size": args.paper_shard_size, "seconds": round(dt, 2),
                     "extrapolated_seconds_all": round(dt * n_shards, 1), "partitions": args.paper_partitions,
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "", **common})
        print(f"paper shard {s}: {dt:.1f}s; all {args.paper_partitions} partitions ~{dt * n_shards:.0f}s",
              file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
