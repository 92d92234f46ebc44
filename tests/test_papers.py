"""Published numbers beside ours: matching, differences, and honest 'not yet run' cells."""

import pandas as pd
import pytest

from poisoncert.errors import PoisonCertError
from poisoncert.papers import COLUMNS, available_tables, compare, load_published, render_markdown


def _published():
    rows = [
        ["000.txt", "Table 1", "MNIST k=1200", "mnist", "dpa", "dpa", 1200, 1, 1200, "median_certified_radius", None, 448, "", ""],
        ["000.txt", "Table 1", "MNIST k=1200", "mnist", "dpa", "dpa", 1200, 1, 1200, "certified_accuracy", 100, 0.9, "", ""],
        ["000.txt", "Table 1", "CIFAR k=50", "cifar10", "dpa", "dpa", 50, 1, 50, "clean_accuracy", None, 0.8197, "", ""],
        ["001.txt", "Table 2", "MNIST 1200 | 16", "mnist", "fa", "fa", 1200, 16, 19200, "pr_radius_up", None, 0.2, "", ""],
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
    published = pd.DataFrame([["001.txt", "Table 1", "GTSRB | 50 | 1", "gtsrb", "fa", "fa", 50, 1, 50, "clean_accuracy", None, 0.888, "", ""]],
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
