"""Issue 20, "Reruns follow key order, not values": the rules' params (Snakemake's rerun triggers)
are a canonical function of the resolved config, so an equivalent config reruns nothing; the
shipped configs keep the triggers they had (no retraining of existing ensembles); the profiles
rerun incomplete jobs themselves."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from poisoncert.config import load_schema, validate_config
from poisoncert.partition import default_fa_offsets

_EXTRACTOR = {"arch": "light", "width": 8, "n_blocks": 3, "epochs": 1, "batch_size": 64, "lr_schedule": "cosine", "crop_pad": 0}

#: name -> (an experiment, the same experiment written another way)
EQUIVALENT = {
    "lr": ({"dataset": "digits", "scheme": "dpa", "k": [3], "train": {"epochs": 3}},
           {"dataset": "digits", "scheme": "dpa", "k": [3], "train": {"lr": 0.05, "epochs": 3}}),  # 0.05 is the default
    "aug": ({"dataset": "digits", "scheme": "dpa", "k": [3], "train": {"epochs": 2}},
            {"dataset": "digits", "scheme": "dpa", "k": [3], "train": {"augment": "none", "epochs": 2}}),
    "int": ({"dataset": "digits", "scheme": "dpa", "k": [3], "train": {"lr": 1.0, "lr_milestones": [2, 5]}},
            {"k": [3], "train": {"lr_milestones": [5, 2], "lr": 1}, "scheme": "dpa", "dataset": "digits"}),
    "fa": ({"dataset": "digits", "scheme": "fa", "k": [3], "d": [4]},
           {"dataset": "digits", "scheme": "fa", "k": [3], "d": [4], "offsets": sorted(default_fa_offsets(3, 4), reverse=True)}),
    "ss": ({"dataset": "digits", "scheme": "ssdpa", "learner": "rotnet", "k": [3], "extractor": _EXTRACTOR, "head": {"kind": "logistic"}},
           {"dataset": "digits", "scheme": "ssdpa", "learner": "rotnet", "k": [3], "head": {"logistic": {"steps": 200}, "kind": "logistic"},
            "extractor": dict(reversed(list({**_EXTRACTOR, "seed": 0, "feature_block": 2}.items())))}),
}


def _config(which: int) -> dict:
    return {"experiments": {name: copy.deepcopy(pair[which]) for name, pair in EQUIVALENT.items()}}


def test_equivalent_configs_validate_to_one_canonical_config():
    a, b = validate_config(_config(0)), validate_config(_config(1))
    for name in EQUIVALENT:
        ea, eb = a["experiments"][name], b["experiments"][name]
        if name == "fa":  # explicit offsets stay in the config; the rules treat the default set as null
            ea, eb = {**ea, "offsets": None}, {**eb, "offsets": None}
        assert json.dumps(ea) == json.dumps(eb), name


def test_the_canonical_form_keeps_the_shipped_configs_train_triggers(repo_root):
    """The shipped configs' train settings dump as before (user keys, then the schema's defaults), so
    this change retrains none of their ensembles."""
    defaults = {k: v["default"] for k, v in load_schema()["$defs"]["train"]["properties"].items()}
    n = 0
    for path in [repo_root / "config.yaml", *sorted((repo_root / "config").rglob("*.yaml"))]:
        raw = yaml.safe_load(path.read_text())
        cfg = validate_config(copy.deepcopy(raw))
        for name, exp in cfg["experiments"].items():
            given = raw["experiments"][name].get("train", {})
            before = {**given, **{k: v for k, v in defaults.items() if k not in given}}
            assert json.dumps(exp["train"]) == json.dumps(before), (path.name, name)
            n += 1
    assert n > 100


def _printed_commands(snakemake, workdir: Path, config: dict) -> dict[str, str]:
    cfg = workdir / "c.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workdir, "-n", "-p", "--cores", "1", "--configfile", cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("Shell command: poisoncert"):
            command = line.split(": ", 1)[1]
            words = shlex.split(command)
            flags = [i for i, w in enumerate(words) if w.startswith("--out")]
            if flags:  # keyed by the job's first output
                out[words[flags[0] + 1]] = command
    return out


def test_equivalent_configs_print_the_same_commands(tmp_path, snakemake):
    """Every job's command line (its params: the rerun triggers) is the same for both spellings:
    no retraining (train, partition, extractor) and no re-aggregation (aggregate's experiment JSON).
    One dry run holds both spellings, as experiments a_NAME and b_NAME."""
    config = {"experiments": {f"{side}_{name}": copy.deepcopy(pair[i]) for name, pair in EQUIVALENT.items() for i, side in enumerate("ab")}}
    commands = _printed_commands(snakemake, tmp_path, config)
    names = re.compile(r"\bb_(" + "|".join(EQUIVALENT) + r")\b")
    a = {out: c for out, c in commands.items() if "/a_" in out}
    b = {names.sub(r"a_\1", out): names.sub(r"a_\1", c) for out, c in commands.items() if "/b_" in out}
    assert a.keys() == b.keys() and len(a) > 10
    verbs = set()
    for out, command in a.items():
        verbs.add(shlex.split(command)[1])
        assert command == b[out], (out, command, b[out])
    assert {"partition", "train", "extractor", "aggregate"} <= verbs
    assert not any(re.search(r"--offsets", c) for c in commands.values())


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_rerun_incomplete_jobs(repo_root, profile):
    """Every output is written atomically, so a job a hard kill left incomplete can just run again."""
    settings = yaml.safe_load((repo_root / "profiles" / profile / "config.yaml").read_text())
    assert settings.get("rerun-incomplete") is True
