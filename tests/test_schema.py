"""One source for the config: the schema's generated parts and docs/config.md are their generators' output.

The settings dataclasses (fields with doc and bounds, :func:`poisoncert.schema.param`) and the
registry generate the schema's settings blocks and enums; ``poisoncert check-config --describe``
renders the config reference from the schema. Each check is also shown to fire on a planted drift.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from poisoncert import schema
from poisoncert.config import SCHEMA_PATH, load_schema

DOCS_CONFIG = SCHEMA_PATH.parents[3] / "docs" / "config.md"


def test_committed_schema_is_its_generated_version():
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    assert schema.render(text) == text, (
        f"{SCHEMA_PATH} differs from its generated parts: edit the dataclass or the registry (not a generated block), "
        "then run python -m poisoncert.schema --write"
    )
    assert text.count("# generated: ") == len(schema.SECTIONS) + len(schema.ENUMS)


def test_render_restores_a_hand_edited_block_and_enum():
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    drifted = text.replace("default: small_cnn", "default: mlp", 1).replace("enum: [digits, ", "enum: [", 1)
    assert drifted != text
    assert schema.render(drifted) == text


def test_the_schema_defaults_are_the_dataclass_instances():
    from poisoncert.learners.heads import HeadConfig
    from poisoncert.train import TrainConfig

    s = load_schema()
    train = s["$defs"]["train"]["properties"]
    assert {k: v["default"] for k, v in train.items()} == {
        f.name: list(getattr(TrainConfig(), f.name)) if isinstance(getattr(TrainConfig(), f.name), tuple) else getattr(TrainConfig(), f.name)
        for f in dataclasses.fields(TrainConfig) if f.metadata.get("in_schema", True)
    }
    head = s["$defs"]["experiment"]["properties"]["head"]["properties"]
    assert head["linear"]["properties"]["batch_size"]["default"] == HeadConfig().linear.batch_size == 512  # nested defaults
    assert head["nin_block"]["properties"]["batch_size"]["default"] == HeadConfig().nin_block.batch_size == 128


def test_a_config_field_needs_its_doc():
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        n: int = schema.param(1)

    with pytest.raises(TypeError, match="needs its doc"):
        schema.object_properties(Undocumented)


def test_docs_config_page_is_the_generated_reference():
    expected = schema.describe(load_schema())
    assert DOCS_CONFIG.read_text(encoding="utf-8") == expected, (
        "docs/config.md is out of date: run `poisoncert check-config --describe > docs/config.md`"
    )
    assert "`experiments.<name>.train.group_size`" in expected and "`experiments.<name>.head.linear.lr`" in expected


def test_docs_config_check_fires_on_a_schema_change():
    s = load_schema()
    s["$defs"]["train"]["properties"]["epochs"]["default"] = 31
    assert schema.describe(s) != DOCS_CONFIG.read_text(encoding="utf-8")


def test_check_config_describe_prints_the_reference():
    proc = subprocess.run([sys.executable, "-m", "poisoncert", "check-config", "--describe"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == schema.describe(load_schema())
    both = subprocess.run([sys.executable, "-m", "poisoncert", "check-config", "x.yaml", "--describe"], capture_output=True, text=True, timeout=120)
    assert both.returncode != 0 and len(both.stderr.strip().splitlines()) == 1


def test_schema_module_check_mode(tmp_path, monkeypatch):
    """``python -m poisoncert.schema`` (no --write) exits 1 on a drifted file and 0 once written."""
    path = tmp_path / "config.schema.yaml"
    path.write_text(SCHEMA_PATH.read_text(encoding="utf-8").replace("default: small_cnn", "default: mlp", 1), encoding="utf-8")
    monkeypatch.setattr("poisoncert.config.SCHEMA_PATH", path)
    assert schema.main([]) == 1
    assert schema.main(["--write"]) == 0 and schema.main([]) == 0
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == load_schema()


def test_certify_flags_and_radii_have_one_source(tmp_path):
    """``poisoncert certify`` takes its flags from registry.FLAGS and its default radii from the schema."""
    import argparse
    import json

    import numpy as np

    from poisoncert import registry
    from poisoncert.cli import main
    from poisoncert.scores import write_scores
    from poisoncert.stages import certify as stage

    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    options = {opt for action in parser._actions for opt in action.option_strings}
    assert set(registry.FLAGS.values()) <= options
    assert {**stage.ENSEMBLE_FLAGS, **stage.PARAMETER_FLAGS} == {f.lstrip("-").replace("-", "_"): k for k, f in registry.FLAGS.items()}
    scores = np.zeros((3, 5, 2), np.float32)
    scores[:, :, 0] = 1
    write_scores(tmp_path / "s.npz", scores, np.array([0, 0, 1]), {"scheme": "dpa"})
    out = tmp_path / "o.json"
    assert main(["certify", str(tmp_path / "s.npz"), "--certificate", "dpa", "--out-csv", str(tmp_path / "o.csv"), "--out-json", str(out)]) in (0, None)
    radii = [int(r) for r in json.loads(out.read_text())["certified_accuracy"]]
    assert radii == load_schema()["properties"]["radii"]["default"]


def test_certificate_parameter_defaults_are_the_schemas():
    from poisoncert import registry

    experiment = load_schema()["$defs"]["experiment"]["properties"]
    assert registry.PARAMETER_DEFAULTS == {"alpha": experiment["alpha"]["default"], "poisoning_model": experiment["poisoning_model"]["default"],
                                           "n_clean": experiment["clean_count"]["default"]}
