"""Time the stochastic certificates (bagging, papers/002; random selection, papers/004).

Run: ``PYTHONPATH=workflow python benchmarks/bench_certify_stochastic.py``. Prints wall-clock
seconds to certify 10,000 test samples from vote counts of N = 1000 base models (10 classes),
n = 60,000 training examples. Nothing is asserted.
"""

from __future__ import annotations

import time

import numpy as np

from poisoncert.certify.bagging import bagging
from poisoncert.certify.selection import POISONING_MODELS, SCHEMES, random_selection


def synthetic_counts(n_test: int = 10_000, n_models: int = 1000, n_classes: int = 10, seed: int = 0) -> np.ndarray:
    """Vote counts with a realistic spread of margins: a top class with probability 0.3..1."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.3, 1.0, n_test)
    rest = rng.dirichlet(np.ones(n_classes - 1), n_test) * (1 - top)[:, None]
    probs = np.concatenate([top[:, None], rest], axis=1)
    counts = np.stack([rng.multinomial(n_models, p) for p in probs])
    return counts


def timed(fn, repeat: int = 3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    counts = synthetic_counts()
    n, k, alpha = 60_000, 30, 0.001
    print(f"stochastic certificates: {counts.shape[0]} test samples, N = {counts.sum(1)[0]} models, "
          f"{counts.shape[1]} classes, n = {n}")
    print("== bagging (Jia et al., Theorem 1 + SimuEM) ==")
    for kk in (30, 100, 1000):
        for attack in ("general", "modify", "insert"):
            t, cert = timed(lambda: bagging(counts, n, kk, alpha, attack=attack))
            r = cert.radius
            print(f"  k={kk:5d} attack={attack:8s} {t:7.3f} s   median radius {int(np.median(r)):5d}"
                  f"  max {int(r.max()):5d}  abstain {int((r < 0).sum())}")
    print("== random selection (Chen et al., Theorem 1 + BinoCP), n_s = 30 ==")
    for scheme in SCHEMES:
        for model in POISONING_MODELS:
            t, cert = timed(lambda: random_selection(counts, scheme, n, k, alpha, model))
            r = cert.radius
            print(f"  {scheme:28s} {model} {t:7.3f} s   median radius {int(np.median(r)):5d}  max {int(r.max()):5d}")
    for scheme in SCHEMES:
        t, _ = timed(lambda: random_selection(counts, scheme, n, 1000, alpha, "P6", clean_size=10_000))
        print(f"  {scheme:28s} P6 n_s=1000 n_c=10000 {t:7.3f} s")


if __name__ == "__main__":
    main()
