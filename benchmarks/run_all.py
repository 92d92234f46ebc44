"""Run every benchmark (`make bench`): certificates, training engine, workflow train stage, DAG build.

Each script prints its table and writes a CSV under results/benchmarks/. Timings are never
asserted in pytest: machines are noisy; read the numbers here and in the README.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_certify.py", "bench_certify_stochastic.py", "bench_train.py", "bench_engine.py", "bench_workflow_train.py", "bench_dag.py", "bench_jia_budget.py"]
# not here: bench_memory.py (writes a 15 GB scores file; run it on purpose), gpu_check.py (needs a GPU; --cpu rehearses)
# and learner_comparison.py (trains whole ensembles per learner; README "Data-efficient base learners")

if __name__ == "__main__":
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
            failed.append(name)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")
