"""Train stage of the default DPA experiment: one process per partition vs sharded and vectorised.

Runs the `dpa_digits` experiment of config.yaml (k = 10, 25, 50: 85 base models) through
Snakemake twice in temporary folders — once with ``shard_size: 1`` (the design card's literal
way: one job, one Python process importing torch, per partition) and once with a larger shard
— and times the train stage alone (prepare and partition run first, untimed). Target: >= 10x.
Prints a table and writes ``results/benchmarks/workflow_train.csv`` (or ``--out``).

    python benchmarks/bench_workflow_train.py [--cores 2] [--shard-size 85]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _run(workdir: Path, cfg: Path, cores: int, *targets: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "--quiet", "all", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(cfg), "--cores", str(cores), *targets]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - t0


def train_stage_seconds(shard_size: int, cores: int) -> tuple[float, int]:
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    exp = base["experiments"]["dpa_digits"]
    exp["poison_check"] = 0
    cfg_dict = {**{k: v for k, v in base.items() if k != "experiments"}, "shard_size": shard_size, "experiments": {"dpa_digits": exp}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = tmp / "config.yaml"
        cfg.write_text(yaml.safe_dump(cfg_dict))
        parts = [f"results/dpa_digits/k{k}_d1/partitions.npz" for k in exp["k"]]
        _run(tmp, cfg, cores, *parts)
        scores = [f"results/dpa_digits/k{k}_d1/scores.npz" for k in exp["k"]]
        n_jobs = sum(-(-k // shard_size) for k in exp["k"])
        return _run(tmp, cfg, cores, *scores), n_jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=16, help="the sharded run's shard_size")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "workflow_train.csv"))
    args = ap.parse_args()
    rows = []
    for s in (1, args.shard_size):
        secs, jobs = train_stage_seconds(s, args.cores)
        rows.append({"experiment": "dpa_digits k=10,25,50 (85 models)", "shard_size": s, "train_jobs": jobs, "cores": args.cores, "seconds": round(secs, 1)})
        print(f"shard_size={s:>3}: {jobs:>3} train jobs on {args.cores} cores, train stage + aggregate {secs:7.1f} s")
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"speed-up of sharded, vectorised training over one process per partition: {speedup:.1f}x (target >= 10x)")
    for r in rows:
        r["speedup_vs_shard1"] = round(rows[0]["seconds"] / r["seconds"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
