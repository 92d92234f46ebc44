"""The Snakemake workflow itself: dry runs of the configs, and a tiny end-to-end run."""

import copy
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

def test_default_config_dry_run(repo_root, tmp_path, snakemake):
    shutil.copy(repo_root / "config.yaml", tmp_path / "config.yaml")
    proc = snakemake(tmp_path, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for rule in ("prepare", "partition", "train", "aggregate", "certify", "report"):
        assert f"rule {rule}:" in out or f"{rule} " in out


def test_bad_config_stops_before_any_job(repo_root, tmp_path, snakemake):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"experiments": {"x": {"dataset": "digits", "scheme": "dpa", "k": [0]}}}))
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if "poisoncert" in l]
    assert lines == ["poisoncert: invalid config: config key experiments.x.k[0]: 0 is less than the minimum of 1"]
    assert "Traceback" not in proc.stderr


_EXTRACTOR = {"arch": "light", "epochs": 1, "width": 8, "n_blocks": 3, "batch_size": 64, "lr_schedule": "cosine", "crop_pad": 0}
# besides conftest's tiny DPA experiment (with a poison check here): one experiment per other scheme / learner
_MORE = {
    "tinyfa": {"dataset": "digits", "scheme": "fa", "k": [3], "d": [2], "certificates": ["fa", "fa_roe"], "train": {"epochs": 1}},
    "tinyss": {"dataset": "digits", "scheme": "ssdpa", "learner": "rotnet", "k": [5], "head": {"kind": "logistic"}, "extractor": _EXTRACTOR},
    "tinybag": {"dataset": "digits", "scheme": "bagging", "k": [30], "n_models": 4, "certificates": ["bagging", "random_selection"], "train": {"epochs": 1}},
    "tinyfrozen": {"dataset": "digits", "scheme": "dpa", "learner": "frozen", "k": [6], "poison_check": 2, "extractor": _EXTRACTOR},
}


@pytest.mark.slow
def test_end_to_end_tiny_workflow(repo_root, tmp_path, snakemake, tiny_config):
    tiny = copy.deepcopy(tiny_config)
    tiny["experiments"]["tiny"]["poison_check"] = 2
    tiny["experiments"].update(copy.deepcopy(_MORE))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny))
    proc = snakemake(tmp_path, "--cores", "2", "--configfile", str(cfg))
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = tmp_path / "results"
    from poisoncert import certify
    from poisoncert.data import read_dataset
    from poisoncert.partition import read_partitions
    from poisoncert.scores import read_scores

    ds = read_dataset(res / "data" / "digits.npz")
    for k in (4, 7):
        d = res / "tiny" / f"k{k}_d1"
        scores, labels, meta = read_scores(d / "scores.npz")
        assert scores.shape == (len(ds.test_labels), k, 10) and scores.dtype == np.float32
        assert np.array_equal(labels, ds.test_labels)
        assert meta["k"] == k and meta["scheme"] == "dpa" and meta["shard_size"] == 3 and meta["device"] == "cpu"
        parts, _ = read_partitions(d / "partitions.npz")
        assert meta["partition_sizes"] == parts.sizes().tolist()
        # the certificate file is the certificate of the scores file, recomputed here
        table = pd.read_csv(d / "certificates" / "dpa.csv")
        cert = certify.dpa(scores)
        assert np.array_equal(table["prediction"].to_numpy(), cert.prediction)
        assert np.array_equal(table["radius"].to_numpy(), cert.radius)
        summary = json.loads((d / "certificates" / "dpa.json").read_text())
        assert summary["clean_accuracy"] == pytest.approx(float((cert.prediction == labels).mean()))
        assert summary["mean_base_accuracy"] > 0.3  # two epochs already learn something on digits
    report = pd.read_csv(res / "tiny" / "report" / "table.csv")
    assert sorted(report["k"].tolist()) == [4, 7]
    assert {"clean_accuracy", "mean_base_accuracy", "median_certified_radius", "cert_acc@2"} <= set(report.columns)
    for f in ("certified_accuracy.png", "certified_accuracy.pdf", "table.md"):
        assert (res / "tiny" / "report" / f).stat().st_size > 0
    # the other certificates ran on their ensembles, with their units
    fa = json.loads((res / "tinyfa" / "k3_d2" / "certificates" / "fa_roe.json").read_text())
    assert fa["n_models"] == 6 and fa["unit"] == "insertions+deletions"
    bag = json.loads((res / "tinybag" / "k30_d1" / "certificates" / "random_selection.json").read_text())
    assert bag["n_models"] == 4 and bag["unit"] != "insertions+deletions"
    pc = json.loads((res / "tiny" / "k7_d1" / "poison_check.json").read_text())
    assert pc["attacked"] >= 1 and pc["held"] == pc["attacked"]
    # issue 16's frozen learner on DPA hash partitions: label flips, and the workflow's poison check retrains it
    fz = json.loads((res / "tinyfrozen" / "k6_d1" / "certificates" / "dpa.json").read_text())
    assert fz["unit"] == "label flips" and fz["mean_base_accuracy"] > 0.3
    pc = json.loads((res / "tinyfrozen" / "k6_d1" / "poison_check.json").read_text())
    assert pc["attacked"] >= 1 and pc["held"] == pc["attacked"]
    ss = json.loads((res / "tinyss" / "k5_d1" / "certificates" / "dpa.json").read_text())
    assert ss["unit"] == "label flips" and ss["mean_base_accuracy"] > 0.3
    assert (res / "tinyss" / "extractor.pt").exists()
    # every rule wrote its log
    assert (res / "logs" / "train" / "tiny" / "k7_d1" / "shard2.log").exists()
    # reruns follow what can change the bits, and nothing else
    def dry(cfg_dict):
        path = tmp_path / "rerun.yaml"
        path.write_text(yaml.safe_dump(cfg_dict))
        proc = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    assert "Nothing to be done" in dry(tiny)
    assert "Nothing to be done" in dry({**tiny, "data_root": "elsewhere", "download": True, "device": "cpu"})  # digits reads no files; auto = cpu here
    out = dry({**tiny, "train_threads": 2})  # the thread count can change the bits
    planned = {line.split()[0] for line in out.splitlines() if re.match(r"^[a-z_]+\s+\d+$", line)}  # the "Job stats" table
    assert "train" in planned and "prepare" not in planned and "partition" not in planned, out[-3000:]
