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
