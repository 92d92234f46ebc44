"""The papers' published numbers beside ours, cell by cell.

Published numbers live in ``poisoncert/paper_results/<table>.csv``, package data (one long-format
CSV per paper table; see the README there). :func:`compare` matches every published cell with the certificate
summaries of this run that have the same dataset, scheme, certificate, k and d *and* agree with
every run column the cell states (:data:`RUN_COLUMNS`: base models, learner, same seed, alpha,
poisoning model, known-clean samples), and reports ours and the difference — or ``not yet run``
when this run has no such ensemble (for example the paper configuration needs MNIST and only the
digits stand-in ran). A cell the paper reports as a mean over ``trials`` training trials gets the
mean and standard deviation over the matching runs that differ in their seeds only.

Two different runs matching one cell are an error, never a silent choice: the published table
cannot say which of them is the paper's. Nothing is ever filled in from elsewhere: an empty cell
means that we have not measured it, and a measured number that is undefined (the median certified
radius when fewer than half the test samples are certified even at radius 0, the papers' N/A)
reads ``ours: N/A``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from . import registry as _registry
from .errors import PoisonCertError
from .package_data import package_path
from .tables import html_page, markdown

__all__ = [
    "PAPER_RESULTS", "COLUMNS", "RUN_COLUMNS", "available_tables", "load_published", "run_facts", "our_value", "compare",
    "render_markdown", "render_html",
]

PAPER_RESULTS = package_path("paper_results")
COLUMNS = ["paper_file", "table", "row", "dataset", "scheme", "certificate", "k", "d", "n_models", "learner", "same_seed", "alpha",
           "poisoning_model", "n_clean", "trials", "metric", "radius", "value", "unit", "note"]
#: Columns of a published cell that name its run beyond (dataset, scheme, certificate, k, d); an
#: empty one is not stated by the paper (any run matches, but two different runs are an error).
RUN_COLUMNS = ("n_models", "learner", "same_seed", "alpha", "poisoning_model", "n_clean")
PERCENT_METRICS = {"clean_accuracy", "mean_base_accuracy", "certified_accuracy", "pr_radius_up", "certified_accuracy_distributional"}
#: Experiment-config keys that do not change the numbers of one (k, d) ensemble's certificate:
#: which ensembles, certificates and checks the experiment asks for, and the trial's seeds.
_NOT_RECIPE = ("k", "d", "certificates", "poison_check", "seed_base")
_STR_COLUMNS = {"row": str, "note": str, "unit": str, "learner": str, "same_seed": str, "poisoning_model": str}


def available_tables(folder: Path = PAPER_RESULTS) -> list[str]:
    """Names (file stems) of the transcribed paper tables."""
    return sorted(p.stem for p in folder.glob("*.csv"))


def load_published(name: str, folder: Path = PAPER_RESULTS):
    """One transcribed table as a DataFrame (raises a one-line error for an unknown name)."""
    import pandas as pd

    path = folder / f"{name}.csv"
    if not path.exists():
        raise PoisonCertError(f"no transcribed paper table '{name}'; choose one of {', '.join(available_tables(folder))}")
    df = pd.read_csv(path, dtype=_STR_COLUMNS)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PoisonCertError(f"{path} lacks the columns {', '.join(missing)}")
    return df


def _stated(x: Any) -> bool:
    return not (x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip()))


def _key(x) -> int | None:
    try:
        return int(x) if _stated(x) else None
    except (TypeError, ValueError):
        return None


def _paper_dataset(name: Any) -> Any:
    """The dataset name the papers' tables use: gtsrb48 (the references' GTSRB at 48x48) fills "gtsrb" cells."""
    return _registry.DATASETS[name].paper_dataset if name in _registry.DATASETS else name


def run_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """What a certificate summary records of its run, under the published tables' column names.

    None where the summary records nothing (a scores file made elsewhere has no experiment
    config, so no ``same_seed``): such a run matches only the cells that do not state the column.

    >>> run_facts({"dataset": "mnist", "scheme": "dpa", "certificate": "dpa", "k": 50, "n_models": 50,
    ...            "threat_model": {"learner": "supervised"}, "experiment": {"same_seed": True}})["same_seed"]
    True
    """
    experiment = summary.get("experiment") or {}
    parameters = summary.get("parameters") or {}
    return {
        "dataset": _paper_dataset(summary.get("dataset")),
        "scheme": summary.get("scheme"),
        "certificate": summary["certificate"],
        "k": _key(summary.get("k")),
        "d": _key(summary.get("d")) or 1,
        "n_models": summary.get("n_models"),
        "learner": (summary.get("threat_model") or {}).get("learner"),
        "same_seed": experiment.get("same_seed"),
        "alpha": parameters.get("alpha"),
        "poisoning_model": parameters.get("poisoning_model"),
        "n_clean": parameters.get("n_clean"),
    }


def _agrees(column: str, published: Any, ours: Any) -> bool:
    """Whether a run's recorded ``ours`` agrees with a cell's ``published`` value of ``column`` (unstated: any)."""
    if not _stated(published):
        return True
    if ours is None:
        return False
    if column == "same_seed":
        return str(published).strip().lower() == str(bool(ours)).lower()
    if column == "alpha":
        return math.isclose(float(published), float(ours), rel_tol=1e-9)
    if column in ("n_models", "n_clean"):
        return _key(published) == int(ours)
    return str(published).strip() == str(ours)


def _run(summary: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(recipe, trial) of the run behind a summary: everything it records that changes its numbers,
    and its trial (the experiment's ``seed_base``; trials differ in their seeds only)."""
    experiment = summary.get("experiment")
    if not experiment:  # a scores file made elsewhere: the file is the run
        return {"scores_file": summary.get("scores_file")}, None
    recipe = {k: v for k, v in experiment.items() if k not in _NOT_RECIPE}
    recipe.update(dataset_hash=summary.get("dataset_hash"), n_models=summary.get("n_models"), parameters=summary.get("parameters"),
                  learner=(summary.get("threat_model") or {}).get("learner"))
    return recipe, experiment.get("seed_base")


def our_value(summary: dict[str, Any], metric: str, radius) -> float | None:
    """The number of ``metric`` (at ``radius``) in one certificate summary.

    None if we do not measure it; NaN if we measured it and it is undefined (the median certified
    radius of an ensemble whose clean accuracy is below 50%: the papers' N/A). ``zero_radius`` is
    the smallest attack size at which certified accuracy is 0 (Chen et al.'s "decreases to 0% at").

    >>> s = {"median_certified_radius": None, "curve": {"radius": [0, 1, 2, 3], "certified_accuracy": [0.9, 0.4, 0.0, 0.0]}}
    >>> our_value(s, "median_certified_radius", None), our_value(s, "zero_radius", None), our_value(s, "certified_accuracy", 1)
    (nan, 2.0, 0.4)
    """
    if metric in ("clean_accuracy", "mean_base_accuracy"):
        return summary[metric]
    if metric == "median_certified_radius":
        med = summary["median_certified_radius"]
        return float("nan") if med is None else med
    curve_r, curve_a = summary["curve"]["radius"], summary["curve"]["certified_accuracy"]
    if metric == "zero_radius":
        return next((float(r) for r, a in zip(curve_r, curve_a) if a == 0), None)
    if metric == "certified_accuracy":
        r = _key(radius)
        if r is None:
            return None
        return curve_a[r] if r < len(curve_a) else 0.0 if r >= curve_r[-1] else None
    extra = summary.get("extra", {})
    if metric in ("pr_radius_up", "mean_radius_increase"):
        return extra.get(metric)
    if metric == "certified_accuracy_distributional":
        return extra.get("certified_accuracy_distributional", {}).get(str(_key(radius)))
    return None


def _cell(row) -> str:
    at = f" at radius {_key(row['radius'])}" if _key(row["radius"]) is not None else ""
    return f"{row['paper_file']} {row['table']}, row '{row['row']}', {row['metric']}{at}"


def _name(summary: dict[str, Any]) -> str:
    return str(summary.get("scores_file") or f"a {summary['certificate']} summary without a scores file")


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def _measure(row, matched: list[dict[str, Any]]) -> tuple[float | None, float | None, int, str]:
    """(ours, std over trials, trials measured, status) of one published cell from its matching summaries."""
    if not matched:
        return None, None, 0, "not yet run"
    runs: dict[str, tuple[dict[str, Any], dict[str, Any], Any, float | None]] = {}
    for s in matched:
        recipe, trial = _run(s)
        value = our_value(s, row["metric"], row["radius"])
        ident = json.dumps([recipe, trial], sort_keys=True, default=str)
        if ident in runs and not _same(runs[ident][3], value):
            raise PoisonCertError(
                f"{_cell(row)}: {_name(runs[ident][0])} and {_name(s)} record the same run but measured {runs[ident][3]} and {value}; "
                "delete the stale one and rerun"
            )
        runs.setdefault(ident, (s, recipe, trial, value))
    first = next(iter(runs.values()))
    for s, recipe, trial, _ in runs.values():
        if recipe != first[1]:
            differ = sorted(k for k in set(recipe) | set(first[1]) if recipe.get(k) != first[1].get(k))
            raise PoisonCertError(
                f"{_cell(row)}: two different runs match it ({_name(first[0])} and {_name(s)}, which differ in {', '.join(differ)}); "
                "the table cannot tell which is the paper's: state the column that tells them apart in the CSV or run them in separate configs"
            )
    wanted = _key(row["trials"]) or 1
    if len(runs) > 1 and wanted == 1:
        raise PoisonCertError(
            f"{_cell(row)}: {len(runs)} runs differing in seed_base only match it ({_name(first[0])}, ...), "
            "but the paper reports one run (trials 1): keep one trial in the config, or state the trials in the CSV"
        )
    values = [v for *_, v in runs.values()]
    if any(v is None for v in values):
        return None, None, len(values), "not measured"
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    std = float(arr.std()) if wanted > 1 and len(arr) > 1 else None
    return mean, std, len(values), "ours: N/A" if math.isnan(mean) else "ours"


def compare(published, summaries: list[dict[str, Any]]):
    """Published rows with ``ours``, ``ours_std``, ``ours_trials``, ``difference`` (ours - published) and ``status``.

    ``ours`` is the mean over trials (and ``ours_std`` their standard deviation, numpy's, over the
    measured trials) where the cell states ``trials`` > 1; ``status`` is ``ours``, ``ours: N/A``
    (measured, undefined), ``not measured`` or ``not yet run``. Raises :class:`PoisonCertError`
    when two different runs match one cell.
    """
    by_ensemble: dict[tuple, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for s in summaries:
        f = run_facts(s)
        by_ensemble[(f["dataset"], f["scheme"], f["certificate"], f["k"], f["d"])].append((s, f))
    ours, std, trials, diff, status = [], [], [], [], []
    for _, row in published.iterrows():
        key = (row["dataset"], row["scheme"], row["certificate"], _key(row["k"]), _key(row["d"]) or 1)
        matched = [s for s, f in by_ensemble.get(key, []) if all(_agrees(c, row[c], f[c]) for c in RUN_COLUMNS)]
        value, sd, n, st = _measure(row, matched)
        ours.append(value)
        std.append(sd)
        trials.append(n)
        status.append(st)
        pub = row["value"]
        diff.append(float(value) - float(pub) if st == "ours" and _stated(pub) else None)
    out = published.copy()
    out["ours"] = ours
    out["ours_std"] = std
    out["ours_trials"] = trials
    out["difference"] = diff
    out["status"] = status
    return out


def _fmt(value, metric: str) -> str:
    if not _stated(value):
        return ""
    if metric in PERCENT_METRICS:
        return f"{100 * float(value):.2f}%"
    return f"{float(value):g}"


def _fmt_ours(r) -> str:
    if r["status"] == "ours: N/A":
        return "N/A"
    text = _fmt(r["ours"], r["metric"])
    if text and (_key(r["trials"]) or 1) > 1:
        spread = f" ± {_fmt(r['ours_std'], r['metric'])}" if _stated(r["ours_std"]) else ""
        text += f"{spread} ({int(r['ours_trials'])} of {_key(r['trials'])} trials)"
    return text


def _cells(name: str, table) -> tuple[str, list[str], list[list[str]]]:
    """Title, header and formatted cells: paper row, metric, published, ours, difference, status."""
    first = table.iloc[0] if len(table) else None
    title = f"{name}: {first['paper_file']} {first['table']}" if first is not None else name
    header = ["row", "dataset", "method", "k", "d", "metric", "radius", "published", "ours", "difference", "status"]
    rows = []
    for _, r in table.iterrows():
        radius = "" if _key(r["radius"]) is None else str(_key(r["radius"]))
        d = "" if _key(r["d"]) is None else str(_key(r["d"]))
        diff = r["difference"]
        if _stated(diff):
            diff_s = f"{100 * diff:+.2f} pt" if r["metric"] in PERCENT_METRICS else f"{diff:+g}"
        else:
            diff_s = ""
        pub = _fmt(r["value"], r["metric"]) or ("N/A" if "N/A" in str(r.get("note", "")) else "")
        rows.append([str(r["row"]), r["dataset"], f"{r['scheme']}/{r['certificate']}", str(_key(r["k"]) or ""), d, r["metric"],
                     radius, pub, _fmt_ours(r), diff_s, r["status"]])
    return title, header, rows


def render_markdown(name: str, table) -> str:
    """A markdown table: paper row, metric, published, ours, difference, status."""
    title, header, rows = _cells(name, table)
    return f"## {title}\n\n" + markdown(header, rows)


def render_html(name: str, table) -> str:
    """The same table as a standalone HTML page (its form in ``snakemake --report``)."""
    return html_page(*_cells(name, table))
