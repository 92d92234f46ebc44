import subprocess
import sys

import pytest
import yaml

from poisoncert.config import ensembles, load_config_file, load_schema, validate_config
from poisoncert.errors import PoisonCertError


def _exp(**kw):
    base = {"dataset": "digits", "scheme": "dpa", "k": [10]}
    base.update(kw)
    return {"experiments": {"e": base}}


def test_default_config_is_valid_and_filled(repo_root):
    cfg = load_config_file(repo_root / "config.yaml")
    exp = cfg["experiments"]["dpa_digits"]
    assert len(exp["k"]) >= 3
    assert exp["train"]["batch_size"] >= 1 and exp["d"] == [1]
    dpa = [e for e in ensembles(cfg) if e["exp"] == "dpa_digits"]
    assert [e["n_models"] for e in dpa] == exp["k"]
    schemes = {e["scheme"] for e in cfg["experiments"].values()}
    assert schemes == {"dpa", "ssdpa", "fa", "dpa_star", "bagging", "binomial", "binary_kmeans"}  # every scheme on digits(17)
    bag = [e for e in ensembles(cfg) if e["scheme"] == "bagging"]
    assert bag[0]["n_models"] == cfg["experiments"]["bagging_digits"]["n_models"]


def test_every_schema_key_has_description_and_default():
    schema = load_schema()

    def walk(node, path, required=()):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub or "$ref" in sub, f"{path}.{key} has no description"
            if key not in required and "$ref" not in sub:
                assert "default" in sub, f"{path}.{key} has no default"
            walk(sub, f"{path}.{key}", sub.get("required", ()))

    walk(schema, "", schema.get("required", ()))
    for name, sub in schema["$defs"].items():
        walk(sub, name, sub.get("required", ()))


@pytest.mark.parametrize(
    "cfg,match",
    [
        (_exp(k=[0]), r"experiments\.e\.k\[0\]: 0 is less than the minimum of 1"),
        (_exp(dataset="imagenet"), r"experiments\.e\.dataset: 'imagenet' is not allowed; choose one of digits"),
        (_exp(k=[5000]), r"k=5000 is larger than the digits training set \(1438 samples\)"),
        (_exp(scheme="fa", k=[100], d=[20]), r"k\*d=2000 is larger"),
        (_exp(d=[0]), r"d\[0\]: 0 is less than the minimum"),
        (_exp(scheme="dpa", d=[2]), "scheme 'dpa' has no d"),
        (_exp(certificates=["fa"]), "fa cannot certify a 'dpa' ensemble"),
        (_exp(train={"arch": "vgg"}), r"train\.arch: 'vgg' is not allowed"),
        (_exp(train={"epochs": 0}), r"train\.epochs"),
        (_exp(typo=1), r"unknown key\(s\) 'typo'"),
        ({"experiments": {"bad name": {"dataset": "digits", "scheme": "dpa", "k": [2]}}}, "experiment name"),
        ({**_exp(), "shard_size": 0}, "shard_size"),
        (_exp(scheme="fa", d=[2], offsets=[1, 1]), "distinct"),
        (_exp(dataset="gtsrb48", poison_check=2), r"poison_check: dataset 'gtsrb48' is partitioned by its original images' pixel sums"),
        (_exp(scheme="fa", learner="simclr"), "learner: simclr is for schemes ssdpa and dpa, not 'fa'"),
        (_exp(learner="rotnet", extractor={"arch": "resnet18"}), "extractor.arch: learner rotnet trains a nin or light extractor, not 'resnet18'"),
        (_exp(learner="simclr", extractor={"arch": "nin"}), "extractor.arch: learner simclr trains a resnet18 extractor"),
        (_exp(learner="rotnet", extractor={"arch": "light"}, head={"kind": "nin_block"}), "head.kind: nin_block needs the feature maps"),
        (_exp(learner="rotnet", head={"kind": "svm"}), r"head\.kind: 'svm' is not allowed"),
        (_exp(learner="rotnet", head={"nin_block": {"epochs": 0}}), r"head\.nin_block\.epochs"),
        (_exp(learner="rotnet", extractor={"lr_schedule": "linear"}), r"extractor\.lr_schedule: 'linear' is not allowed"),
    ],
)
def test_bad_config_is_one_clear_line(cfg, match):
    with pytest.raises(PoisonCertError, match=match) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)


def test_cli_check_config_reports_error_without_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_exp(k=[0])))
    proc = subprocess.run([sys.executable, "-m", "poisoncert", "check-config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("poisoncert: error: config key experiments.e.k[0]")
    assert "Traceback" not in proc.stderr


def test_learner_defaults_fill_the_extractor_before_the_schema():
    """learner simclr's own extractor defaults (registry.SIMCLR_DEFAULTS) where the config is silent;
    the schema's (RotNet's) for the rest; what the config says wins."""
    from poisoncert import registry
    from poisoncert.learners.extractors import ExtractorConfig
    from poisoncert.learners.heads import HeadConfig

    x = validate_config(_exp(learner="simclr"))["experiments"]["e"]["extractor"]
    assert {k: x[k] for k in registry.SIMCLR_DEFAULTS} == registry.SIMCLR_DEFAULTS
    assert x["temperature"] == 0.5 and ExtractorConfig(**x).learner == "simclr"
    y = validate_config(_exp(learner="simclr", extractor={"epochs": 3, "hflip": True}))["experiments"]["e"]["extractor"]
    assert y["epochs"] == 3 and y["hflip"] and y["arch"] == "resnet18"
    r = validate_config(_exp(learner="rotnet"))["experiments"]["e"]
    assert ExtractorConfig(**r["extractor"]) == ExtractorConfig()  # the paper's RotNet
    assert HeadConfig.from_dict(r["head"]) == HeadConfig() and HeadConfig().resolved("nin") == "nin_block"
