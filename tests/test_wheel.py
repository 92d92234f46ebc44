"""A non-editable install works on its own: build the wheel, install it into a fresh venv, and with
that venv's interpreter validate a config and run the workflow, with no poisoncert source in reach.

The Snakefile puts ``<Snakefile's folder>/workflow`` first on ``sys.path`` (to check config.yaml's
syntax), so run from the repository it would import the source tree, not the wheel. The test
therefore runs a copy of the workflow files *without* the package (``WORKFLOW_FILES``): every
``import poisoncert`` can only find the venv's. PYTHONPATH is unset, the venv's ``bin/`` is first
on PATH (the jobs call the ``poisoncert`` console script) and the commands run from a temporary
folder. The venv sees the system site-packages (torch, snakemake, ...); its own site-packages come
first, so the wheel wins even over an editable install of poisoncert there (``make install``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

#: what a user checks out to run the workflow with an installed poisoncert: everything but the package
WORKFLOW_FILES = ("Snakefile", "rules", "envs", "profiles", "workflow/report")
#: what the wheel is built from (pyproject.toml's package root is workflow/)
BUILD_FILES = ("pyproject.toml", "README.md", "workflow/poisoncert")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info")


def _copy(repo_root: Path, names: tuple[str, ...], dest: Path) -> Path:
    for name in names:
        src, dst = repo_root / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=_IGNORE)
        else:
            shutil.copy(src, dst)
    return dest


def _env(venv: Path | None = None) -> dict[str, str]:
    """This process's environment without PYTHONPATH; with ``venv``, its bin/ first on PATH (as if activated)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if venv is not None:
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


def _run(cmd: list, cwd: Path, venv: Path | None = None, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(venv), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with poisoncert installed from a wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy(repo_root, BUILD_FILES, tmp / "src")  # a copy: the build writes build/ and *.egg-info
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src], tmp)
    (wheel,) = (tmp / "dist").glob("poisoncert-*.whl")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"], tmp)
    python = tmp / "venv" / "bin" / "python"
    # --ignore-installed: install into the venv even where the system site-packages has poisoncert
    _run(pip + ["--python", python, "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet", wheel], tmp)
    return tmp / "venv"


@pytest.mark.slow
def test_wheel_install_validates_and_runs_the_workflow(venv: Path, repo_root: Path, tmp_path: Path):
    python, work = venv / "bin" / "python", tmp_path / "work"
    work.mkdir()
    code = "import poisoncert, poisoncert.config as c, poisoncert.papers as p; print(poisoncert.__file__, c.SCHEMA_PATH, p.PAPER_RESULTS)"
    where = _run([python, "-c", code], work, venv).stdout.split()
    where.append(_run(["sh", "-c", "command -v poisoncert"], work, venv).stdout.strip())  # what the rules call
    for path in where:
        assert Path(path).is_relative_to(venv), where  # the package, its data and its script are the wheel's
    assert {"dpa_table1", "roe_table6"} <= {p.stem for p in Path(where[2]).glob("*.csv")}

    # the console script validates configs against the schema the wheel ships
    shutil.copy(repo_root / "config.yaml", work / "config.yaml")
    assert '"experiments"' in _run(["poisoncert", "check-config", "config.yaml"], work, venv).stdout
    (work / "bad.yaml").write_text(yaml.safe_dump({"experiments": {"x": {"dataset": "digits", "scheme": "dpa", "k": [0]}}}))
    bad = _run(["poisoncert", "check-config", "bad.yaml"], work, venv, check=False)
    assert bad.returncode == 2 and "experiments.x.k[0]: 0 is less than the minimum of 1" in bad.stderr

    # the workflow, run by the venv's interpreter from a checkout that has no package to import
    checkout = _copy(repo_root, WORKFLOW_FILES, tmp_path / "checkout")
    assert not (checkout / "workflow" / "poisoncert").exists()
    snakemake = [python, "-m", "snakemake", "-s", checkout / "Snakefile", "--directory", work, "--cores", "1"]
    dry = _run(snakemake + ["-n"], work, venv)
    assert "certify" in dry.stdout and "report" in dry.stdout, dry.stdout[-3000:]
    # a paper table's published input is the wheel's CSV
    cfg = yaml.safe_load((repo_root / "config.yaml").read_text()) | {"paper_tables": ["dpa_table1"]}
    (work / "tables.yaml").write_text(yaml.safe_dump(cfg))
    dry = _run(snakemake + ["results/paper_tables/dpa_table1.csv", "-n", "--configfile", "tables.yaml"], work, venv)
    assert f"{venv}" in dry.stdout and "dpa_table1.csv" in dry.stdout, dry.stdout[-3000:]
    # one real job: the rule's `poisoncert figure delta_figure` resolves to the venv's script
    _run(snakemake + ["results/figures/chen_fig2_delta.csv"], work, venv)
    assert (work / "results" / "figures" / "chen_fig2_delta.png").stat().st_size > 0
