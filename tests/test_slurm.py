"""The workflow on a live single-node SLURM on localhost, through profiles/slurm.

tests/slurm/start_slurm.sh installs Debian's SLURM packages when missing and starts munged,
slurmctld and slurmd with all their state in a temporary directory; tests/slurm/stop_slurm.sh
cancels the jobs and kills the daemons by PID at the end, also when a test fails. Needs root and
apt-get (or the packages already installed); skipped with the reason otherwise.

Three snakemake runs go side by side (the SLURM runs mostly wait on status checks): the tiny
config on SLURM, the same config locally (--cores), and a config whose `prepare` job fails on SLURM.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_SCRIPTS = Path(__file__).resolve().parent / "slurm"
RUN_TIMEOUT = 300  # seconds per snakemake run; SIGKILL, since a hung run ignores SIGTERM
# first status check 2 s after a submission instead of the plugin's 40 s (MinJobAge=300 >= 3 x 2)
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "2"]

# `prepare` fails: no MNIST under the (empty) data_root and no download
FAILING = {
    "data_root": "empty",
    "experiments": {"m": {"dataset": "mnist", "scheme": "dpa", "k": [4], "train": {"epochs": 1}}},
}


@pytest.fixture(scope="module")
def slurm_env():
    """Start a private SLURM; yield the environment for its clients; stop it afterwards."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux (Debian's SLURM packages)")
    if os.geteuid() != 0:
        pytest.skip("needs root: starts slurmctld/slurmd and installs Debian packages")
    if shutil.which("timeout") is None:
        pytest.skip("needs coreutils' timeout")
    state = tempfile.mkdtemp(prefix="poisoncert-slurm.")
    try:
        proc = subprocess.run(
            ["bash", str(SLURM_SCRIPTS / "start_slurm.sh"), state], capture_output=True, text=True, timeout=600
        )
        if proc.returncode == 3:  # cannot run here (no apt-get, install failed, another SLURM)
            reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "start_slurm.sh: exit 3"
            pytest.skip(reason)
        assert proc.returncode == 0, f"start_slurm.sh failed:\n{proc.stderr[-3000:]}"
        env = {}
        for line in (Path(state) / "env.sh").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        yield env
    finally:
        if (Path(state) / "munge").exists():
            subprocess.run(["bash", str(SLURM_SCRIPTS / "stop_slurm.sh"), state], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def _env(repo_root, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "POISONCERT_SLURM_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root / "workflow"), os.environ.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


class Run:
    """One snakemake run in its own working directory, output in <workdir>/snakemake.out."""

    def __init__(self, repo_root, workdir, config, args, env, dirs=()):
        workdir.mkdir(parents=True)
        for d in dirs:
            (workdir / d).mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        self.workdir = workdir
        self.out_path = workdir / "snakemake.out"
        cmd = ["timeout", "-s", "KILL", str(RUN_TIMEOUT), sys.executable, "-m", "snakemake"]
        cmd += ["-s", str(repo_root / "Snakefile"), "--directory", str(workdir), "--configfile", "config.yaml", *args]
        self.start = time.monotonic()
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait(self):
        try:
            self.returncode = self.proc.wait(timeout=RUN_TIMEOUT + 60)
        finally:
            if self.proc.poll() is None:  # only if `timeout` itself failed
                self.proc.kill()
                self.proc.wait()
        self.seconds = time.monotonic() - self.start
        self.output = self.out_path.read_text()
        return self

    def check_not_hung(self):
        assert self.returncode != 137, (
            f"snakemake was killed after {RUN_TIMEOUT} s (hung?); output:\n{self.output[-4000:]}"
        )


@pytest.fixture(scope="module")
def runs(slurm_env, repo_root, tmp_path_factory, tiny_config):
    base = tmp_path_factory.mktemp("slurm_runs")
    profile = ["--profile", str(repo_root / "profiles" / "slurm"), *FAST_STATUS]
    slurm = Run(repo_root, base / "slurm", tiny_config, profile, _env(repo_root, slurm_env))
    local = Run(repo_root, base / "local", tiny_config, ["--cores", "2"], _env(repo_root))
    failing = Run(repo_root, base / "failing", FAILING, profile, _env(repo_root, slurm_env), dirs=["empty"])
    try:
        runs = {"slurm": slurm.wait(), "local": local.wait(), "failing": failing.wait()}
    finally:
        for run in (slurm, local, failing):
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
    # the SLURM jobs of the good run (squeue keeps finished jobs for MinJobAge = 300 s)
    run_id = re.search(r"SLURM run ID: (\S+)", slurm.output)
    slurm.jobs = []
    if run_id:
        q = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--name", run_id.group(1), "--format=%i|%P|%C|%b|%T"],
            capture_output=True, text=True, env=_env(repo_root, slurm_env), timeout=30,
        )
        slurm.jobs = [dict(zip(("id", "partition", "cpus", "gres", "state"), l.split("|"))) for l in q.stdout.split()]
    return runs


def test_slurm_run_equals_local_run_bit_for_bit(runs, tiny_config):
    slurm, local = runs["slurm"], runs["local"]
    local.check_not_hung()
    assert local.returncode == 0, local.output[-4000:]
    slurm.check_not_hung()
    assert slurm.returncode == 0, slurm.output[-4000:]
    for k in tiny_config["experiments"]["tiny"]["k"]:
        rel = Path("results") / "tiny" / f"k{k}_d1"
        with np.load(slurm.workdir / rel / "scores.npz") as a, np.load(local.workdir / rel / "scores.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for name in a.files:
                assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
                assert a[name].tobytes() == b[name].tobytes(), f"k={k}: {name} differs between SLURM and local"
        for f in ("certificates/dpa.csv", "certificates/dpa.json"):
            assert (slurm.workdir / rel / f).read_bytes() == (local.workdir / rel / f).read_bytes(), f"k={k}: {f}"
    # the table, but for the measured training times (train_min_*: wall-clock of the jobs, which differ)
    table = Path("results") / "tiny" / "report" / "table.csv"
    a, b = (pd.read_csv(w / table) for w in (slurm.workdir, local.workdir))
    timing = [c for c in a.columns if c.startswith("train_min_")]
    assert timing and list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing), check_exact=True)


def test_slurm_jobs_follow_the_profile(runs, slurm_env, tiny_config):
    slurm = runs["slurm"]
    slurm.check_not_hung()
    assert slurm.returncode == 0, slurm.output[-4000:]
    out = slurm.output
    # train jobs go as group jobs: 2 + 3 shards (k = 4, 7; shard_size 3), groups of up to 8 -> one sbatch,
    # no single train job
    n_shards = sum(-(-k // tiny_config["shard_size"]) for k in tiny_config["experiments"]["tiny"]["k"])
    assert n_shards <= 8
    assert len(re.findall(r"submitted with SLURM jobid \d+ \(log: \S*/group_train_train/", out)) == 1, out[-4000:]
    assert "/rule_train/" not in out
    # partition and report are local rules, prepare (no download), aggregate and certify are not
    assert "localrule partition:" in out and "localrule report:" in out
    for rule in ("prepare", "aggregate", "certify"):
        assert f"/rule_{rule}/" in out, rule
    # 1 prepare + 1 group of the train shards + 2 aggregate + 2 certify, in the partition from the environment,
    # none asking for a GPU (the node has none: sbatch would refuse --gpus)
    jobs = slurm.jobs
    assert len(jobs) == 6, jobs
    assert {j["partition"] for j in jobs} == {slurm_env["POISONCERT_SLURM_PARTITION"]}
    assert {j["gres"] for j in jobs} == {"N/A"}
    assert {j["state"] for j in jobs} == {"COMPLETED"}
    assert sorted(int(j["cpus"]) for j in jobs) == [1, 1, 1, 1, 1, n_shards]  # the group's 1-thread jobs side by side


def test_failing_slurm_job_names_its_log(runs):
    failing = runs["failing"]
    failing.check_not_hung()
    out = failing.output
    assert failing.returncode == 1, out[-4000:]
    assert "Error in rule prepare:" in out
    assert "SLURM status is: 'FAILED'" in out
    # the job's own log, and (show-failed-logs) its one-line error
    assert re.search(r"log: results/logs/prepare/mnist\.log\b", out), out[-4000:]
    assert "poisoncert: error: dataset 'mnist' not found under empty" in out
    assert "Traceback" not in (failing.workdir / "results" / "logs" / "prepare" / "mnist.log").read_text()
    # the profile's retries: three attempts, then the run stops
    assert out.count("SLURM status is: 'FAILED'") == 3, out[-4000:]
    assert not (failing.workdir / "results" / "data" / "mnist.npz").exists()
