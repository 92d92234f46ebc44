"""The papers' published numbers beside ours, cell by cell.

Published numbers live in ``workflow/paper_results/<table>.csv`` (one long-format CSV per paper
table; see the README there). :func:`compare` matches every published cell with the certificate
summary of this run that has the same dataset, scheme, certificate, k and d, and reports ours and
the difference — or ``not yet run`` when this run has no such ensemble (for example the paper
configuration needs MNIST and only the digits stand-in ran). Nothing is ever filled in from
elsewhere: an empty cell means that we have not measured it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import registry as _registry
from .errors import PoisonCertError

__all__ = ["PAPER_RESULTS", "COLUMNS", "available_tables", "load_published", "our_value", "compare", "render_markdown"]

PAPER_RESULTS = Path(__file__).resolve().parent.parent / "paper_results"
COLUMNS = ["paper_file", "table", "row", "dataset", "scheme", "certificate", "k", "d", "n_models", "metric", "radius", "value", "unit", "note"]
PERCENT_METRICS = {"clean_accuracy", "mean_base_accuracy", "certified_accuracy", "pr_radius_up", "certified_accuracy_distributional"}


def available_tables(folder: Path = PAPER_RESULTS) -> list[str]:
    """Names (file stems) of the transcribed paper tables."""
    return sorted(p.stem for p in folder.glob("*.csv"))


def load_published(name: str, folder: Path = PAPER_RESULTS):
    """One transcribed table as a DataFrame (raises a one-line error for an unknown name)."""
    import pandas as pd

    path = folder / f"{name}.csv"
    if not path.exists():
        raise PoisonCertError(f"no transcribed paper table '{name}'; choose one of {', '.join(available_tables(folder))}")
    df = pd.read_csv(path, dtype={"row": str, "note": str, "unit": str})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PoisonCertError(f"{path} lacks the columns {', '.join(missing)}")
    return df


def _key(x) -> int | None:
    try:
        return None if x is None or (isinstance(x, float) and np.isnan(x)) else int(x)
    except (TypeError, ValueError):
        return None


def our_value(summary: dict[str, Any], metric: str, radius) -> float | None:
    """The number of ``metric`` (at ``radius``) in one certificate summary; None if we do not measure it."""
    if metric in ("clean_accuracy", "mean_base_accuracy"):
        return summary[metric]
    if metric == "median_certified_radius":
        return summary["median_certified_radius"]
    if metric == "certified_accuracy":
        r = _key(radius)
        curve_r, curve_a = summary["curve"]["radius"], summary["curve"]["certified_accuracy"]
        if r is None:
            return None
        return curve_a[r] if r < len(curve_a) else 0.0 if r >= curve_r[-1] else None
    extra = summary.get("extra", {})
    if metric in ("pr_radius_up", "mean_radius_increase"):
        return extra.get(metric)
    if metric == "certified_accuracy_distributional":
        return extra.get("certified_accuracy_distributional", {}).get(str(_key(radius)))
    return None


def compare(published, summaries: list[dict[str, Any]]):
    """Published rows with ``ours``, ``difference`` (ours - published) and ``status`` columns."""
    index = {}
    for s in summaries:
        name = s.get("dataset")
        # gtsrb48 (the references' GTSRB at 48x48) fills the papers' "gtsrb" cells
        dataset = _registry.DATASETS[name].paper_dataset if name in _registry.DATASETS else name
        key = (dataset, s.get("scheme"), s["certificate"], _key(s.get("k")), _key(s.get("d", 1)))
        index[key] = s
    ours, diff, status = [], [], []
    for _, row in published.iterrows():
        key = (row["dataset"], row["scheme"], row["certificate"], _key(row["k"]), _key(row["d"]) or 1)
        s = index.get(key)
        value = None if s is None else our_value(s, row["metric"], row["radius"])
        pub = row["value"]
        ours.append(value)
        if s is None:
            status.append("not yet run")
            diff.append(None)
        elif value is None:
            status.append("not measured")
            diff.append(None)
        else:
            status.append("ours")
            diff.append(None if pub is None or (isinstance(pub, float) and np.isnan(pub)) else float(value) - float(pub))
    out = published.copy()
    out["ours"] = ours
    out["difference"] = diff
    out["status"] = status
    return out


def _fmt(value, metric: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if metric in PERCENT_METRICS:
        return f"{100 * float(value):.2f}%"
    return f"{float(value):g}"


def render_markdown(name: str, table) -> str:
    """A markdown table: paper row, metric, published, ours, difference, status."""
    first = table.iloc[0] if len(table) else None
    title = f"{first['paper_file']} {first['table']}" if first is not None else name
    lines = [
        f"## {name}: {title}",
        "",
        "| row | dataset | method | k | d | metric | radius | published | ours | difference | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        radius = "" if _key(r["radius"]) is None else str(_key(r["radius"]))
        d = "" if _key(r["d"]) is None else str(_key(r["d"]))
        diff = r["difference"]
        if diff is not None and not (isinstance(diff, float) and np.isnan(diff)):
            diff_s = f"{100 * diff:+.2f} pt" if r["metric"] in PERCENT_METRICS else f"{diff:+g}"
        else:
            diff_s = ""
        pub = _fmt(r["value"], r["metric"]) or ("N/A" if "N/A" in str(r.get("note", "")) else "")
        row_label = str(r["row"]).replace("|", "\\|")
        lines.append(
            f"| {row_label} | {r['dataset']} | {r['scheme']}/{r['certificate']} | {_key(r['k']) or ''} | {d} | {r['metric']} | {radius} | "
            f"{pub} | {_fmt(r['ours'], r['metric'])} | {diff_s} | {r['status']} |"
        )
    return "\n".join(lines) + "\n"
