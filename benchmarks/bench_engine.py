"""The training engine against the hardware: achieved FLOP rate as a fraction of this CPU's own matmul rate.

On real Fashion-MNIST (28x28, Debian's dataset-fashion-mnist; synthetic 28x28 data if absent), DPA
partitions of k = 1200 (about 50 images each), for small_cnn and lenet and shards of --shards
models:

1. the CPU's fp32 matmul rate (2048^3 torch.mm, the same thread count);
2. training alone (the test set cut to 8 images) and test-set evaluation alone (the difference
   with a run on --n-test test images), each as achieved GFLOP/s and as a fraction of (1);
3. the whole DPA k=1200 ensemble (train + evaluate 10,000 test images), extrapolated from the
   measured shards, at the engine's default ``eval_batch_size`` (8) and at the former default
   (1000): the before/after of issue 11.

FLOPs are the multiply-adds of convs and linears (models.forward_flops_per_sample), training =
3x forward. Prints a table and writes results/benchmarks/engine.csv. Never asserted in tests.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from poisoncert.models import build_model, forward_flops_per_sample  # noqa: E402
from poisoncert.partition import make_partitions  # noqa: E402
from poisoncert.train import TrainConfig, train_shard  # noqa: E402


def matmul_rate(threads: int, n: int = 2048, reps: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def data():
    from poisoncert.data import FASHION_MNIST_DEBIAN, load_dataset

    if FASHION_MNIST_DEBIAN.is_dir():
        ds = load_dataset("fashion_mnist")
        return ds.train_images, ds.train_labels, ds.test_images, "fashion_mnist"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (60000, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 60000), rng.integers(0, 256, (10000, 1, 28, 28), dtype=np.uint8),
            "synthetic 28x28")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="small_cnn,lenet")
    ap.add_argument("--shards", default="50,200", help="shard sizes (models trained together)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n-test", type=int, default=2000, help="test images for the evaluation timing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=1200)
    ap.add_argument("--out", default="results/benchmarks/engine.csv")
    args = ap.parse_args()

    peak = matmul_rate(args.threads)
    xtr, ytr, xte, source = data()
    parts = make_partitions(xtr, ytr, "dpa", args.k)
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, {args.threads} thread(s); "
          f"fp32 matmul {peak:.1f} GFLOP/s; data: {source}, DPA k={args.k} (mean {parts.sizes().mean():.1f} images per model)")
    rows = []
    for arch in args.archs.split(","):
        fwd = forward_flops_per_sample(build_model(arch, 1, 28, 28, 10), 1, 28, 28)
        for B in (int(s) for s in args.shards.split(",")):
            sets = [(xtr[parts.members(m)], ytr[parts.members(m)]) for m in range(B)]
            n_images = int(sum(len(y) for _, y in sets))
            for eb in (8, 1000):
                cfg = TrainConfig(arch=arch, epochs=args.epochs, cpu_threads=args.threads, eval_batch_size=eb)
                torch.set_num_threads(args.threads)
                t0 = time.perf_counter()
                train_shard(sets, list(range(B)), xte[:8], 10, cfg, progress=False)
                t_train = time.perf_counter() - t0
                t0 = time.perf_counter()
                train_shard(sets, list(range(B)), xte[: args.n_test], 10, cfg, progress=False)
                t_eval = max(time.perf_counter() - t0 - t_train, 1e-9)
                train_rate = 3 * fwd * n_images * args.epochs / t_train / 1e9
                eval_rate = fwd * B * args.n_test / t_eval / 1e9
                per_model = t_train / B + t_eval / B * (len(xte) / args.n_test)
                row = {
                    "arch": arch, "shard_models": B, "eval_batch_size": eb, "epochs": args.epochs, "threads": args.threads,
                    "matmul_gflops": round(peak, 1), "train_gflops": round(train_rate, 2), "train_fraction": round(train_rate / peak, 3),
                    "eval_gflops": round(eval_rate, 2), "eval_fraction": round(eval_rate / peak, 3),
                    f"k{args.k}_ensemble_s": round(per_model * args.k, 1), "data": source,
                }
                rows.append(row)
                print(f"{arch:9s} B={B:4d} eval_batch_size={eb:5d}: train {train_rate:6.2f} GFLOP/s ({train_rate / peak:5.1%}), "
                      f"eval {eval_rate:6.2f} GFLOP/s ({eval_rate / peak:5.1%}); DPA k={args.k} ensemble (train + 10,000 tests) "
                      f"{per_model * args.k / 60:.1f} min on {args.threads} thread(s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
