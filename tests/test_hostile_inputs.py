"""Issue 20, "Security and resources": every value that reaches a shell is quoted, and sizes in the
config are bounded (refused at validation with one line) before they can allocate without bound."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import snakemake_env

#: One experiment per rule family (prepare with a data_root, extractor, phase2, frozen poison check,
#: kmeans, ROE figures, selection sizes, running time, paper table), every rule in one dry run.
_ALL_RULES = {
    "paper_tables": ["dpa_table1"],
    "experiments": {
        "dpa": {"dataset": "mnist", "scheme": "dpa", "k": [3], "certificates": ["dpa", "dpa_roe"]},
        "fa": {"dataset": "mnist", "scheme": "fa", "k": [3], "d": [1, 2], "certificates": ["fa", "fa_roe"]},
        "star": {"dataset": "mnist", "scheme": "dpa_star", "k": [3], "d": [2], "certificates": ["dpa", "dpa_star_roe"]},
        "ss": {"dataset": "mnist", "scheme": "ssdpa", "learner": "rotnet", "k": [5]},
        "fr": {"dataset": "mnist", "scheme": "dpa", "learner": "frozen", "k": [6], "poison_check": 2},
        "tp": {"dataset": "mnist", "scheme": "bagging", "k": [30], "n_models": 4, "clean_classes": [0], "two_phase": True,
               "certificates": ["random_selection"]},
        "bag": {"dataset": "mnist", "scheme": "bagging", "k": [30], "n_models": 4, "certificates": ["bagging"]},
        "bin": {"dataset": "mnist", "scheme": "binomial", "k": [30], "n_models": 4, "certificates": ["random_selection"]},
        "km": {"dataset": "mnist17", "scheme": "binary_kmeans"},
    },
}


def _hostile(tag: str) -> tuple[str, Path]:
    """A data_root a shell would split and execute if unquoted; the file its $(...) would create."""
    marker = Path(f"/tmp/pwned_{tag}_{uuid.uuid4().hex}")
    return f"my data/$(touch {marker})`touch {marker}`;touch {marker} 'q\"", marker


def _dry_run_commands(snakemake, workdir: Path, config: dict) -> list[str]:
    cfg = workdir / "hostile.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = snakemake(workdir, "-n", "-p", "--cores", "1", "--configfile", cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    return [line.split("Shell command: ", 1)[1] for line in out.splitlines() if line.startswith("Shell command: poisoncert")]


_ROOT, _MARKER = _hostile("dry")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, snakemake):
    """One dry run of every rule with the hostile data_root (13 s): the printed commands and the workdir."""
    workdir = tmp_path_factory.mktemp("hostile")
    config = copy.deepcopy(_ALL_RULES)
    config["data_root"] = _ROOT
    return _dry_run_commands(snakemake, workdir, config), workdir


def test_every_rule_quotes_every_value(dry_run):
    """Each printed command parses as shell words, the hostile value arrives as one argument, and
    nothing inside it is executed."""
    commands, _ = dry_run
    verbs = {shlex.split(c)[1] for c in commands}
    expected = {"prepare", "partition", "extractor", "phase2", "train", "aggregate", "kmeans-scores", "certify", "poison-check",
                "report", "improvement", "delta-figure", "fa-gain", "selection-sizes", "running-time", "roe-methods", "paper-table"}
    assert expected <= verbs, expected - verbs
    roots = []
    for command in commands:
        words = shlex.split(command)  # a quoting mistake makes this raise or splits the value
        if "--root" in words:
            roots.append(words[words.index("--root") + 1])
        for w in words:
            assert "$(" not in w or w == _ROOT, (w, command)
    assert roots and set(roots) == {_ROOT}
    assert not _MARKER.exists()


def test_hostile_data_root_is_not_executed(dry_run):
    """The prepare command as the rule writes it, run by a shell: one clean line, nothing executed."""
    commands, workdir = dry_run
    command = next(c for c in commands if " prepare --dataset mnist " in c)
    (workdir / "results/logs/prepare").mkdir(parents=True, exist_ok=True)  # snakemake makes the log's folder
    proc = subprocess.run(["bash", "-c", command], cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=300)
    assert not _MARKER.exists()
    assert proc.returncode != 0
    log = (workdir / "results/logs/prepare/mnist.log").read_text().strip().splitlines()
    assert len(log) == 1 and log[0].startswith("poisoncert: error:") and "my data/$(touch" in log[0], log
