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
                "report", "figure", "paper-table"}
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


# ---- sizes: bounded by the schema, or refused at validation with one line ----------------------

from poisoncert.config import load_schema, validate_config  # noqa: E402
from poisoncert.errors import PoisonCertError  # noqa: E402
from poisoncert.limits import MAX_MODELS, MAX_TRAIN_JOBS  # noqa: E402


def _integer_fields(node, path="") -> list[tuple[str, dict]]:
    """Every integer-typed schema node (properties, items, $defs), with where it is."""
    out = []
    if isinstance(node, dict):
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "integer" in types:
            out.append((path, node))
        for key, sub in node.items():
            if key in ("properties", "$defs"):
                for name, child in sub.items():
                    out += _integer_fields(child, f"{path}.{name}")
            elif key in ("items", "additionalProperties"):
                out += _integer_fields(sub, f"{path}[]")
    return out


def test_every_integer_field_has_an_upper_bound():
    fields = _integer_fields(load_schema())
    assert len(fields) > 40
    unbounded = [path for path, node in fields if "maximum" not in node and "exclusiveMaximum" not in node]
    assert unbounded == []
    for path, node in _integer_fields(load_schema()):
        if path.endswith("[]") and path.rsplit(".", 1)[-1] in ("radii[]", "k[]", "d[]"):
            continue


def _digits(**exp) -> dict:
    return {"experiments": {"e": {"dataset": "digits", "scheme": "dpa", "k": [3], **exp}}}


@pytest.mark.parametrize("config, key", [
    (_digits(train={"group_size": 100000}), "experiments.e.train.group_size"),  # was: OOM-killed, empty log
    (_digits(train={"batch_size": 100000000}), "experiments.e.train.batch_size"),  # was: OOM-killed
    ({"shard_size": 5000, "experiments": {"e": {"dataset": "mnist", "scheme": "dpa", "k": [6000], "train": {"group_size": 0}}}},
     "experiments.e.train.group_size"),  # 0 = the whole shard: 5,000 models in one group
    (_digits(train={"batch_size": 5000}), "experiments.e.train.batch_size"),  # more than digits' 1,437 training images
    ({**_digits(), "radii": [0, 1000000000]}, "radii[1]"),  # was: certify allocated 7.45 GiB
    ({"experiments": {"e": {"dataset": "digits", "scheme": "bagging", "k": [30], "n_models": 100000000}}}, "experiments.e.n_models"),
    ({"experiments": {"e": {"dataset": "mnist", "scheme": "dpa_star", "k": [1000], "d": [1000]}}}, "experiments.e.k x d"),
    ({"experiments": {"e": {"dataset": "mnist", "scheme": "bagging", "k": [50000], "n_models": 50000}}}, "experiments.e.n_models"),
    ({"shard_size": 1, "experiments": {"e": {"dataset": "mnist", "scheme": "dpa", "k": [50000, 60000]}}}, "config: 110000 train jobs"),
    (_digits(epochs=1, learner="frozen", extractor={"batch_size": 100000}), None),  # unknown key 'epochs' first: any one line
    ({"experiments": {"e": {"dataset": "digits", "scheme": "ssdpa", "learner": "rotnet", "k": [3], "extractor": {"batch_size": 2000}}}},
     "experiments.e.extractor.batch_size"),
    ({"experiments": {"e": {"dataset": "digits", "scheme": "bagging", "k": [30], "clean_count": 5000, "certificates": ["random_selection"]}}},
     "experiments.e.clean_count"),
    ({**_digits(), "shard_size": 10**9}, "shard_size"),
    (_digits(seed_base=2**63), "experiments.e.seed_base"),
    (_digits(poison_check=10**9), "experiments.e.poison_check"),
])
def test_sizes_are_refused_with_one_line(config, key):
    with pytest.raises(PoisonCertError) as info:
        validate_config(config)
    message = str(info.value)
    assert "\n" not in message
    if key is not None:
        assert (f"config key {key}" in message) or message.startswith(key), message


def test_group_size_0_is_fine_where_the_shard_is_small():
    validate_config({**_digits(train={"group_size": 0}), "shard_size": 5000})  # 3 models: one group of 3


def test_the_bounds_sit_above_the_papers():
    """FA k = 1200, d = 32: 38,400 models in one ensemble, 68,400 in config/fa_table1_mnist.yaml (every
    shipped config validates under these bounds: tests/test_reruns.py validates each one)."""
    assert MAX_MODELS >= 38_400 and MAX_TRAIN_JOBS >= 68_400


def test_huge_n_models_stops_snakemake_dry_run_at_once(tmp_path, snakemake):
    """n_models: 1e8 made `snakemake -n` grow past 8 GB; now one line before the DAG is built."""
    import resource

    cfg = tmp_path / "big.yaml"
    cfg.write_text(yaml.safe_dump({"experiments": {"e": {"dataset": "digits", "scheme": "bagging", "k": [30], "n_models": 100000000}}}))
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", cfg, timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("poisoncert")]
    assert lines == ["poisoncert: invalid config: config key experiments.e.n_models: 100000000 is greater than the maximum of 100000 "
                     "(Number of base models T (N in Jia et al)"], proc.stderr[-2000:]
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 4 * 2**20  # kB: well under 4 GB


@pytest.mark.parametrize("args", [
    ["--scheme", "bagging", "--k", "1000", "--n-models", "1000000"],  # 1e6 models
    ["--scheme", "bagging", "--k", "100000", "--n-models", "10000"],  # 1e9 indices
    ["--scheme", "dpa_star", "--k", "1000", "--d", "1000"],
])
def test_partition_command_line_is_bounded_too(tmp_path, capsys, args):
    """The partition stage's own flags (a user's command line, not only the workflow's config)."""
    from poisoncert import cli

    rc = cli.main(["partition", "--dataset-file", str(tmp_path / "none.npz"), "--out", str(tmp_path / "p.npz"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "at most" in err[0], err
    assert list(tmp_path.iterdir()) == []
