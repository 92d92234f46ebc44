"""One place per concept (issue 24): records carry behaviour, nothing outside them branches on a name.

* no module of the package, no rule file branches on a scheme's name: a grep over the sources,
  itself shown to catch a planted branch;
* a figure registered from this file alone becomes a workflow target and renders through
  ``poisoncert figure``, and a learner registered from this file alone trains through the train
  stage's dispatch (its module, its record, its test: nothing else to touch);
* the figure targets of the shipped configs are what the figure records decide.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poisoncert import cli, figures, paths, registry
from poisoncert.config import load_config_file

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "workflow" / "poisoncert"
#: the record modules: the registry and the modules whose functions its records carry
RECORD_MODULES = {"registry.py", "figures.py", "splits.py"}
#: the maths package names Chen's three selection distributions in the paper's own vocabulary
#: (``certify.selection.SCHEMES``, with aliases); the records call it with the scheme's name
MATHS = PACKAGE / "certify"


def name_branches(text: str, names) -> list[str]:
    """Lines that compare with one of ``names`` (``== "dpa"``, ``!= 'fa'``, ``in ("dpa", ...)``)."""
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    quoted = rf"""["'](?:{alt})["']"""
    patterns = [
        rf"[=!]=\s*{quoted}",
        rf"{quoted}\s*[=!]=",
        rf"\bin\s*[\(\[\{{]\s*{quoted}",
        rf"\bin\s*[\(\[\{{][^\)\]\}}]*,\s*{quoted}",
    ]
    rx = re.compile("|".join(patterns))
    return [line.strip() for line in text.splitlines() if rx.search(line) and not line.lstrip().startswith(("#", ">>>"))]


def _sources():
    files = [p for p in PACKAGE.rglob("*.py") if (p.name not in RECORD_MODULES or p.parent != PACKAGE) and MATHS not in p.parents]
    return files + sorted((ROOT / "rules").glob("*.smk")) + [ROOT / "Snakefile"]


def test_no_module_branches_on_a_scheme_or_learner_name():
    names = set(registry.SCHEMES) | set(registry.LEARNERS)
    found = {str(p.relative_to(ROOT)): hits for p in _sources() if (hits := name_branches(p.read_text(), names))}
    assert not found, found


def test_the_name_check_catches_a_planted_branch():
    planted = ['if scheme == "fa":', "    x = 1 if s['scheme'] != 'dpa_star' else 2", 'elif exp["scheme"] in ("dpa", "ssdpa"):',
               'ok = name in ["bagging_wor"]', 'if "binomial" == scheme:']
    assert len(name_branches("\n".join(planted), registry.SCHEMES)) == len(planted)
    assert name_branches('registry.scheme(exp["scheme"]).uses_d\n# if scheme == "fa"', registry.SCHEMES) == []


# ---------------------------------------------------------------------------------------------- figures


def _plot_toy(inputs, outputs, wildcards, title):
    Path(outputs["txt"]).write_text(f"{title}: {len(inputs.get('summaries', []))} summaries\n")


@pytest.fixture
def toy_figure():
    fig = figures.register(figures.Figure(
        "toy", "a toy figure, registered by a test", "results/{exp}/report/toy", _plot_toy,
        applies=lambda cfg: [{"exp": n} for n, e in cfg["experiments"].items() if registry.scheme(e["scheme"]).uses_d],
        inputs=lambda cfg, w: {"summaries": paths.certificate_summaries(cfg, w["exp"])},
        formats=("txt",), title="{exp}: toy",
    ))
    yield fig
    del figures.FIGURES["toy"]


def test_a_figure_registered_from_a_test_is_a_target_and_renders(toy_figure, tmp_path):
    cfg = load_config_file(ROOT / "config.yaml")
    targets = paths.all_targets(cfg)
    with_d = [n for n, e in cfg["experiments"].items() if registry.scheme(e["scheme"]).uses_d]
    assert with_d and all(f"results/{n}/report/toy.txt" in targets for n in with_d)
    assert not any(t.endswith("toy.txt") and t.split("/")[1] not in with_d for t in targets)
    out = tmp_path / "toy.txt"
    assert cli.main(["figure", "toy", "--in", "summaries=a.json", "--in", "summaries=b.json", "--out", f"txt={out}", "--set", "exp=fa_digits"]) == 0
    assert out.read_text() == "fa_digits: toy: 2 summaries\n"


def test_figure_cli_refuses_a_missing_output_or_unknown_figure(tmp_path, capsys):
    assert cli.main(["figure", "no_such_figure", "--out", f"png={tmp_path / 'a.png'}"]) == 2
    assert "unknown figure 'no_such_figure'" in capsys.readouterr().err
    assert cli.main(["figure", "improvement", "--out", f"png={tmp_path / 'a.png'}", "--set", "exp=x"]) == 2
    assert "give --out pdf=PATH" in capsys.readouterr().err


def test_default_config_figure_targets():
    """The default config's figures as the hand-written target list had them (107 jobs, README)."""
    cfg = load_config_file(ROOT / "config.yaml")
    got = {f for f in figures.targets(cfg) if f.endswith(".png")}
    assert got == {
        "results/dpa_digits/report/improvement_over_dpa.png", "results/fa_digits/report/improvement_over_dpa.png",
        "results/dpa_star_digits/report/improvement_over_dpa.png", "results/fa_digits/report/fa_theorem2_vs_dpa.png",
        "results/binomial_digits/report/selection_sizes_k50_d1.png", "results/bagging_digits/report/running_time.png",
        "results/figures/chen_fig2_delta.png", "results/compare/digits/roe_methods_k25.png",
    }


def test_improvement_and_roe_applicability_follow_the_records():
    """has_improvement is improvement_pairs on the planned summaries; the ROE figure needs all three schemes."""
    from poisoncert.report import has_improvement, roe_figure_ks

    assert has_improvement({"k": [5], "d": [1], "certificates": ["dpa", "dpa_roe"]})
    assert not has_improvement({"k": [5], "d": [1], "certificates": ["dpa"]})
    assert has_improvement({"k": [5], "d": [1], "certificates": ["fa", "fa_roe"]})
    assert not has_improvement({"k": [5], "d": [4], "certificates": ["fa", "fa_roe"]})
    exps = {"a": {"dataset": "digits", "scheme": "dpa", "learner": "supervised", "k": [5], "d": [1], "certificates": ["dpa", "dpa_roe"]},
            "b": {"dataset": "digits", "scheme": "fa", "learner": "supervised", "k": [5], "d": [1, 2], "certificates": ["fa", "fa_roe"]},
            "c": {"dataset": "digits", "scheme": "dpa_star", "learner": "supervised", "k": [5], "d": [2], "certificates": ["dpa", "dpa_star_roe"]}}
    assert roe_figure_ks(exps, "digits") == [5]
    assert roe_figure_ks({**exps, "b": {**exps["b"], "d": [2]}}, "digits") == []  # no FA d = 1 baseline
    assert roe_figure_ks({**exps, "a": {**exps["a"], "learner": "rotnet"}}, "digits") == []  # label flips only


def test_scheme_records_partition_as_before():
    """The scheme records' split rules give the partitions the papers define (spot checks beside test_partition)."""
    import numpy as np

    from poisoncert.partition import make_partitions

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 1, 3, 3), dtype=np.uint8)
    y = rng.integers(0, 3, size=60)
    h = x.reshape(60, -1).sum(axis=1)
    dpa = make_partitions(x, y, "dpa", 5)
    assert all((h[dpa.members(i)] % 5 == i).all() for i in range(5))
    star = make_partitions(x, y, "dpa_star", 5, 3)
    assert all(np.array_equal(star.members(3 * i + j), dpa.members(i)) for i in range(5) for j in range(3))
    fa = make_partitions(x, y, "fa", 3, 2, offsets=[0, 1])
    assert all(set(h[fa.members(i)] % 6) <= {i, (i - 1) % 6} for i in range(6))


# ---------------------------------------------------------------------------------------------- learners


class _ToyLearner:
    """Logits = the partition's class counts (a deterministic function of the set)."""

    name = record = "toy"
    upstream = ()

    def fit_predict(self, shard):
        import numpy as np

        from poisoncert.learners import Fit

        ds = shard.dataset
        counts = [np.bincount(ds.train_labels[m], minlength=ds.n_classes).astype(np.float32) for m in shard.members]
        return Fit(np.stack([np.broadcast_to(c, (len(ds.test_labels), ds.n_classes)) for c in counts]), meta={"toy": True})

    def train_flags(self, exp_name, exp):
        return ["--learner", self.name]

    def check_config(self, exp, where):
        pass

    def retrainer(self, ds, meta, upstream):
        return None


@pytest.fixture
def toy_learner():
    from poisoncert import learners

    registry.LEARNERS["toy"] = registry.Learner("toy", "a toy learner, registered by a test", ("dpa",))
    impl = learners.register(_ToyLearner())
    yield impl
    del learners.IMPLEMENTATIONS["toy"], registry.LEARNERS["toy"]


def test_a_learner_registered_from_a_test_trains_through_the_train_stage(toy_learner, tmp_path):
    import json

    import numpy as np

    from poisoncert.data import load_npz, read_dataset
    from poisoncert.learners import for_experiment
    from poisoncert.partition import read_partitions

    data, parts = tmp_path / "d.npz", tmp_path / "p.npz"
    assert cli.main(["prepare", "--dataset", "digits", "--out", str(data)]) == 0
    assert cli.main(["partition", "--dataset-file", str(data), "--out", str(parts), "--scheme", "dpa", "--k", "4"]) == 0
    exp = {"learner": "toy", "two_phase": False}
    assert for_experiment(exp) is toy_learner and toy_learner.train_flags("e", exp) == ["--learner", "toy"]
    out = tmp_path / "shard0.npz"
    assert cli.main(["train", "--dataset-file", str(data), "--partitions", str(parts), "--out", str(out), "--shard", "0", "--shard-size", "4",
                     "--learner", "toy", "--no-progress"]) == 0
    z = load_npz(out, "logits", ("logits", "meta"))
    meta = json.loads(str(z["meta"]))
    assert meta["learner"] == "toy" and meta["toy"] is True
    ds, (p, _) = read_dataset(str(data)), read_partitions(str(parts))
    assert np.array_equal(z["logits"][2, 0], np.bincount(ds.train_labels[p.members(2)], minlength=10))


def test_unknown_learner_is_one_line(tmp_path, capsys):
    from poisoncert.learners import implementation
    from poisoncert.errors import PoisonCertError

    with pytest.raises(PoisonCertError, match="unknown learner 'nope'; choose one of supervised"):
        implementation("nope")
