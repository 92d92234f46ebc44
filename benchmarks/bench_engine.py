"""The training engine against the plain loop a user would write, torch.func, and the hardware.

    python benchmarks/bench_engine.py            # the default: a few minutes on 1 thread
    python benchmarks/bench_engine.py --quick    # seconds (a test runs it, so it cannot rot)

Everything runs in ONE process on ``--threads`` (default 1) CPU thread(s). Every method is timed
by the CPU time of the process (``time.process_time``) and by wall time, over ``--repeats``
interleaved repeats (engine, loop, func, engine, loop, func, ...); the table gives the minimum and
the median. The minimum of the CPU time is the number to compare on a shared machine: other
processes' load inflates wall time and, through caches and memory bandwidth, CPU time too, never
the other way round.

Workloads (training and test-set evaluation timed separately, same models, same SGD settings):

* ``small_cnn``, ``lenet``, ``nin`` at 28x28x1 on Fashion-MNIST (Debian's dataset-fashion-mnist,
  ``make data``; synthetic 28x28 data when absent), DPA partitions of k = 1200 (about 50 images
  each, the first models of the partition);
* ``nin`` and ``resnet18`` at 32x32x3 (synthetic CIFAR-sized sets of 50 images).

Methods:

* ``engine``: :func:`poisoncert.train.train_shard`'s group training and evaluation (the
  strategy the engine picks for the arch and device, :func:`poisoncert.train.resolve_strategy`);
* ``loop``: the papers' way, a plain loop a user would write: one ``nn.Module`` per partition
  (the same initial weights), ``channels_last``, ``torch.optim.SGD`` with the same lr, momentum,
  weight decay and Nesterov, minibatches of ``batch_size`` (the last one smaller), cross-entropy;
  evaluation in ``eval()`` mode at batch 128 under ``torch.no_grad``;
* ``func``: ``torch.func``: the models' parameters stacked (``stack_module_state``),
  ``vmap(grad(functional_call))`` per step, ``torch.optim.SGD`` on the stacked tensors, evaluation
  ``vmap(functional_call)`` at batch 128 (BatchNorm without running statistics: vmap cannot update
  them in place, so its evaluation uses batch statistics; the work is the same);
* ``engine@<commit>``: the engine of another revision (imported from ``git archive``, :func:`engine_at`)
  on the same workloads in the same rounds: an A/B of a change, e.g.
  ``--archs small_cnn --methods engine,engine@cb9dc3f --repeats 9``; its speed-up column is how much
  faster this revision is.

Ceilings: the fp32 matmul rate (``torch.mm`` of 1024x1024, same threads) and each arch's own dense
rate (one model, batch 128, forward + backward), in GFLOP/s. FLOPs are the multiply-adds of convs
and linears (2 per MAC): evaluation = forward, training = forward + weight gradients + input
gradients of every layer but the first (:func:`poisoncert.models.training_flops_per_sample`).

``--ensemble``: the whole DPA k = 1200 small_cnn ensemble on Fashion-MNIST as the workflow trains it
(config/fashion_mnist.yaml: 10 epochs, shards of 50, 10,000 test images), from the CPU time on
``--ensemble-models`` models (one shard) extrapolated to 1,200: the engine as it trains now
(``strategy: auto``), this engine's ``grouped`` strategy (the bits the engine had before the
strategies existed, with this revision's bit-identical speed-ups), the engine as it was when the
engine issue was filed (``--filed-at``, default commit 7c45021, imported from ``git archive`` into
this process) and the plain loop, interleaved over ``--ensemble-repeats`` rounds.

Writes ``results/benchmarks/engine/engine.json`` and ``engine.md`` (``--out``). Never asserted in
timed tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from poisoncert import train as engine  # noqa: E402
from poisoncert.models import build_model, forward_flops_per_sample, training_flops_per_sample  # noqa: E402
from poisoncert.train import TrainConfig  # noqa: E402

N_CLASSES = 10


# ------------------------------------------------------------------------------------------ data


def fashion_mnist():
    from poisoncert.data import FASHION_MNIST_DEBIAN, load_dataset

    if FASHION_MNIST_DEBIAN.is_dir():
        ds = load_dataset("fashion_mnist")
        return ds.train_images, ds.train_labels, ds.test_images, "Fashion-MNIST (Debian)"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (60000, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 60000),
            rng.integers(0, 256, (10000, 1, 28, 28), dtype=np.uint8), "synthetic 28x28")


def dpa_sets(n_models: int, k: int = 1200):
    from poisoncert.partition import make_partitions

    xtr, ytr, xte, source = fashion_mnist()
    parts = make_partitions(xtr, ytr, "dpa", k)
    return [(xtr[parts.members(m)], ytr[parts.members(m)]) for m in range(n_models)], xte, source


def synthetic_sets(n_models: int, size: int, shape, n_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sets = [(rng.integers(0, 256, (size,) + shape, dtype=np.uint8), rng.integers(0, N_CLASSES, size)) for _ in range(n_models)]
    return sets, rng.integers(0, 256, (n_test,) + shape, dtype=np.uint8)


# ------------------------------------------------------------------------------------------ methods


def run_engine(sets, seeds, test, cfg: TrainConfig, eng=None):
    """train_shard's work, training and evaluation timed apart: returns (train (cpu, wall), eval (cpu, wall)).
    ``eng``: another revision's ``poisoncert.train`` (:func:`engine_at`; its own TrainConfig with
    ``cfg``'s values), else this one."""
    if eng is not None:
        cfg = eng.TrainConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(eng.TrainConfig) if hasattr(cfg, f.name)})
    engine = eng or globals()["engine"]
    test_t = torch.from_numpy(np.ascontiguousarray(test))
    shape = tuple(test.shape[1:])
    dev = torch.device("cpu")
    sets = [(np.asarray(im), np.asarray(lb, np.int64)) for im, lb in sets]
    G = cfg.group_size or len(sets)
    blank = (np.zeros((0,) + shape, np.uint8), np.zeros(0, np.int64))
    tr = ev = (0.0, 0.0)
    strategy = engine.resolve_strategy(cfg, dev)
    with engine.deterministic_mode(cfg):
        for g0 in range(0, len(sets), G):
            gs = sets[g0: g0 + G]
            gd = list(seeds[g0: g0 + G])
            n_real = len(gs)
            gs, gd = gs + [blank] * (G - len(gs)), gd + [0] * (G - len(gd))
            c0, w0 = time.process_time(), time.perf_counter()
            fitted = engine._fit(gs, gd, shape, N_CLASSES, cfg, dev, strategy)
            c1, w1 = time.process_time(), time.perf_counter()
            engine._evaluate(fitted, test_t, cfg, dev, strategy, n_real)
            c2, w2 = time.process_time(), time.perf_counter()
            tr = (tr[0] + c1 - c0, tr[1] + w1 - w0)
            ev = (ev[0] + c2 - c1, ev[1] + w2 - w1)
    return tr, ev


def _normalized(images, mean, std):
    return ((torch.from_numpy(images).float() / 255.0 - torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
            / torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))


def run_loop(sets, seeds, test, cfg: TrainConfig):
    """The plain per-model loop (one nn.Module, torch.optim.SGD, channels_last, eval at batch 128)."""
    shape = tuple(test.shape[1:])
    tr = ev = (0.0, 0.0)
    torch.set_num_threads(cfg.cpu_threads or torch.get_num_threads())
    for (images, labels), seed in zip(sets, seeds):
        c0, w0 = time.process_time(), time.perf_counter()
        torch.manual_seed(seed)
        model = build_model(cfg.arch, *shape, N_CLASSES).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              nesterov=cfg.nesterov)
        mean, std = engine.channel_stats(images)
        x = _normalized(images, mean, std).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(np.asarray(labels, np.int64))
        rng = np.random.default_rng(seed)
        model.train()
        for _ in range(cfg.epochs):
            perm = torch.from_numpy(rng.permutation(len(y)))
            for s in range(0, len(y), cfg.batch_size):
                b = perm[s: s + cfg.batch_size]
                loss = F.cross_entropy(model(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        c1, w1 = time.process_time(), time.perf_counter()
        model.eval()
        xt = _normalized(test, mean, std).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            for s in range(0, len(xt), 128):
                model(xt[s: s + 128])
        c2, w2 = time.process_time(), time.perf_counter()
        tr = (tr[0] + c1 - c0, tr[1] + w1 - w0)
        ev = (ev[0] + c2 - c1, ev[1] + w2 - w1)
    return tr, ev


def run_func(sets, seeds, test, cfg: TrainConfig):
    """torch.func over the stacked models of a group: vmap(grad(functional_call)), SGD on the stacks."""
    from torch.func import functional_call, grad, replace_all_batch_norm_modules_, stack_module_state, vmap

    shape = tuple(test.shape[1:])
    G = cfg.group_size or len(sets)
    tr = ev = (0.0, 0.0)
    torch.set_num_threads(cfg.cpu_threads or torch.get_num_threads())
    for g0 in range(0, len(sets), G):
        gsets, gseeds = sets[g0: g0 + G], seeds[g0: g0 + G]
        c0, w0 = time.process_time(), time.perf_counter()
        models = []
        for s in gseeds:
            torch.manual_seed(s)
            models.append(replace_all_batch_norm_modules_(build_model(cfg.arch, *shape, N_CLASSES)))
        params, buffers = stack_module_state(models)
        base = models[0]

        def loss_fn(p, b, x, y):
            return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

        step_grad = vmap(grad(loss_fn))
        leaves = list(params.values())
        opt = torch.optim.SGD(leaves, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        stats = [engine.channel_stats(im) for im, _ in gsets]
        xs = [_normalized(im, m, s) for (im, _), (m, s) in zip(gsets, stats)]
        ys = [torch.from_numpy(np.asarray(lb, np.int64)) for _, lb in gsets]
        rngs = [np.random.default_rng(s) for s in gseeds]
        n_max = max(len(y) for y in ys)
        for _ in range(cfg.epochs):
            perms = [np.resize(r.permutation(len(y)), n_max) for r, y in zip(rngs, ys)]  # same step count for all
            for s in range(0, n_max, cfg.batch_size):
                xb = torch.stack([x[torch.from_numpy(p[s: s + cfg.batch_size])] for x, p in zip(xs, perms)])
                yb = torch.stack([y[torch.from_numpy(p[s: s + cfg.batch_size])] for y, p in zip(ys, perms)])
                grads = step_grad(params, buffers, xb, yb)
                for leaf, name in zip(leaves, params):
                    leaf.grad = grads[name]
                opt.step()
        c1, w1 = time.process_time(), time.perf_counter()
        xt = torch.stack([_normalized(test, m, s) for m, s in stats])
        fwd = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))
        with torch.no_grad():
            for s in range(0, xt.shape[1], 128):
                fwd(params, buffers, xt[:, s: s + 128])
        c2, w2 = time.process_time(), time.perf_counter()
        tr = (tr[0] + c1 - c0, tr[1] + w1 - w0)
        ev = (ev[0] + c2 - c1, ev[1] + w2 - w1)
    return tr, ev


METHODS = {"engine": run_engine, "loop": run_loop, "func": run_func}


# ------------------------------------------------------------------------------------------ ceilings


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(3):
        c0 = time.process_time()
        for _ in range(reps):
            torch.mm(a, b)
        best = min(best, (time.process_time() - c0) / reps)
    return 2 * n**3 / best / 1e9


def dense_gflops(arch: str, shape, batch: int = 128, reps: int = 3) -> tuple[float, float]:
    """One model's own dense rate at batch ``batch``: (forward GFLOP/s, forward + backward GFLOP/s)."""
    torch.manual_seed(0)
    model = build_model(arch, *shape, N_CLASSES).to(memory_format=torch.channels_last)
    x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, N_CLASSES, (batch,))
    fwd = forward_flops_per_sample(model, *shape) * batch
    trn = training_flops_per_sample(model, *shape) * batch
    best_f = best_t = math.inf
    for _ in range(reps):
        with torch.no_grad():
            c0 = time.process_time()
            model(x)
            best_f = min(best_f, time.process_time() - c0)
        c0 = time.process_time()
        F.cross_entropy(model(x), y).backward()
        best_t = min(best_t, time.process_time() - c0)
        model.zero_grad(set_to_none=True)
    return fwd / best_f / 1e9, trn / best_t / 1e9


# ------------------------------------------------------------------------------------------ main


@dataclasses.dataclass
class Workload:
    arch: str
    shape: tuple
    n_models: int
    epochs: int
    n_test: int
    data: str  # "fmnist" or "synthetic"
    batch_size: int = 16
    size: int = 50  # images per synthetic set
    group_size: int = 8


def workloads(quick: bool) -> list[Workload]:
    if quick:
        return [Workload("small_cnn", (1, 28, 28), 2, 1, 16, "fmnist", group_size=2), Workload("lenet", (1, 28, 28), 2, 1, 16, "fmnist", group_size=2),
                Workload("nin", (1, 28, 28), 2, 1, 4, "synthetic", size=8, group_size=2),
                Workload("nin", (3, 32, 32), 2, 1, 4, "synthetic", size=8, group_size=2),
                Workload("resnet18", (3, 32, 32), 1, 1, 2, "synthetic", size=4, group_size=1)]
    return [Workload("small_cnn", (1, 28, 28), 16, 3, 1000, "fmnist"), Workload("lenet", (1, 28, 28), 16, 3, 1000, "fmnist"),
            Workload("nin", (1, 28, 28), 8, 1, 200, "fmnist"), Workload("nin", (3, 32, 32), 8, 1, 200, "synthetic"),
            Workload("resnet18", (3, 32, 32), 4, 1, 100, "synthetic")]


def stats(xs):
    return {"min": min(xs), "median": statistics.median(xs)}


def measure(w: Workload, repeats: int, threads: int, methods: list[str], fm, strategy: str = "auto", runners=None):
    cfg = TrainConfig(arch=w.arch, epochs=w.epochs, batch_size=w.batch_size, cpu_threads=threads, group_size=w.group_size,
                      strategy=strategy)
    if w.data == "fmnist":
        sets, xte = [s for s in fm[0][: w.n_models]], fm[1][: w.n_test]
    else:
        sets, xte = synthetic_sets(w.n_models, w.size, w.shape, w.n_test)
    seeds = list(range(w.n_models))
    times = {m: {"train_cpu": [], "train_wall": [], "eval_cpu": [], "eval_wall": []} for m in methods}
    for _ in range(repeats):  # interleaved: every method once per round
        for m in methods:
            torch.set_num_threads(threads)
            (tc, tw), (ec, ew) = (runners or METHODS)[m](sets, seeds, xte, cfg)
            for key, v in (("train_cpu", tc), ("train_wall", tw), ("eval_cpu", ec), ("eval_wall", ew)):
                times[m][key].append(v)
    model = build_model(w.arch, *w.shape, N_CLASSES)
    n_images = sum(len(lb) for _, lb in sets)
    train_flops = training_flops_per_sample(model, *w.shape) * n_images * w.epochs
    eval_flops = forward_flops_per_sample(model, *w.shape) * w.n_test * w.n_models
    res = {"arch": w.arch, "shape": list(w.shape), "n_models": w.n_models, "epochs": w.epochs, "n_test": w.n_test,
           "train_images": n_images, "data": w.data, "batch_size": w.batch_size, "train_flops": train_flops,
           "eval_flops": eval_flops, "group_size": w.group_size,
           "strategy": engine.resolve_strategy(cfg, torch.device("cpu")) if hasattr(engine, "resolve_strategy") else "grouped",
           "methods": {}}
    for m in methods:
        t = {k: stats(v) for k, v in times[m].items()}
        tot = [a + b for a, b in zip(times[m]["train_cpu"], times[m]["eval_cpu"])]
        t["total_cpu"] = stats(tot)
        t["train_gflops"] = train_flops / t["train_cpu"]["min"] / 1e9
        t["eval_gflops"] = eval_flops / t["eval_cpu"]["min"] / 1e9
        res["methods"][m] = t
    return res


#: The commit the engine issue (#25: "the engine must beat the plain loop") was filed against: the
#: engine of "today" in its "2x faster than today" target.
FILED_AT = "7c45021"


def engine_at(rev: str, where: Path):
    """``poisoncert.train`` as it was at commit ``rev``, imported from ``git archive`` under the name
    ``poisoncert_<rev>`` (the package imports itself relatively), so that the engine then and the
    engine now run side by side in this process. None (and why) outside a git clone with that commit."""
    import importlib
    import subprocess
    import tarfile
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    import hashlib

    # a module name per revision name (HEAD~1, origin/main; distinct names never share one)
    name = "poisoncert_" + "".join(ch if ch.isalnum() else "_" for ch in rev) + "_" + hashlib.sha1(rev.encode()).hexdigest()[:8]
    dest = where / name
    if not dest.is_dir():
        try:
            blob = subprocess.run(["git", "-C", str(repo), "archive", rev, "workflow/poisoncert"], capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            err = getattr(exc, "stderr", b"") or b""
            return None, f"git archive {rev} failed ({(err.decode(errors='replace') or str(exc)).strip()[:80]})"
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            tar = Path(tmp) / "src.tar"
            tar.write_bytes(blob)
            with tarfile.open(tar) as tf:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: refuse links and absolute paths
                    tf.extractall(tmp, filter="data")
                else:  # our own repository's archive of one folder
                    tf.extractall(tmp)
            (Path(tmp) / "workflow" / "poisoncert").rename(dest)
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    return importlib.import_module(f"{name}.train"), None


def run_ensemble(n_models: int, epochs: int, threads: int, k: int = 1200, repeats: int = 1, n_test: int | None = None,
                 filed=None) -> dict:
    """The DPA k = ``k`` small_cnn ensemble's first ``n_models`` models trained as the workflow trains
    them (``train_shard``), by the engine now (strategy auto), this engine's ``grouped`` strategy (the
    bits the engine had before the strategies existed), the engine when the issue was filed
    (``filed``: its ``train`` module, :func:`engine_at`; skipped if None) and the plain loop: CPU
    seconds per model (min over ``repeats`` interleaved rounds), extrapolated to k."""
    sets, xte, source = dpa_sets(n_models, k)
    xte = xte[:n_test]
    seeds = list(range(n_models))
    times: dict[str, list[float]] = {"engine": [], "engine_grouped": [], "engine_filed": [], "loop": []}
    if filed is None:
        del times["engine_filed"]
    for _ in range(repeats):
        for name in times:
            torch.set_num_threads(threads)
            cfg = TrainConfig(arch="small_cnn", epochs=epochs, cpu_threads=threads,
                              strategy="grouped" if name == "engine_grouped" else "auto")
            c0 = time.process_time()
            if name == "loop":
                run_loop(sets, seeds, xte, cfg)
            elif name == "engine_filed":
                filed.train_shard(sets, seeds, xte, N_CLASSES, filed.TrainConfig(arch="small_cnn", epochs=epochs, cpu_threads=threads),
                                  device="cpu", progress=False)
            else:
                engine.train_shard(sets, seeds, xte, N_CLASSES, cfg, device="cpu", progress=False)
            times[name].append((time.process_time() - c0) / n_models)
    per = {name: min(v) for name, v in times.items()}
    return {"k": k, "measured_models": n_models, "epochs": epochs, "n_test": len(xte), "data": source, "repeats": repeats,
            "strategy": engine.resolve_strategy(TrainConfig(arch="small_cnn"), torch.device("cpu")),
            "cpu_s_per_model": per["engine"], "cpu_s_per_model_grouped": per["engine_grouped"], "cpu_s_per_model_loop": per["loop"],
            "cpu_s_per_model_filed": per.get("engine_filed"), "filed_at": FILED_AT if filed is not None else None,
            "speedup_vs_grouped": per["engine_grouped"] / per["engine"], "speedup_vs_loop": per["loop"] / per["engine"],
            "speedup_vs_filed": per["engine_filed"] / per["engine"] if "engine_filed" in per else None,
            "extrapolated_cpu_min": per["engine"] * k / 60, "all": times}


def ensemble_line(ens: dict) -> str:
    """The ensemble's result in one sentence (printed and written)."""
    filed = (f"the engine when the issue was filed (commit {ens['filed_at']}) {ens['cpu_s_per_model_filed']:.3f} "
             f"({ens['speedup_vs_filed']:.2f}x), " if ens.get("filed_at") else "")
    return (f"DPA k=1200 small_cnn ensemble ({ens['epochs']} epochs + {ens['n_test']} tests, {ens['data']}; "
            f"{ens['measured_models']} models measured, min of {ens['repeats']} interleaved rounds), CPU s per model: "
            f"engine ({ens['strategy']}) {ens['cpu_s_per_model']:.3f}, {filed}this engine's grouped strategy "
            f"{ens['cpu_s_per_model_grouped']:.3f} ({ens['speedup_vs_grouped']:.2f}x), plain loop {ens['cpu_s_per_model_loop']:.3f} "
            f"({ens['speedup_vs_loop']:.2f}x); {ens['extrapolated_cpu_min']:.1f} CPU min for 1,200")


def fmt_table(results, peak) -> list[str]:
    lines = ["| arch | input | work | strategy | method | train CPU s (min / median) | eval CPU s (min / median) | "
             "total CPU s (min / median) | engine speed-up | train GFLOP/s (% of matmul) | eval GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        shape = "x".join(str(s) for s in r["shape"][1:]) + f"x{r['shape'][0]}"
        work = f"{r['n_models']} models x {r['epochs']} ep + {r['n_test']} tests"
        eng = r["methods"].get("engine")
        for m, t in r["methods"].items():
            sp = "" if eng is None or m == "engine" else f"{t['total_cpu']['min'] / eng['total_cpu']['min']:.2f}x"
            lines.append(f"| {r['arch']} | {shape} | {work} | {r['strategy'] if m == 'engine' else ''} | {m} | "
                         f"{t['train_cpu']['min']:.3f} / {t['train_cpu']['median']:.3f} | {t['eval_cpu']['min']:.3f} / {t['eval_cpu']['median']:.3f} | "
                         f"{t['total_cpu']['min']:.3f} / {t['total_cpu']['median']:.3f} | {sp} | "
                         f"{t['train_gflops']:.1f} ({t['train_gflops'] / peak:.0%}) | {t['eval_gflops']:.1f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny workloads, 2 repeats: seconds")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; --quick 2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archs", default="", help="only these archs (comma-separated)")
    ap.add_argument("--methods", default="engine,loop,func",
                    help="comma-separated: engine, loop, func, and engine@<commit> (the engine of another revision, "
                         "imported from git archive and run in this process: an A/B of a change)")
    ap.add_argument("--strategy", default="auto", choices=("auto",) + engine.STRATEGIES,
                    help="the engine's execution strategy (default auto: the measured choice per arch, STRATEGY_TABLE)")
    ap.add_argument("--ensemble", action="store_true", help="also the DPA k=1200 small_cnn ensemble (one shard, extrapolated)")
    ap.add_argument("--ensemble-models", type=int, default=50)
    ap.add_argument("--ensemble-epochs", type=int, default=10)
    ap.add_argument("--ensemble-repeats", type=int, default=2)
    ap.add_argument("--filed-at", default=FILED_AT,
                    help=f"the commit whose engine the ensemble is also compared with (default {FILED_AT}, when the engine issue "
                         "was filed; '' skips it; needs a git clone)")
    ap.add_argument("--out", default="results/benchmarks/engine")
    ap.add_argument("--label", default="", help="a name for this run in the output files (e.g. before)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    engine.keep_freed_memory()  # as train_shard does: every method below runs with glibc keeping freed buffers
    methods = [m for m in args.methods.split(",") if m]
    runners = dict(METHODS)
    import tempfile

    revs_dir = tempfile.TemporaryDirectory(prefix="bench_engine_revs_")
    for m in methods:
        if m.startswith("engine@"):
            other, why = engine_at(m.split("@", 1)[1], Path(revs_dir.name))
            if other is None:
                print(f"bench_engine: method {m}: {why}", file=sys.stderr)
                return 2
            missing = [a for a in ("TrainConfig", "resolve_strategy", "deterministic_mode", "_fit", "_evaluate") if not hasattr(other, a)]
            if missing:
                print(f"bench_engine: method {m}: that revision's engine has no {', '.join(missing)} (older than the "
                      "execution strategies; --ensemble --filed-at compares such an engine through train_shard)", file=sys.stderr)
                return 2
            runners[m] = functools.partial(run_engine, eng=other)
        elif m not in METHODS:
            print(f"bench_engine: unknown method {m!r}; valid: {', '.join(METHODS)}, engine@<commit>", file=sys.stderr)
            return 2
    wls = [w for w in workloads(args.quick) if not args.archs or w.arch in args.archs.split(",")]
    fm = None
    if any(w.data == "fmnist" for w in wls):
        sets, xte, source = dpa_sets(max(w.n_models for w in wls if w.data == "fmnist"))
        fm = (sets, xte, source)
    peak = matmul_gflops(512 if args.quick else 1024)
    env = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other agents' jobs)",
           "torch": torch.__version__, "threads": args.threads, "repeats": repeats, "matmul_gflops": peak,
           "fmnist_source": fm[2] if fm else None, "command": "python benchmarks/bench_engine.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(f"{env['machine']}; torch {env['torch']}, {args.threads} thread(s), {repeats} interleaved repeats; fp32 matmul {peak:.1f} GFLOP/s (CPU time)",
          flush=True)
    ceilings = {}
    results = []
    ens = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "engine" + (f"_{args.label}" if args.label else "") + ("_quick" if args.quick else "")

    def write():  # after every step, so a long run interrupted keeps what it measured
        (out / f"{stem}.json").write_text(json.dumps({"env": env, "ceilings": ceilings, "results": results, "ensemble": ens}, indent=1))
        md = [f"Machine: {env['machine']}; torch {env['torch']}; {args.threads} thread(s); {repeats} interleaved repeats; "
              f"fp32 matmul {peak:.1f} GFLOP/s. Command: `{env['command']}`", ""]
        md += fmt_table(results, peak)
        md += ["", "| ceiling | forward GFLOP/s | forward + backward GFLOP/s |", "|---|---|---|"]
        md += [f"| {k} one model, dense | {v['forward_gflops']:.1f} | {v['train_gflops']:.1f} |" for k, v in ceilings.items()]
        if ens:
            md += ["", ensemble_line(ens) + "."]
        (out / f"{stem}.md").write_text("\n".join(md) + "\n")

    if args.ensemble:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
            filed, why = engine_at(args.filed_at, Path(tmp)) if args.filed_at else (None, "--filed-at ''")
            if filed is None:
                print(f"the engine at {args.filed_at or '-'} is not measured: {why}", flush=True)
            ens = run_ensemble(4 if args.quick else args.ensemble_models, 1 if args.quick else args.ensemble_epochs, args.threads,
                               repeats=1 if args.quick else args.ensemble_repeats, n_test=500 if args.quick else None, filed=filed)
        print(ensemble_line(ens), flush=True)
        write()
    for w in wls:
        key = f"{w.arch}@{'x'.join(map(str, w.shape))}"
        if key not in ceilings:
            f_rate, t_rate = dense_gflops(w.arch, w.shape, batch=16 if args.quick else 128, reps=1 if args.quick else 3)
            ceilings[key] = {"forward_gflops": f_rate, "train_gflops": t_rate}
            print(f"ceiling {key}: one model at batch {16 if args.quick else 128}: forward {f_rate:.1f}, forward+backward {t_rate:.1f} GFLOP/s", flush=True)
        r = measure(w, repeats, args.threads, methods, fm, args.strategy, runners)
        results.append(r)
        print("\n".join(fmt_table([r], peak)[2:]), flush=True)
        write()
    write()
    revs_dir.cleanup()
    print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
