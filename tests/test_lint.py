"""The workflow's own code is lint-clean: ``snakemake --lint`` and ``snakefmt --check`` (issue 15).

Each check is also run on a copy with one planted defect, to show it can fail.
"""

import shutil
import subprocess
import sys

import pytest
from conftest import snakemake_env

SNAKEFILES = ["Snakefile", "rules"]


def _copy_workflow(repo_root, dest):
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(repo_root / name, dest / name)
    for name in ("rules", "envs", "profiles", "workflow"):
        shutil.copytree(repo_root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def test_snakemake_lint_is_clean(repo_root, snakemake):
    proc = snakemake(repo_root, "--lint", timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_snakemake_lint_catches_a_rule_without_log_or_env(repo_root, tmp_path, snakemake):
    _copy_workflow(repo_root, tmp_path)
    with open(tmp_path / "rules" / "report.smk", "a") as fh:
        fh.write('\n\nrule planted:\n    output:\n        "x.txt",\n    shell:\n        "touch {output}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=snakemake_env(),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Lints for rule planted" in out, out[-3000:]


def _snakefmt():
    exe = shutil.which("snakefmt")
    if exe is None:
        pytest.fail("snakefmt is not installed: pip install -e '.[dev]'")
    return exe


def test_snakefmt_check_is_clean(repo_root):
    proc = subprocess.run([_snakefmt(), "--check", *SNAKEFILES], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_snakefmt_check_catches_misformatted_rules(repo_root, tmp_path):
    shutil.copytree(repo_root / "rules", tmp_path / "rules")
    path = tmp_path / "rules" / "kmeans.smk"
    path.write_text(path.read_text().replace("    input:\n        dataset_file,", "    input:  dataset_file"))
    proc = subprocess.run([_snakefmt(), "--check", "rules"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
