"""The digits twin of every paper config runs end to end: every scheme, certificate, table and figure.

The twins share one working directory, as a user reproducing several tables would: experiments
with the same name are the same ensemble (tests/test_paper_configs.py checks that) and train once.
"""

from pathlib import Path

import pandas as pd
import pytest

from poisoncert.config import load_config_file

ROOT = Path(__file__).resolve().parent.parent
TWINS = sorted((ROOT / "config" / "digits").glob("*.yaml"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("twins")


@pytest.mark.slow
@pytest.mark.parametrize("cfg", TWINS, ids=[p.stem for p in TWINS])
def test_digits_twin_runs_and_renders(workdir, cfg, snakemake):
    proc = snakemake(workdir, "--configfile", cfg, "--cores", "2", "--quiet", "all", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = load_config_file(cfg)
    for name in config["experiments"]:
        table = pd.read_csv(workdir / "results" / name / "report" / "table.csv")
        assert len(table) >= 1 and table["clean_accuracy"].between(0, 1).all()
        assert (workdir / "results" / name / "report" / "certified_accuracy.png").stat().st_size > 0
        e = config["experiments"][name]
        if e["scheme"] != "binary_kmeans":  # DPA Table 1's training time, from the train jobs' benchmarks
            assert (table["train_min_per_model"] > 0).all() and set(table["train_device"]) == {"cpu"}
        figures = [f for f, wanted in (("fa_theorem2_vs_dpa.png", e["scheme"] == "fa" and max(e["d"]) > 1),  # FA Fig. 4
                                       ("running_time.png", "bagging" in e["certificates"]),  # Jia Fig. 3(c)
                                       (f"selection_sizes_k{e['k'][0]}_d1.png", e["scheme"] == "binomial"))  # Chen Fig. 5
                   if wanted]
        for f in figures:
            assert (workdir / "results" / name / "report" / f).stat().st_size > 0, f
    if cfg.stem.startswith("roe_figures"):  # ROE Figs. 2-3: one figure per k with all six methods
        ks = {k for e in config["experiments"].values() for k in e["k"]}
        for k in ks:
            assert (workdir / "results" / "compare" / "digits" / f"roe_methods_k{k}.png").stat().st_size > 0
    assert config["paper_tables"], "every paper config names the tables it reproduces"
    for t in config["paper_tables"]:
        rendered = pd.read_csv(workdir / "results" / "paper_tables" / f"{t}.csv")
        # a digits run measures no cell of a paper table: nothing may be filled in from elsewhere
        assert set(rendered["status"]) == {"not yet run"}
        assert rendered["ours"].isna().all()
        assert "not yet run" in (workdir / "results" / "paper_tables" / f"{t}.md").read_text()
