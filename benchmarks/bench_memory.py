"""Memory at scale: FA k=1200, d=32 (38,400 base models) on 10,000 test samples certifies on a 24 GiB machine.

The scores are n_test x n_models x n_classes float32: 15.4 GB here. The script writes a synthetic
scores file of that size with :func:`poisoncert.scores.scores_writer` (block by block, as the
aggregate stage does), then runs ``poisoncert certify --certificate fa`` on it in a subprocess and
reports the subprocess's peak resident memory, split into its own (anonymous) memory and the
mapped pages of the scores file (page cache the kernel reclaims under pressure), and its wall
time. The scores are memory-mapped, so the process's own memory stays far below the file size. Needs about 16 GB of free disk under --workdir. Writes
results/benchmarks/memory.csv.

    python benchmarks/bench_memory.py                  # the issue's size
    python benchmarks/bench_memory.py --k 100 --d 4    # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from poisoncert.certify import default_fa_offsets  # noqa: E402
from poisoncert.scores import scores_writer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=1200)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--workdir", default=None, help="where the synthetic scores file goes (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scores file")
    ap.add_argument("--out", default="results/benchmarks/memory.csv")
    args = ap.parse_args()
    n_models = args.k * args.d
    work = Path(args.workdir or tempfile.mkdtemp(prefix="poisoncert-mem-"))
    path = work / "scores.npz"
    gb = args.n_test * n_models * args.classes * 4 / 1e9
    print(f"FA k={args.k} d={args.d}: {n_models} models x {args.n_test} tests x {args.classes} classes = {gb:.1f} GB of float32 scores -> {path}", flush=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.n_test)
    t = time.perf_counter()
    meta = {"scheme": "fa", "k": args.k, "d": args.d, "offsets": default_fa_offsets(args.k, args.d)}
    with scores_writer(path, (args.n_test, n_models, args.classes), labels, meta) as arr:
        block = max(1, int(2e8 // (n_models * args.classes)))  # ~800 MB of float32 at a time
        for s in range(0, args.n_test, block):
            chunk = rng.normal(size=(min(block, args.n_test - s), n_models, args.classes)).astype(np.float32)
            chunk[np.arange(len(chunk)), :, labels[s : s + block]] += 1.5  # an informative ensemble
            arr[s : s + block] = chunk
    t_write = time.perf_counter() - t
    print(f"wrote the scores file in {t_write:.0f} s", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "poisoncert", "certify", str(path), "--certificate", "fa", "--out-csv", str(work / "fa.csv"),
                             "--out-json", str(work / "fa.json"), "--radii", "0,1,2,4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"RssAnon": 0, "RssFile": 0}  # kB; the mapped scores are file pages the kernel can drop, not the process's own memory
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                key = line.split(":")[0]
                if key in peak:
                    peak[key] = max(peak[key], int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()
    t_cert = time.perf_counter() - t
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux: anonymous + mapped file pages
    anon_gib, file_gib = peak["RssAnon"] / 2**20, peak["RssFile"] / 2**20
    if proc.returncode != 0:
        sys.exit(f"certify failed: {err.strip()}")
    summary = json.loads((work / "fa.json").read_text())
    row = {"k": args.k, "d": args.d, "n_models": n_models, "n_test": args.n_test, "scores_gb": round(gb, 2), "write_s": round(t_write, 1),
           "certify_s": round(t_cert, 1), "certify_peak_rss_gib": round(peak_gib, 2), "certify_peak_anonymous_gib": round(anon_gib, 2),
           "certify_peak_mapped_file_gib": round(file_gib, 2), "median_certified_radius": summary["median_certified_radius"],
           "machine_memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
    print(out.strip())
    print(f"certify (FA Thm 2 + Table 2/3 statistics) of {gb:.1f} GB of scores: {t_cert:.0f} s; peak resident {peak_gib:.2f} GiB, of which the "
          f"process's own (anonymous) memory peaked at {anon_gib:.2f} GiB and mapped score pages (reclaimable page cache) at {file_gib:.2f} GiB", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    if not args.keep:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
