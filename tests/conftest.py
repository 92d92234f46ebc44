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
