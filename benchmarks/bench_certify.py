"""Benchmark of the deterministic certificates (poisoncert.certify) against per-sample loop references.

    PYTHONPATH=workflow python benchmarks/bench_certify.py [--n 10000] [--out results/benchmarks/certify.csv]

Configurations (random logits): DPA k=1200 (10 classes), FA k=1200 d=16 (10 classes), DPA+ROE k=100
(43 classes), FA+ROE k=50 d=16 (10 classes). Each vectorised certificate is timed on all n samples,
"total" from logits and "from votes" excluding the argmax (the papers' scripts also compute
``scores.max(2)`` for all samples at once before their per-sample loop; the ROE certificates read the
logits again in round 2, so for them both numbers include it). The loop references below
mirror those scripts (DPA: ``certify.py`` of DPA; FA: ``FiniteAggregation_cerfity.py``; DPA+ROE and
FA+ROE: ``dpa_roe_certify.py`` / ``fa_roe_certify.py`` of the ROE repository), in numpy instead of
torch, one sample at a time; they run on a subset of ``--loop-n`` samples, outputs are compared
sample by sample with the vectorised ones on that subset, and their time is extrapolated to n.
Times are wall-clock; the 1-minute load average is recorded with each row (on a shared machine,
compare the speed-up ratios, not absolute times). ``--repeat R`` keeps the fastest of R runs of each
vectorised certificate.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

from poisoncert.certify import dpa, dpa_from_counts, dpa_roe, fa_roe, vote_counts  # noqa: E402
from poisoncert.certify.fa import default_fa_offsets, fa, fa_from_votes  # noqa: E402

# --------------------------------------------------------------------------------------------
# per-sample loop references (mirroring the papers' scripts; predicted class, no labels)
# --------------------------------------------------------------------------------------------


def _counts(v: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(v, minlength=n_classes)


def dpa_loop(scores: np.ndarray, max_classes: np.ndarray | None = None):
    n, k, n_classes = scores.shape
    mc = scores.argmax(2) if max_classes is None else max_classes
    pred = np.empty(n, dtype=np.int64)
    cert = np.empty(n, dtype=np.int64)
    for i in range(n):
        p = _counts(mc[i], n_classes)
        idxsort = np.argsort(-p, kind="stable")
        idx, idx2 = idxsort[0], idxsort[1] if n_classes > 1 else idxsort[0]
        val, val2 = p[idx], (p[idx2] if n_classes > 1 else 0)
        pred[i] = idx
        cert[i] = (val - val2 - (idx2 <= idx if n_classes > 1 else 0)) // 2
    return pred, cert


def fa_loop(scores: np.ndarray, k: int, d: int, offsets, max_classes: np.ndarray | None = None):
    n, kd, n_classes = scores.shape
    mc = scores.argmax(2) if max_classes is None else max_classes
    shifted = np.array([[(h + s) % kd for s in offsets] for h in range(kd)])
    pred = np.empty(n, dtype=np.int64)
    cert = np.empty(n, dtype=np.int64)
    for i in range(n):
        p = _counts(mc[i], n_classes)
        label = int(np.argsort(-p, kind="stable")[0])
        pred[i] = label
        cert[i] = kd
        mcgh = mc[i][shifted.reshape(-1)].reshape(-1, d)
        for c in range(n_classes):
            if c != label:
                diff = p[label] - p[c] - (1 if c < label else 0)
                deltas = (1 + (mcgh == label).astype(int) - (mcgh == c).astype(int)).sum(axis=1)
                deltas = -np.sort(-deltas)
                radius = 0
                while diff - deltas[radius] >= 0:
                    diff -= deltas[radius]
                    radius += 1
                cert[i] = min(cert[i], radius)
    return pred, cert


def _dp_need_table(size: int) -> np.ndarray:
    """The ROE repository's ``dp_calc.py`` table (number of poisons needed), rebuilt independently."""
    a = np.zeros((size, size), dtype=np.int64)
    for i in range(size):
        for j in range(size):
            if i == 0 and j == 0:
                a[i, j] = 0
            elif (i <= 1 and j <= 2) or (i <= 2 and j <= 1):
                a[i, j] = 1
            elif j <= 1:
                a[i, j] = (i + 1) // 2
            elif i <= 1:
                a[i, j] = (j + 1) // 2
            else:
                a[i, j] = 1 + min(a[i - 2, j - 1], a[i - 1, j - 2])
    return a


def _ceil2(a: int) -> int:
    return (max(0, a) + 1) // 2


def _roe_round(prediction, sc, n_classes, n_models):
    ordered = np.argsort(-prediction, kind="stable")
    m1, m2 = int(ordered[0]), int(ordered[1])
    m1_el = np.array([2 * int((sc[:, m1] > sc[:, c]).sum()) - n_models for c in range(n_classes)])
    m2_el = np.array([2 * int((sc[:, m2] > sc[:, c]).sum()) - n_models for c in range(n_classes)])
    elec = m1_el[m2]
    if elec > 0:
        c_pred = m1
    elif elec == 0:
        c_pred = m1 if m1 <= m2 else m2
    else:
        c_pred = m2
    return m1, m2, m1_el, m2_el, c_pred


def dpa_roe_loop(scores: np.ndarray, max_classes: np.ndarray | None = None, dp_table: np.ndarray | None = None):
    n, k, n_classes = scores.shape
    mc = scores.argmax(2) if max_classes is None else max_classes
    dp = _dp_need_table(k + 3) if dp_table is None else dp_table
    INF = 10**9
    pred = np.empty(n, dtype=np.int64)
    cert = np.empty(n, dtype=np.int64)
    for i in range(n):
        prediction = _counts(mc[i], n_classes)
        m1, m2, m1_el, m2_el, c_pred = _roe_round(prediction, scores[i], n_classes, k)
        c_sec = m1 + m2 - c_pred
        r2 = m1_el if c_pred == m1 else m2_el
        cert_r1 = INF
        for c1 in range(n_classes):
            if c1 == c_pred:
                continue
            for c2 in range(n_classes):
                if c2 == c_pred or c2 == c1:
                    continue
                g1 = max(prediction[c_pred] - prediction[c1] + (c1 > c_pred), 0)
                g2 = max(prediction[c_pred] - prediction[c2] + (c2 > c_pred), 0)
                cert_r1 = min(cert_r1, dp[g1][g2])
        cert_r2 = INF
        for c in range(n_classes):
            if c == c_pred:
                continue
            a = _ceil2(prediction[c_sec] - prediction[c] + (c > c_sec))
            b = _ceil2(r2[c] + (c > c_pred))
            cert_r2 = min(cert_r2, max(a, b))
        pred[i] = c_pred
        cert[i] = min(cert_r1, cert_r2) - 1
    return pred, cert


def _get_sample_cert(gap, pw):
    pw = -np.sort(-pw)
    t = 0
    while gap > 0:
        gap -= pw[t]
        t += 1
    return t


def fa_roe_loop(scores: np.ndarray, k: int, d: int, offsets, max_classes: np.ndarray | None = None):
    n, kd, n_classes = scores.shape
    mc = scores.argmax(2) if max_classes is None else max_classes
    shifted = np.array([[(h + s) % kd for s in offsets] for h in range(kd)]).reshape(-1)
    INF = 10**9
    pred = np.empty(n, dtype=np.int64)
    cert = np.empty(n, dtype=np.int64)
    for i in range(n):
        prediction = _counts(mc[i], n_classes)
        m1, m2, m1_el, m2_el, c_pred = _roe_round(prediction, scores[i], n_classes, kd)
        c_sec = m1 + m2 - c_pred
        mcgh = mc[i][shifted].reshape(-1, d)
        to = {}
        for ref in (m1, m2):
            arr = np.zeros(n_classes, dtype=np.int64)
            for m3 in range(n_classes):
                gap = prediction[ref] - prediction[m3] + (m3 > ref)
                pw = (1 + (mcgh == ref).astype(int) - (mcgh == m3).astype(int)).sum(axis=1)
                arr[m3] = _get_sample_cert(gap, pw)
            to[ref] = arr
        sc = scores[i][shifted]  # (kd*d, C)
        r1, r1_sec = to[c_pred], to[c_sec]
        r2_gaps = m1_el if c_pred == m1 else m2_el
        cert_r1 = INF
        for c1 in range(n_classes):
            if c1 == c_pred:
                continue
            for c2 in range(n_classes):
                if c2 == c_pred or c2 == c1:
                    continue
                gap = (prediction[c_pred] - prediction[c1] + (c1 > c_pred)) + (
                    prediction[c_pred] - prediction[c2] + (c2 > c_pred)
                )
                pw = (1 + 2 * (mcgh == c_pred).astype(int) - (mcgh == c1).astype(int) - (mcgh == c2).astype(int)).sum(1)
                nsum = _get_sample_cert(gap, pw)
                cert_r1 = min(cert_r1, max(r1[c1], r1[c2], nsum))
        cert_r2 = INF
        for c in range(n_classes):
            if c == c_pred:
                continue
            gap = r2_gaps[c] + (c > c_pred)
            pw = 2 * (sc[:, c_pred] > sc[:, c]).reshape(-1, d).sum(axis=1)
            cert_r2 = min(cert_r2, max(r1_sec[c], _get_sample_cert(gap, pw)))
        pred[i] = c_pred
        cert[i] = min(cert_r1, cert_r2) - 1
    return pred, cert


# --------------------------------------------------------------------------------------------


def _time(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="test samples")
    ap.add_argument("--loop-n", type=int, default=200, help="samples for the loop references")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "certify.csv"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="keep the fastest of this many vectorised runs")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n, ln = args.n, min(args.loop_n, args.n)
    rows = []

    def record(name, config, t_total, t_votes, t_loop_votes_sub, t_loop_core_sub, same):
        scale = n / ln
        t_loop = (t_loop_votes_sub + t_loop_core_sub) * scale
        t_loop_core = t_loop_core_sub * scale
        rows.append(
            {
                "certificate": name,
                "config": config,
                "n_test": n,
                "seconds_total": round(t_total, 3),
                "seconds_from_votes": round(t_votes, 3),
                "loop_seconds_total_extrapolated": round(t_loop, 1),
                "loop_seconds_from_votes_extrapolated": round(t_loop_core, 1),
                "loop_samples": ln,
                "speedup_total": round(t_loop / t_total, 1),
                "speedup_from_votes": round(t_loop_core / t_votes, 1),
                "identical_on_loop_samples": bool(same),
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
        )
        print(
            f"{name:8s} {config:20s} vectorised {t_total:7.2f} s (from votes {t_votes:6.2f} s)"
            f" | loop ~{t_loop:8.1f} s (from votes ~{t_loop_core:8.1f} s)"
            f" | speed-up x{t_loop / t_total:6.1f} (from votes x{t_loop_core / t_votes:6.1f}) | identical: {same}",
            flush=True,
        )

    def run(name, config, s, vec, vec_votes, loop):
        """vec(s) -> Certificate; vec_votes(s, votes) -> Certificate (argmax excluded); loop(sub, mc)."""
        t_total = t_votes = float("inf")
        mc = np.argmax(s, axis=2)
        for _ in range(max(1, args.repeat)):
            cert, t = _time(vec, s)
            t_total = min(t_total, t)
            _, t = _time(vec_votes, s, mc)
            t_votes = min(t_votes, t)
        sub = s[:ln]
        mcs, t_am_sub = _time(np.argmax, sub, axis=2)
        (lp, lc), t_loop = _time(loop, sub, mcs)
        same = (lp == cert.prediction[:ln]).all() and (lc == cert.radius[:ln]).all()
        record(name, config, t_total, t_votes, t_am_sub, t_loop, same)

    # DPA, k=1200, 10 classes
    k, C = 1200, 10
    s = rng.standard_normal((n, k, C), dtype=np.float32)
    run("DPA", f"k={k} C={C}", s, dpa, lambda s, mc: dpa_from_counts(vote_counts(mc, C)),
        lambda sub, mc: dpa_loop(sub, max_classes=mc))
    del s

    # FA, k=1200, d=16, 10 classes (7.7 GB of float32 logits at n=10000: generated in place)
    k, d, C = 1200, 16, 10
    off = default_fa_offsets(k, d)
    s = np.empty((n, k * d, C), dtype=np.float32)
    for a in range(0, n, 500):
        s[a : a + 500] = rng.standard_normal((min(500, n - a), k * d, C), dtype=np.float32)
    run("FA", f"k={k} d={d} C={C}", s, lambda s: fa(s, k, d, off), lambda s, mc: fa_from_votes(mc, C, k, d, off),
        lambda sub, mc: fa_loop(sub, k, d, off, max_classes=mc))
    del s

    # DPA+ROE, k=100, 43 classes (round 2 reads the logits, so "from votes" still reads them)
    k, C = 100, 43
    s = rng.standard_normal((n, k, C), dtype=np.float32)
    run("DPA+ROE", f"k={k} C={C}", s, dpa_roe, lambda s, mc: dpa_roe(s), lambda sub, mc: dpa_roe_loop(sub, max_classes=mc))
    del s

    # FA+ROE, k=50, d=16, 10 classes (CIFAR-10 configuration of the ROE paper)
    k, d, C = 50, 16, 10
    off = default_fa_offsets(k, d)
    s = rng.standard_normal((n, k * d, C), dtype=np.float32)
    run("FA+ROE", f"k={k} d={d} C={C}", s, lambda s: fa_roe(s, k, d, off), lambda s, mc: fa_roe(s, k, d, off),
        lambda sub, mc: fa_roe_loop(sub, k, d, off, max_classes=mc))
    del s

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out} (cpus available: {len(os.sched_getaffinity(0))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
