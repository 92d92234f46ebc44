import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))


@pytest.fixture(scope="session")
def digits():
    from poisoncert.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def snakemake_env(extra: dict | None = None) -> dict:
    """The environment the workflow tests run Snakemake in: this checkout's package first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "workflow"), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def snakemake():
    """Run this repository's workflow: ``snakemake(workdir, *args, timeout=900)`` -> CompletedProcess.

    The one way the tests start Snakemake (``-s Snakefile --directory workdir``, output captured).
    """

    def run(workdir, *args, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(env), timeout=timeout)

    return run


TINY_CONFIG = {
    "shard_size": 3,
    "radii": [0, 1, 2],
    "experiments": {
        "tiny": {
            "dataset": "digits",
            "scheme": "dpa",
            "k": [4, 7],
            "certificates": ["dpa"],
            "train": {"arch": "small_cnn", "epochs": 2},
        }
    },
}


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    """The tiny workflow config of the end-to-end runs (local and SLURM): one DPA experiment on digits.

    k = 4 and 7 with ``shard_size: 3`` give 2 + 3 train shards; a fresh deep copy per session (copy it
    again before changing it: the SLURM and workflow tests share it).
    """
    return copy.deepcopy(TINY_CONFIG)
