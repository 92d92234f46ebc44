"""How long Snakemake takes to build the DAG of the largest paper configuration.

FA on MNIST with k=1200, d=32 is 38,400 base models; with ``shard_size: 1`` that is 38,400
train jobs. Target (DESIGN.md): the DAG builds in under a minute. Reports wall and CPU time (user +
system of the snakemake process: on a shared machine the CPU time is the steadier number). Prints a table and writes
``results/benchmarks/dag.csv`` (or ``--out``).

    python benchmarks/bench_dag.py [--shard-sizes 1,16] [--out results/benchmarks/dag.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def dag_seconds(shard_size: int, k: int = 1200, d: int = 32) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system of the snakemake process) and train jobs of one dry run."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump({"shard_size": shard_size, "experiments": {"fa_mnist": {"dataset": "mnist", "scheme": "fa", "k": [k], "d": [d]}}}))
        cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "-s", str(ROOT / "Snakefile"), "-d", tmp, "--configfile", str(cfg)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        train_jobs = -(-k * d // shard_size)
        return dt, cpu, train_jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard-sizes", default="1,16")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "dag.csv"))
    args = ap.parse_args()
    rows = []
    for s in [int(v) for v in args.shard_sizes.split(",")]:
        dt, cpu, jobs = dag_seconds(s)
        rows.append({"config": "FA mnist k=1200 d=32", "shard_size": s, "train_jobs": jobs, "dag_seconds": round(dt, 2),
                     "cpu_seconds": round(cpu, 2), "target_seconds": 60})
        print(f"FA k=1200 d=32, shard_size={s:>3}: {jobs:>6} train jobs, DAG + dry run in {dt:6.1f} s wall, {cpu:6.1f} s CPU (target < 60 s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
