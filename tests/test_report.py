"""Report figures: pairing methods with their DPA baseline, the analytic delta figure, unit panels."""

import numpy as np
import pandas as pd
import pytest

from poisoncert import certify
from poisoncert.errors import PoisonCertError
from poisoncert.report import improvement_pairs, plot_certified_accuracy, plot_improvement, plot_selection_delta


def _s(cert, k, d, curve, unit="insertions+deletions", scheme="dpa"):
    return {"certificate": cert, "k": k, "d": d, "unit": unit, "scheme": scheme, "n_models": k * d,
            "curve": {"radius": list(range(len(curve))), "certified_accuracy": curve}}


def test_improvement_pairs_follow_the_papers():
    dpa = _s("dpa", 10, 1, [0.9, 0.5])
    roe = _s("dpa_roe", 10, 1, [0.9, 0.6])
    fa1 = _s("fa", 10, 1, [0.9, 0.5], scheme="fa")
    fa4 = _s("fa", 10, 4, [0.9, 0.7], scheme="fa")
    faroe = _s("fa_roe", 10, 4, [0.9, 0.8], scheme="fa")
    pairs = improvement_pairs([dpa, roe, fa1, fa4, faroe])
    assert [(a["certificate"], a["d"], b["certificate"], b["d"]) for a, b in pairs] == [
        ("dpa_roe", 1, "dpa", 1), ("fa", 4, "fa", 1), ("fa_roe", 4, "fa", 1)]
    assert improvement_pairs([dpa, fa1]) == []


def test_improvement_figure(tmp_path):
    plot_improvement([_s("dpa", 10, 1, [0.9, 0.5]), _s("dpa_roe", 10, 1, [0.9, 0.6, 0.1])], "t", tmp_path / "a.png", tmp_path / "a.pdf")
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "a.pdf").stat().st_size > 0
    with pytest.raises(PoisonCertError, match="no \\(method, DPA baseline\\) pair"):
        plot_improvement([_s("dpa", 10, 1, [0.9])], "t", tmp_path / "b.png", tmp_path / "b.pdf")


def test_delta_figure_is_chen_fig2(tmp_path):
    plot_selection_delta(tmp_path / "d.png", tmp_path / "d.pdf", tmp_path / "d.csv")
    df = pd.read_csv(tmp_path / "d.csv")
    assert set(df["scheme"]) == {"bagging_without_replacement", "bagging_with_replacement", "binomial"}
    for (n, ns, sch), g in df.groupby(["n", "n_s", "scheme"]):
        assert np.all(np.diff(g["delta"].to_numpy()) >= 0)  # delta grows with the attack size
        assert np.allclose(g["delta"], certify.selection_delta(g["rho"].to_numpy(), sch, n, ns, "P6"))
    # Chen et al. Section text: with n = 13007, n_s = 10 nothing is certified beyond rho ~ 855-868
    small = df[(df.n == 13007) & (df.scheme == "binomial")]
    assert 840 < small.loc[small["delta"] >= 1, "rho"].min() < 1000


def test_certified_accuracy_figure_has_one_panel_per_unit(tmp_path):
    import matplotlib.pyplot as plt

    seen = []
    real = plt.subplots

    def spy(*a, **k):
        seen.append(a[:2])
        return real(*a, **k)

    plt.subplots = spy
    try:
        plot_certified_accuracy([_s("dpa", 10, 1, [0.9]), _s("dpa", 5, 1, [0.8], unit="label flips", scheme="ssdpa")], "t", tmp_path / "c.png", tmp_path / "c.pdf")
    finally:
        plt.subplots = real
    assert seen == [(1, 2)]


# ---------------------------------------------------------------------------------------------- FA Fig. 4


def _fa(k, d, curve, dpa_style=None):
    s = _s("fa", k, d, curve, scheme="fa")
    if dpa_style is not None:
        s["extra"] = {"curve_dpa_style": {"radius": list(range(len(dpa_style))), "certified_accuracy": dpa_style}}
    return s


def test_fa_statistics_record_the_dpa_style_curve():
    from poisoncert import registry

    rng = np.random.default_rng(0)
    k, d = 6, 3
    scores = rng.normal(size=(200, k * d, 3)).astype(np.float32)
    scores[:, :, 0] += 0.8  # mostly class 0: large radii
    labels = rng.integers(0, 2, size=200)
    meta = {"k": k, "d": d, "offsets": certify.default_fa_offsets(k, d)}
    extra = registry.CERTIFICATES["fa"].statistics(scores, labels, meta)
    stats = certify.fa_improvement_stats(scores, k, d, meta["offsets"], labels)
    curve = extra["curve_dpa_style"]
    naive = stats["radius_dpa_style"]
    assert curve["radius"] == list(range(int(naive.max()) + 2)) and curve["certified_accuracy"][-1] == 0
    for r, a in zip(curve["radius"], curve["certified_accuracy"]):
        assert a == pytest.approx(np.mean(naive >= r))
    # Theorem 2 is never weaker than the DPA-style bound on the same models (FA Section 5.2)
    fa_curve = certify.certified_accuracy(*(lambda c: (c.prediction, c.radius))(certify.fa(scores, k, d, meta["offsets"])), labels, curve["radius"])
    assert np.all(fa_curve >= np.asarray(curve["certified_accuracy"]) - 1e-12)


def test_fa_gain_figure(tmp_path):
    from poisoncert.report import plot_fa_certificate_gain

    summaries = [_fa(10, 1, [0.9, 0.5], [0.9, 0.5]), _fa(10, 4, [0.9, 0.7, 0.2], [0.9, 0.6])]
    plot_fa_certificate_gain(summaries, "t", tmp_path / "g.png", tmp_path / "g.pdf")
    assert (tmp_path / "g.png").stat().st_size > 0 and (tmp_path / "g.pdf").stat().st_size > 0
    with pytest.raises(PoisonCertError, match="d > 1"):
        plot_fa_certificate_gain(summaries[:1], "t", tmp_path / "h.png", tmp_path / "h.pdf")
    with pytest.raises(PoisonCertError, match="older poisoncert certify"):
        plot_fa_certificate_gain([_fa(10, 4, [0.9])], "t", tmp_path / "h.png", tmp_path / "h.pdf")


# ---------------------------------------------------------------------------------------------- training time


def _bench(root, rule, exp, k, d, name, seconds):
    p = root / "results" / "benchmarks" / rule / exp / f"k{k}_d{d}" / f"{name}.tsv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("s\th:m:s\tmax_rss\n" + "".join(f"{s}\t0:00:00\t1\n" for s in np.atleast_1d(seconds)))
    return str(p)


def test_training_time_columns_are_per_base_model_as_dpa_table1(tmp_path):
    from poisoncert.report import add_training_time, read_benchmarks, summary_table, _cells
    from poisoncert.tables import markdown

    files = [_bench(tmp_path, "train", "e", 10, 1, "shard0", 120.0), _bench(tmp_path, "train", "e", 10, 1, "shard1", 60.0),
             _bench(tmp_path, "train", "e", 20, 1, "shard0", [30.0, 50.0]),  # repeat(): the mean
             _bench(tmp_path, "certify", "e", 10, 1, "dpa", 3.0)]
    timings = read_benchmarks(files)
    assert timings["e/k10_d1"]["train_s"] == 180.0 and timings["e/k10_d1"]["train_jobs"] == 2
    assert timings["e/k10_d1"]["certify_s"] == {"dpa": 3.0} and timings["e/k20_d1"]["train_s"] == 40.0
    summaries = [dict(_s("dpa", 10, 1, [0.9]), scores_file="results/e/k10_d1/scores.npz", device="cuda"),
                 dict(_s("dpa", 20, 1, [0.9]), scores_file="results/e/k20_d1/scores.npz", device="cpu"),
                 dict(_s("binary_kmeans", 5, 1, [0.9]), scores_file="results/km/k5_d1/scores.npz")]
    for s in summaries:
        s.update(clean_accuracy=0.9, mean_base_accuracy=0.8, median_certified_radius=0, certified_accuracy={"0": 0.9})
    df = add_training_time(summary_table(summaries, [0]), summaries, timings)
    assert df["train_min_per_model"].iloc[0] == pytest.approx(180 / 60 / 10)
    assert df["train_min_total"].iloc[0] == pytest.approx(3.0) and df["train_device"].tolist()[:2] == ["cuda", "cpu"]
    assert df["train_min_per_model"].iloc[1] == pytest.approx(40 / 60 / 20, abs=1e-4)
    assert np.isnan(df["train_min_per_model"].iloc[2])
    md = markdown(*_cells(df))
    assert "N/A" in md.splitlines()[-1] and "0.3" in md.splitlines()[2]
    with pytest.raises(PoisonCertError, match="benchmark file"):
        read_benchmarks([str(tmp_path / "missing.tsv")])


def test_running_time_figure(tmp_path):
    from poisoncert.report import plot_running_time, read_benchmarks

    files = [_bench(tmp_path, "train", "jia", 6, 1, "shard0", 90.0), _bench(tmp_path, "certify", "jia", 6, 1, "bagging", 2.0)]
    s = dict(_s("bagging", 6, 1, [0.9], unit="modified+deleted+inserted (Jia B(D, r))", scheme="bagging"),
             scores_file="results/jia/k6_d1/scores.npz", device="cpu", n_models=50)
    plot_running_time([s], read_benchmarks(files), "t", tmp_path / "r.png", tmp_path / "r.pdf", tmp_path / "r.csv")
    df = pd.read_csv(tmp_path / "r.csv")
    assert df["stage"].tolist() == ["train", "certify bagging (Jia)"]
    assert df["minutes"].tolist() == pytest.approx([1.5, 2 / 60]) and df["device"].tolist() == ["cpu", "cpu"]
    with pytest.raises(PoisonCertError, match="no benchmark file"):
        plot_running_time([dict(s, scores_file="results/other/k6_d1/scores.npz")], read_benchmarks(files), "t", tmp_path / "x.png", tmp_path / "x.pdf")


# ---------------------------------------------------------------------------------------------- Chen Fig. 5


def test_selection_sizes_stage_is_chen_fig5(tmp_path):
    from poisoncert.partition import make_selections, save_partitions
    from poisoncert.scores import write_scores
    from poisoncert.figures import selection_sizes

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(300, 1, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 2, size=300)
    parts = make_selections(images, y, "binomial", 10, 40, balance=True, balance_size=25)
    drawn = np.asarray(parts.meta()["selection_sizes"])
    assert np.all(parts.sizes() == 25) and drawn.std() > 0  # balance expands; the binomial draws vary
    save_partitions(parts, tmp_path / "p.npz", "hash")
    # synthetic logits: model m is right on the first (m % 7) / 7 of the 20 test samples
    labels = rng.integers(0, 2, size=20)
    scores = np.zeros((20, 40, 2), np.float32)
    acc = np.array([(m % 7) / 7 for m in range(40)])
    for m in range(40):
        right = np.arange(20) < round(acc[m] * 20)
        scores[np.arange(20), m, np.where(right, labels, 1 - labels)] = 1
    write_scores(tmp_path / "s.npz", scores, labels, {"scheme": "binomial", "k": 10, "n_models": 40})
    selection_sizes(str(tmp_path / "p.npz"), str(tmp_path / "s.npz"), "t", tmp_path / "c.png", tmp_path / "c.pdf", tmp_path / "c.csv")
    table = pd.read_csv(tmp_path / "c.csv")
    assert table["count"].sum() == 40 and set(table["size"]) == set(drawn.tolist())
    for _, row in table.iterrows():
        want = np.mean([round(acc[m] * 20) / 20 for m in range(40) if drawn[m] == row["size"]])
        assert row["mean_accuracy"] == pytest.approx(want)
    assert (tmp_path / "c.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- ROE Figs. 2-3


def test_roe_methods_pair_each_method_with_its_dpa_baseline(tmp_path):
    from poisoncert.report import plot_roe_methods, roe_method_curves

    summaries = [
        _s("dpa", 10, 1, [0.9, 0.5]), _s("dpa_roe", 10, 1, [0.9, 0.6]),
        _s("fa", 10, 1, [0.9, 0.55], scheme="fa"), _s("fa_roe", 10, 1, [0.9, 0.6], scheme="fa"),
        _s("fa", 10, 4, [0.9, 0.7], scheme="fa"), _s("fa_roe", 10, 4, [0.9, 0.8], scheme="fa"),
        _s("dpa", 10, 2, [0.9, 0.65], scheme="dpa_star"), _s("dpa_star_roe", 10, 2, [0.9, 0.75], scheme="dpa_star"),
        _s("dpa", 20, 1, [0.8]),  # another k: not in this figure
    ]
    curves = roe_method_curves(summaries, 10)
    got = [(label, s["certificate"], None if b is None else (b["scheme"], b["certificate"], b["d"])) for label, s, b in curves]
    assert got == [
        ("DPA", "dpa", None), ("DPA+ROE", "dpa_roe", ("dpa", "dpa", 1)),
        ("FA, d=4", "fa", ("fa", "fa", 1)), ("FA+ROE, d=4", "fa_roe", ("fa", "fa", 1)),
        ("DPA*, d=2", "dpa", ("dpa", "dpa", 1)), ("DPA*+ROE, d=2", "dpa_star_roe", ("dpa", "dpa", 1)),
    ]
    plot_roe_methods(summaries, 10, "t", tmp_path / "r.png", tmp_path / "r.pdf")
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "r.pdf").stat().st_size > 0
    with pytest.raises(PoisonCertError, match="two summaries of dpa / dpa"):
        roe_method_curves(summaries + [_s("dpa", 10, 1, [0.9])], 10)
    with pytest.raises(PoisonCertError, match="no DPA, FA or DPA"):
        roe_method_curves(summaries, 30)
