"""Published numbers beside ours: matching, differences, and honest 'not yet run' cells."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poisoncert.errors import PoisonCertError
from poisoncert.papers import COLUMNS, available_tables, compare, load_published, render_markdown


def _row(row, dataset, scheme, cert, k, d, n_models, metric, radius, value, **run):
    """One published cell; the run columns (learner, same_seed, ...) unstated unless given, trials 1."""
    cell = {c: None for c in COLUMNS}
    cell.update(paper_file="000.txt", table="Table 1", row=row, dataset=dataset, scheme=scheme, certificate=cert, k=k, d=d,
                n_models=n_models, trials=1, metric=metric, radius=radius, value=value, unit="", note="")
    cell.update(run)
    return cell


def _published():
    rows = [
        _row("MNIST k=1200", "mnist", "dpa", "dpa", 1200, 1, 1200, "median_certified_radius", None, 448),
        _row("MNIST k=1200", "mnist", "dpa", "dpa", 1200, 1, 1200, "certified_accuracy", 100, 0.9),
        _row("CIFAR k=50", "cifar10", "dpa", "dpa", 50, 1, 50, "clean_accuracy", None, 0.8197),
        _row("MNIST 1200 | 16", "mnist", "fa", "fa", 1200, 16, 19200, "pr_radius_up", None, 0.2, paper_file="001.txt", table="Table 2"),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _summary(dataset="mnist", scheme="dpa", cert="dpa", k=1200, d=1, **extra):
    curve = [0.95] * 101 + [0.5]
    return {
        "dataset": dataset, "scheme": scheme, "certificate": cert, "k": k, "d": d, "n_models": k * d,
        "clean_accuracy": 0.95, "mean_base_accuracy": 0.7, "median_certified_radius": 450,
        "curve": {"radius": list(range(len(curve))), "certified_accuracy": curve}, **extra,
    }


def test_matching_cells_get_ours_and_difference():
    out = compare(_published(), [_summary(), _summary("mnist", "fa", "fa", 1200, 16, extra={"pr_radius_up": 0.25})])
    assert out["status"].tolist() == ["ours", "ours", "not yet run", "ours"]
    assert out.loc[0, "ours"] == 450 and out.loc[0, "difference"] == 2
    assert out.loc[1, "ours"] == pytest.approx(0.95) and out.loc[1, "difference"] == pytest.approx(0.05)
    assert out.loc[3, "difference"] == pytest.approx(0.05)
    md = render_markdown("dpa_table1", out)
    assert "not yet run" in md and "+5.00 pt" in md and "MNIST 1200 \\| 16" in md


def test_other_dataset_or_k_is_not_yet_run():
    out = compare(_published(), [_summary(dataset="digits"), _summary(k=3000)])
    assert set(out["status"]) == {"not yet run"}
    assert out["ours"].isna().all() or all(v is None for v in out["ours"])


def test_gtsrb48_fills_the_papers_gtsrb_cells():
    """gtsrb48 is the references' GTSRB (48x48, final training set): its runs are the papers' GTSRB numbers."""
    published = pd.DataFrame([_row("GTSRB | 50 | 1", "gtsrb", "fa", "fa", 50, 1, 50, "clean_accuracy", None, 0.888, paper_file="001.txt")],
                             columns=COLUMNS)
    out = compare(published, [_summary("gtsrb48", "fa", "fa", 50, 1)])
    assert out.loc[0, "status"] == "ours" and out.loc[0, "ours"] == pytest.approx(0.95)


def test_unmeasured_metric_is_marked():
    out = compare(_published(), [_summary("mnist", "fa", "fa", 1200, 16)])  # no FA extra stats
    assert out.loc[3, "status"] == "not measured"


def test_transcribed_tables_load():
    names = available_tables()
    assert names, "no transcribed paper tables"
    for name in names:
        df = load_published(name)
        assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    with pytest.raises(PoisonCertError, match="no transcribed paper table"):
        load_published("nope")


# ------------------------------------------------------------ each cell compared with its own run (issue 14)

TRAIN = {"arch": "nin", "epochs": 200}


def _run(dataset, scheme, cert, k, d=1, *, n_models=None, learner="supervised", curve=(0.9,) * 30 + (0.0,), clean=0.9,
         median=10, parameters=None, name="exp", **experiment):
    """A certificate summary as ``poisoncert certify`` writes it for a workflow ensemble (experiment config recorded)."""
    exp = {"dataset": dataset, "scheme": scheme, "k": [k], "d": [d], "learner": learner, "same_seed": False, "seed_base": 0,
           "train": TRAIN, "certificates": [cert], **({"n_models": n_models} if n_models else {}), **experiment}
    return {
        "dataset": dataset, "scheme": scheme, "certificate": cert, "k": k, "d": d, "n_models": n_models or k * d,
        "threat_model": {"scheme": scheme, "learner": learner}, "experiment": exp, "parameters": parameters or {},
        "dataset_hash": "h", "scores_file": f"results/{name}/k{k}_d{d}/scores.npz",
        "clean_accuracy": clean, "mean_base_accuracy": 0.7, "median_certified_radius": median,
        "curve": {"radius": list(range(len(curve))), "certified_accuracy": list(curve)},
    }


def _cells(out, row, metric, radius=None):
    hit = out[(out["row"] == row) & (out["metric"] == metric)]
    if radius is not None:
        hit = hit[hit["radius"] == radius]
    assert len(hit) == 1, (row, metric, radius)
    return hit.iloc[0]


def test_dpa_table3_distinct_cells_get_the_distinct_seed_run():
    """The same-seed runs come last in config/dpa_table3_*.yaml; each column still gets its own run."""
    published = load_published("dpa_table3")
    distinct = _run("mnist", "dpa", "dpa", 1200, clean=0.96, median=448, name="dpa_mnist")
    same = _run("mnist", "dpa", "dpa", 1200, clean=0.95, median=444, name="dpa_same_seed_mnist", same_seed=True)
    out = compare(published, [distinct, same])
    assert _cells(out, "MNIST, DPA | 1200 | Distinct", "clean_accuracy")["ours"] == 0.96
    assert _cells(out, "MNIST, DPA | 1200 | Same", "clean_accuracy")["ours"] == 0.95
    assert _cells(out, "MNIST, DPA | 1200 | Distinct", "median_certified_radius")["ours"] == 448
    assert _cells(out, "MNIST, DPA | 1200 | Same", "median_certified_radius")["difference"] == 0
    assert _cells(out, "MNIST, SS-DPA | 1200 | Same", "clean_accuracy")["status"] == "not yet run"


def test_learner_tells_dpa_table2_hash_from_plain_dpa():
    """DPA Table 2's Hash column is scheme dpa with the SS-DPA learner, not the supervised DPA run."""
    out = compare(load_published("dpa_table2"), [_run("mnist", "dpa", "dpa", 1200, clean=0.96)])
    assert _cells(out, "MNIST, SS-DPA | 1200 | Hash", "clean_accuracy")["status"] == "not yet run"
    out = compare(load_published("dpa_table2"), [_run("mnist", "dpa", "dpa", 1200, learner="rotnet", clean=0.96)])
    assert _cells(out, "MNIST, SS-DPA | 1200 | Hash", "clean_accuracy")["ours"] == 0.96


def test_jia_cell_gets_the_n_1000_alpha_0001_run():
    """Jia's 70.8% (MNIST, k = 100, N = 1000, alpha = 0.001): not the N = 500 run that comes last, not alpha = 0.01."""
    def bagging(n, alpha, acc, name):
        return _run("mnist", "bagging", "bagging", 100, n_models=n, curve=(acc,) * 101 + (0.0,), parameters={"alpha": alpha},
                    name=name, alpha=alpha)

    runs = [bagging(1000, 0.001, 0.70, "jia_mnist_k"), bagging(1000, 0.01, 0.75, "jia_mnist_alpha0p01"), bagging(500, 0.001, 0.60, "jia_mnist_N500")]
    out = compare(load_published("jia_text"), runs)
    cell = _cells(out, "MNIST, bagging k=100 N=1000", "certified_accuracy", 100)
    assert cell["status"] == "ours" and cell["ours"] == 0.70 and cell["difference"] == pytest.approx(-0.008)
    assert compare(load_published("jia_text"), runs[1:])["status"].tolist() == ["not yet run", "not yet run"]


def test_roe_table6_gets_mean_and_std_over_trials():
    """ROE Table 6 reports the mean (and std) over 16 DPA / 4 FA trials, not the last trial."""
    published = load_published("roe_table6")
    dpa = [_run("cifar10", "dpa", c, 50, curve=(0.5 + 0.01 * t,) * 23 + (0.0,), name=f"roe_t6_dpa_trial{t:02d}", seed_base=50 * t)
           for t in range(16) for c in ("dpa", "dpa_roe")]
    fa = [_run("cifar10", "fa", c, 50, 16, curve=(0.4 + 0.02 * t,) * 23 + (0.0,), name=f"roe_t6_fa_trial{t}", seed_base=800 * t)
          for t in range(3) for c in ("fa", "fa_roe")]
    out = compare(published, dpa + fa)
    dpa_accs = np.array([0.5 + 0.01 * t for t in range(16)])
    cell = _cells(out, "DPA+ROE", "certified_accuracy", 10)
    assert cell["ours"] == pytest.approx(dpa_accs.mean()) and cell["ours_std"] == pytest.approx(dpa_accs.std())
    assert cell["ours_trials"] == 16 and cell["difference"] == pytest.approx(dpa_accs.mean() - 0.4914)
    fa_cell = _cells(out, "FA", "certified_accuracy", 22)
    assert fa_cell["ours"] == pytest.approx(0.42) and fa_cell["ours_trials"] == 3  # 3 of the paper's 4 trials ran
    md = render_markdown("roe_table6", out)
    assert "(16 of 16 trials)" in md and "(3 of 4 trials)" in md and " ± " in md


def test_measured_na_median_is_not_not_measured():
    """A measured median certified radius of N/A (clean accuracy below 50%) reads N/A, unlike a missing run or metric."""
    published = load_published("dpa_table1")
    out = compare(published, [_run("cifar10", "dpa", "dpa", 1000, clean=0.44, median=None, curve=(0.44, 0.0))])
    na = _cells(out, "CIFAR, DPA | 1000", "median_certified_radius")
    assert na["status"] == "ours: N/A" and pd.isna(na["difference"])
    assert _cells(out, "CIFAR, DPA | 1000", "clean_accuracy")["status"] == "ours"
    assert _cells(out, "CIFAR, DPA | 1000", "train_minutes_per_partition")["status"] == "not measured"
    assert _cells(out, "CIFAR, DPA | 250", "median_certified_radius")["status"] == "not yet run"
    line = next(l for l in render_markdown("dpa_table1", out).splitlines() if l.startswith("| CIFAR, DPA \\| 1000 |") and "median" in l)
    assert "| N/A | N/A |  | ours: N/A |" in line


def test_chen_zero_radius_is_where_certified_accuracy_reaches_zero():
    """Chen's 'decreases to 0% at 868': a run whose certified accuracy is 0 from rho = 500 on is 368 short, not +0."""
    def selection(scheme, zero_at):
        return _run("mnist17", scheme, "random_selection", 10, n_models=1000, curve=(0.99,) * zero_at + (0.0,),
                    parameters={"alpha": 0.001, "poisoning_model": "P6", "n_clean": 0}, name=f"chen_{scheme}")

    out = compare(load_published("chen_text"), [selection("binomial", 868), selection("bagging_wor", 500)])
    assert out["metric"].tolist() == ["zero_radius"] * 3
    assert out["ours"].tolist()[:2] == [868, 500] and out["difference"].tolist()[:2] == [0, -355]
    assert out["status"].tolist() == ["ours", "ours", "not yet run"]
    known_clean = _run("mnist17", "bagging", "random_selection", 10, n_models=1000, curve=(0.99,) * 900 + (0.0,),
                       parameters={"alpha": 0.001, "poisoning_model": "P6", "n_clean": 50}, clean_count=50)
    assert compare(load_published("chen_text"), [known_clean])["status"].tolist()[2] == "not yet run"  # n_c = 0 in the text


def test_two_different_runs_matching_one_cell_raise():
    published = load_published("fa_table1")
    a = _run("mnist", "fa", "fa", 1200, 16, name="fa_nin")
    b = _run("mnist", "fa", "fa", 1200, 16, name="fa_lenet", train={"arch": "lenet", "epochs": 200})
    with pytest.raises(PoisonCertError, match=r"two different runs match it .*fa_nin.*fa_lenet.*differ in train") as err:
        compare(published, [a, b])
    assert "\n" not in str(err.value)
    # the same run under two experiment names (shared ensembles) is one run
    twin = {**a, "scores_file": "results/other/k1200_d16/scores.npz"}
    assert set(compare(published, [a, twin])[lambda t: (t["k"] == 1200) & (t["d"] == 16)]["status"]) == {"ours"}
    # trials of a one-run cell are ambiguous too
    trial = _run("mnist", "fa", "fa", 1200, 16, name="fa_trial1", seed_base=19200)
    with pytest.raises(PoisonCertError, match="differing in seed_base only .* one run"):
        compare(published, [a, trial])


def test_certify_records_what_the_tables_match_on(tmp_path):
    """The summary of ``poisoncert certify`` records the experiment config and the certificate's parameters."""
    import json

    from poisoncert.papers import run_facts
    from poisoncert.scores import write_scores
    from poisoncert.stages.certify import run_certify

    scores = np.eye(2, dtype=np.float32)[np.array([[0, 0, 1], [1, 1, 1]])]
    experiment = {"dataset": "digits", "scheme": "bagging", "same_seed": True, "seed_base": 3, "alpha": 0.01, "learner": "supervised"}
    path = tmp_path / "scores.npz"
    write_scores(path, scores, np.array([0, 1]), {"scheme": "bagging", "k": 2, "train_size": 10, "n_models": 3, "experiment": experiment})
    run_certify(str(path), "bagging", str(tmp_path / "c.csv"), str(tmp_path / "c.json"), [0, 1])
    summary = json.loads((tmp_path / "c.json").read_text())
    assert summary["experiment"] == experiment and summary["parameters"] == {"alpha": 0.01}
    facts = run_facts(summary)
    assert (facts["same_seed"], facts["alpha"], facts["n_models"], facts["learner"]) == (True, 0.01, 3, "supervised")


def _config_summaries(cfg):
    """The certificate summaries a run of ``cfg`` records (numbers made up; run columns as ``poisoncert certify`` records them)."""
    from poisoncert import registry

    out = []
    for name, e in cfg["experiments"].items():
        learner = e["learner"] if registry.scheme(e["scheme"]).trains else e["scheme"]  # kmeans_scores records binary_kmeans
        for k in e["k"]:
            for d in e["d"]:
                for cert in e["certificates"]:
                    s = _run(e["dataset"], e["scheme"], cert, k, d, n_models=registry.scheme(e["scheme"]).n_models(k, d, e["n_models"]),
                             learner=learner, parameters=registry.certificate_parameters(cert, {"experiment": e}), name=name)
                    s["experiment"] = e
                    s["extra"] = {"pr_radius_up": 0.1, "mean_radius_increase": 1.0, "certified_accuracy_distributional": {"1": 0.3}}
                    out.append(s)
    return out


PAPER_CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "config").glob("*.yaml") if p.name.startswith(("dpa_", "fa_", "roe_", "jia_", "chen_")))


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_fill_their_tables_without_ambiguity(path):
    """Every cell of a config's paper tables whose ensemble the config trains gets exactly one run (or trials)."""
    from poisoncert.config import load_config_file

    cfg = load_config_file(path)
    summaries = _config_summaries(cfg)
    ensembles = {(s["dataset"], s["scheme"], s["certificate"], s["k"], s["d"]) for s in summaries}
    for table in cfg["paper_tables"]:
        out = compare(load_published(table), summaries)
        for _, r in out.iterrows():
            if (r["dataset"], r["scheme"], r["certificate"], r["k"], r["d"]) in ensembles:
                assert r["status"] in ("ours", "not measured"), (table, r["row"], r["metric"], r["status"])
