"""The paper configs (config/*.yaml) and their CI-scale digits twins (config/digits/*.yaml).

Every config validates against the schema; every paper config has a digits twin with the same
experiment names; experiments shared by name across configs describe the same ensembles; and a
Snakemake dry run builds the DAG of real paper configs (prepare does not run in a dry run, so the
missing MNIST / CIFAR-10 / GTSRB files do not matter).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from poisoncert.config import load_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
PAPER_PREFIXES = ("dpa_", "fa_", "roe_", "jia_", "chen_")
PAPER_CONFIGS = sorted(p for p in CONFIG.glob("*.yaml") if p.name.startswith(PAPER_PREFIXES))
#: real-data configs (not paper reproductions): Fashion-MNIST at the MNIST papers' scale on a CPU
REAL_CONFIGS = [CONFIG / "fashion_mnist.yaml"]
DIGITS_CONFIGS = sorted((CONFIG / "digits").glob("*.yaml"))
# keys that must agree between experiments of the same name in different configs (k, d and the
# certificates may differ: each config asks for the ensembles and certificates its table needs)
ENSEMBLE_KEYS = ("dataset", "scheme", "n_models", "clean_classes", "clean_count", "balance", "balance_size",
                 "offsets", "learner", "extractor", "head", "same_seed", "seed_base", "train", "two_phase")


def ids(p: Path) -> str:
    return f"{p.parent.name}/{p.name}"


def test_there_are_paper_configs():
    names = {p.name for p in PAPER_CONFIGS}
    for needed in ("dpa_table1_mnist.yaml", "dpa_table1_cifar10.yaml", "fa_table1_mnist.yaml", "fa_table1_cifar10.yaml",
                   "fa_table1_gtsrb.yaml", "jia_fig2.yaml", "jia_fig3.yaml"):
        assert needed in names
    assert any(n.startswith("roe_table") for n in names) and any(n.startswith("chen_fig4") for n in names)
    assert {p.name for p in CONFIG.glob("*.yaml")} == names | {p.name for p in REAL_CONFIGS}, "a config that is neither a paper's nor a real-data one"


@pytest.mark.parametrize("path", PAPER_CONFIGS + DIGITS_CONFIGS + REAL_CONFIGS, ids=ids)
def test_config_validates(path: Path):
    cfg = load_config_file(path)
    assert cfg["experiments"]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=ids)
def test_paper_config_header_and_settings(path: Path):
    text = path.read_text()
    header = text.split("\n", 1)[0]
    assert header.startswith("# Reproduces "), f"{path.name}: first line should say what it reproduces"
    assert "Expected cost" in text and "data_root" in text, f"{path.name}: header lacks data / cost"
    cfg = load_config_file(path)
    assert cfg["device"] == "cuda"
    for name, e in cfg["experiments"].items():
        assert e["dataset"] != "digits", f"{path.name}: {name} is not paper scale"
        t = e["train"]
        if e["scheme"] == "binary_kmeans":  # DPA App. B: no training, k = m
            assert e["k"] == [13007] and e["dataset"] == "mnist17", f"{path.name}: {name}"
            continue
        if path.name.startswith(("dpa_", "fa_", "roe_")) and e["learner"] == "supervised":
            assert t["arch"] == "nin" and t["epochs"] == 200 and t["batch_size"] == 128, f"{path.name}: {name}"
            assert t["lr_milestones"] == [60, 120, 160] and t["lr_gamma"] == 0.2 and t["crop_padding"] == 4
        if path.name.startswith("chen_"):
            assert t["arch"] == ("resnet18" if e["dataset"] == "cifar10" else "lenet") and e["balance"]
        if e["learner"] == "supervised":
            assert t["hflip"] == (e["dataset"] == "cifar10"), f"{path.name}: {name}: flips only on CIFAR-10"
        if e["learner"] == "rotnet":  # DPA 2.3.1 / 3: RotNet NiN extractor, conv2 maps, NiN-block heads (Gidaris' settings)
            x, h = e["extractor"], e["head"]
            assert (x["arch"], x["width"], x["n_blocks"], x["feature_block"]) == ("nin", 192, 4, 2), f"{path.name}: {name}"
            assert (x["epochs"], x["batch_size"], x["lr"], x["lr_schedule"], x["lr_milestones"], x["crop_pad"]) == (200, 128, 0.1, "step", [60, 120, 160], 4)
            hb = h["nin_block"]
            assert h["kind"] == "nin_block" and (hb["epochs"], hb["batch_size"], hb["lr"], hb["lr_milestones"], hb["crop_padding"]) == (100, 128, 0.1, [35, 70, 85], 4)
            assert x["hflip"] == hb["hflip"] == (e["dataset"] == "cifar10"), f"{path.name}: {name}: flips only on CIFAR-10"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=ids)
def test_paper_config_has_digits_twin(path: Path):
    twin = CONFIG / "digits" / path.name
    assert twin.exists(), f"no digits twin config/digits/{path.name}"
    paper, small = load_config_file(path), load_config_file(twin)
    assert list(small["experiments"]) == list(paper["experiments"])
    for name, e in small["experiments"].items():
        p = paper["experiments"][name]
        assert e["scheme"] == p["scheme"] and e["learner"] == p["learner"] and e["two_phase"] == p["two_phase"]
        assert e["certificates"] == p["certificates"] and len(e["d"]) == len(p["d"])
        if e["scheme"] == "binary_kmeans":  # DPA App. B: k = m of the binary twin dataset, no training
            assert e["dataset"] == "digits17" and p["dataset"] == "mnist17"
            continue
        assert e["dataset"] == "digits"
        assert max(e["k"]) <= 50 and e["train"]["arch"] == "small_cnn" and e["train"]["epochs"] <= 20
        assert e["n_models"] <= 100
    assert small["device"] == "cpu"


def test_every_digits_config_has_a_paper_config():
    assert {p.name for p in DIGITS_CONFIGS} == {p.name for p in PAPER_CONFIGS}


@pytest.mark.parametrize("folder", [CONFIG, CONFIG / "digits"], ids=["paper", "digits"])
def test_shared_experiment_names_describe_the_same_ensembles(folder: Path):
    """Configs reuse an experiment name only for the same ensembles, so a working directory shared by
    several configs trains each (experiment, k, d) once and never mixes two trainings in one folder."""
    seen: dict[str, tuple[str, dict]] = {}
    for path in sorted(folder.glob("*.yaml")):
        for name, e in load_config_file(path)["experiments"].items():
            key = {k: e[k] for k in ENSEMBLE_KEYS}
            if name in seen:
                first, other = seen[name]
                assert key == other, f"experiment {name}: {path.name} differs from {first}"
            else:
                seen[name] = (path.name, key)


def test_configs_are_plain_yaml_mappings():
    for path in PAPER_CONFIGS + DIGITS_CONFIGS:
        raw = yaml.safe_load(path.read_text())
        assert isinstance(raw, dict) and set(raw) >= {"device", "radii", "experiments"}, path.name


#: The papers' figures each config's DAG must draw (rule name), beyond the tables and per-experiment figures.
FIGURE_RULES = {
    "fa_table1_cifar10.yaml": ("fa_gain",),  # FA Fig. 4
    "roe_figures_cifar10.yaml": ("roe_methods", "fa_gain", "improvement"),  # ROE Figs. 2-3
    "chen_fig4_mnist17.yaml": ("selection_sizes",),  # Chen et al. Fig. 5
    "jia_fig3.yaml": ("running_time",),  # Jia et al. Fig. 3(c)
}


@pytest.mark.parametrize("name", ["roe_table3_gtsrb.yaml", "fa_table1_cifar10.yaml", "fashion_mnist.yaml", "roe_figures_cifar10.yaml",
                                  "chen_fig4_mnist17.yaml", "jia_fig3.yaml"])
def test_snakemake_dry_run_of_paper_config(tmp_path: Path, name: str, snakemake):
    proc = snakemake(tmp_path, "-n", "--configfile", CONFIG / name, "--cores", "1", timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    cfg = load_config_file(CONFIG / name)
    for exp in cfg["experiments"]:
        assert f"results/{exp}/" in out, f"dry run of {name} plans no job for {exp}"
    for rule in ("prepare", "partition", "train", "aggregate", "certify", "report") + FIGURE_RULES.get(name, ()):
        assert rule in out, f"dry run of {name} has no {rule} job"
    if name == "roe_figures_cifar10.yaml":  # one figure per k of ROE Figs. 2 (k = 250) and 3 (k = 50)
        assert "results/compare/cifar10/roe_methods_k250.png" in out and "results/compare/cifar10/roe_methods_k50.png" in out


@pytest.mark.parametrize("path", DIGITS_CONFIGS + REAL_CONFIGS + [REPO / "config.yaml"], ids=ids)
def test_cpu_configs_keep_the_light_semisupervised_learner(path: Path):
    """The digits twins, Fashion-MNIST and the default config run SS-DPA with the light CPU learner
    (light RotNet, cosine schedule, no crops, logistic heads): the learner their README numbers came from."""
    for name, e in load_config_file(path)["experiments"].items():
        if e["learner"] == "rotnet":
            x = e["extractor"]
            assert (x["arch"], x["lr_schedule"], x["crop_pad"], e["head"]["kind"]) == ("light", "cosine", 0, "logistic"), f"{path.name}: {name}"
