"""Tables and figures from certificate summaries (the ``report`` stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .data import atomic_file, atomic_write_text
from . import registry
from .errors import PoisonCertError
from .tables import html_page, markdown

__all__ = [
    "read_summaries",
    "summary_table",
    "plot_certified_accuracy",
    "write_report",
    "improvement_pairs",
    "has_improvement",
    "roe_figure_ks",
    "plot_improvement",
    "plot_selection_delta",
    "read_benchmarks",
    "ensemble_key",
    "add_training_time",
    "plot_running_time",
    "plot_fa_certificate_gain",
    "selection_size_table",
    "plot_selection_sizes",
    "roe_method_curves",
    "plot_roe_methods",
]

CERT_LABELS = {name: rec.label for name, rec in registry.CERTIFICATES.items()}
SCHEME_LABELS = {name: rec.label.split(", ")[-1] for name, rec in registry.SCHEMES.items() if rec.selection}


#: Keys every certificate summary (``poisoncert certify --out-json``) has.
SUMMARY_KEYS = ("certificate", "unit", "n_models", "clean_accuracy", "mean_base_accuracy", "median_certified_radius", "certified_accuracy", "curve")


def read_summaries(paths: list[str]) -> list[dict[str, Any]]:
    """Read certificate summaries, refusing a file that is not one with a line that names it."""
    out = []
    for p in paths:
        try:
            summary = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PoisonCertError(f"certificate summary {p} is missing or corrupt ({type(exc).__name__}); delete it and rerun") from None
        missing = [k for k in SUMMARY_KEYS if not isinstance(summary, dict) or k not in summary]
        if missing:
            raise PoisonCertError(f"{p} is not a certificate summary (no {', '.join(missing)}); pass the .json files that 'poisoncert certify' writes")
        out.append(summary)
    return out


def _label(s: dict[str, Any]) -> str:
    name = CERT_LABELS.get(s["certificate"], s["certificate"])
    scheme = registry.SCHEMES.get(s.get("scheme", ""))
    if scheme is not None and s["certificate"] in scheme.labelled_as_scheme:
        name = scheme.label  # SS-DPA; DPA*: DPA on the seed-averaged partitions
    if scheme is not None and scheme.selection:
        return f"{name}, {SCHEME_LABELS[s['scheme']]}, n_s={s.get('k', '?')}, T={s['n_models']}"
    dpart = f", d={s['d']}" if s.get("d", 1) != 1 or (scheme is not None and scheme.uses_d) else ""
    return f"{name} k={s.get('k', '?')}{dpart}"


def summary_table(summaries: list[dict[str, Any]], radii: list[int]):
    """One row per (ensemble, certificate): the columns of DPA Table 1 plus certified accuracy at ``radii``."""
    import pandas as pd

    rows = []
    for s in summaries:
        row = {
            "dataset": s.get("dataset", ""),
            "scheme": s.get("scheme", ""),
            "certificate": s["certificate"],
            "k": s.get("k"),
            "d": s.get("d"),
            "n_models": s["n_models"],
            "unit": s["unit"],
            "clean_accuracy": s["clean_accuracy"],
            "mean_base_accuracy": s["mean_base_accuracy"],
            "median_certified_radius": s["median_certified_radius"],
        }
        for r in radii:
            row[f"cert_acc@{r}"] = s["certified_accuracy"].get(str(r), float(np.interp(r, s["curve"]["radius"], s["curve"]["certified_accuracy"], right=0.0)))
        rows.append(row)
    return pd.DataFrame(rows)


def _cells(df) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of a summary table (accuracies in percent, missing values N/A)."""
    cols = [str(c) for c in df.columns]
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if v is None or (isinstance(v, float) and np.isnan(v)):
                cells.append("N/A")
            elif isinstance(v, float) and c != "median_certified_radius":
                cells.append(f"{100 * v:.2f}%" if ("acc" in c) else f"{v:g}")
            else:
                cells.append(str(int(v)) if isinstance(v, float) else str(v))
        rows.append(cells)
    return cols, rows


def plot_certified_accuracy(summaries: list[dict[str, Any]], title: str, png: str, pdf: str) -> None:
    """Certified accuracy vs attack size, one curve per (ensemble, certificate), one panel per unit.

    Certificates that count attack size in different units (insertions+deletions, label flips,
    Jia's modifications+max(insertions, deletions), ...) never share an axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = sorted({s["unit"] for s in summaries}, key=lambda u: (u != "insertions+deletions", u))
    fig, axes = plt.subplots(1, len(units), figsize=(6.4 * len(units), 4.4), constrained_layout=True, squeeze=False)
    for ax, unit in zip(axes[0], units):
        group = [s for s in summaries if s["unit"] == unit]
        colors = plt.cm.tab20(np.linspace(0, 1, 20))
        styles = ["-", "--", ":", "-."]
        certs = sorted({s["certificate"] for s in group})
        for i, s in enumerate(sorted(group, key=lambda s: (s["certificate"], s.get("scheme", ""), s.get("k", 0), s.get("d", 0)))):
            r = np.asarray(s["curve"]["radius"])
            a = np.asarray(s["curve"]["certified_accuracy"])
            style = styles[certs.index(s["certificate"]) % len(styles)]
            ax.step(r, 100 * a, where="post", label=_label(s), color=colors[i % 20], linestyle=style)
        ax.set_xlabel(f"attack size ({unit})")
        ax.set_ylabel("certified accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    _save(fig, png, pdf)


def write_report(summary_files: list[str], radii: list[int], title: str, out_csv: str, out_md: str, out_png: str, out_pdf: str,
                 out_html: str | None = None, benchmark_files: list[str] | None = None) -> None:
    """The summary table (CSV, markdown and, with ``out_html``, an HTML page for the Snakemake report) and the figure;
    with ``benchmark_files`` (the train jobs' Snakemake benchmarks) the table has DPA Table 1's training-time columns."""
    summaries = read_summaries(summary_files)
    df = summary_table(summaries, radii)
    if benchmark_files:
        df = add_training_time(df, summaries, read_benchmarks(benchmark_files))
    df = df.sort_values(["unit", "scheme", "certificate", "k", "d"], kind="stable").reset_index(drop=True)
    header, rows = _cells(df)
    atomic_write_text(out_csv, df.to_csv(index=False))
    atomic_write_text(out_md, f"# {title}\n\n" + markdown(header, rows))
    if out_html:
        atomic_write_text(out_html, html_page(title, header, rows))
    plot_certified_accuracy(summaries, title, out_png, out_pdf)
    print(markdown(header, rows))


def _save(fig, png: str, pdf: str) -> None:
    import matplotlib.pyplot as plt

    for path in (png, pdf):
        with atomic_file(path, suffix=Path(path).suffix) as tmp:
            fig.savefig(tmp, dpi=150)
    plt.close(fig)


def improvement_pairs(summaries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(method, DPA baseline) pairs of one experiment, as in FA Fig. 3 (right) and ROE Fig. 2 (bottom).

    The baseline of an ensemble (k, d) is plain DPA voting on the same k partitions, the
    certificate record's ``baseline``: certificate ``dpa`` on the same ensemble (for dpa_roe and
    dpa_star_roe), or ``fa`` with d = 1 (= DPA) and the same k (``baseline_d1``: for fa with d > 1
    and for fa_roe). Summaries need only ``certificate``, ``k`` and ``d``, so the workflow asks
    the experiment's planned results the same question (:func:`has_improvement`).

    >>> [(s["certificate"], b["certificate"]) for s, b in improvement_pairs([{"certificate": c, "k": 4, "d": 1} for c in ("dpa", "dpa_roe")])]
    [('dpa_roe', 'dpa')]
    """
    by_key = {(s["certificate"], s.get("k"), s.get("d")): s for s in summaries}
    pairs = []
    for s in summaries:
        cert, k, d = s["certificate"], s.get("k"), s.get("d")
        rec = registry.CERTIFICATES.get(cert)
        base = None
        if rec is not None and rec.baseline is not None:
            base = by_key.get((rec.baseline, k, 1 if rec.baseline_d1 else d))
        if base is not None and base is not s:
            pairs.append((s, base))
    return pairs


def planned_summaries(exp: dict[str, Any]) -> list[dict[str, Any]]:
    """The (certificate, k, d) of every summary a validated experiment will produce, before it runs."""
    return [{"certificate": c, "k": k, "d": d} for k in exp["k"] for d in exp["d"] for c in exp["certificates"]]


def has_improvement(exp: dict[str, Any]) -> bool:
    """Whether a validated experiment has a (method, DPA baseline) pair: :func:`improvement_pairs` on its planned summaries.

    >>> has_improvement({"k": [4], "d": [1, 2], "certificates": ["fa"]}), has_improvement({"k": [4], "d": [2], "certificates": ["fa", "fa_roe"]})
    (True, False)
    """
    return bool(improvement_pairs(planned_summaries(exp)))


def plot_improvement(summaries: list[dict[str, Any]], title: str, png: str, pdf: str) -> None:
    """Certified accuracy of each method minus its DPA baseline, in percentage points, vs attack size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = improvement_pairs(summaries)
    if not pairs:
        raise PoisonCertError("no (method, DPA baseline) pair in these summaries: add the dpa certificate, or fa with d = 1")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for s, base in sorted(pairs, key=lambda p: (p[0]["certificate"], p[0].get("k", 0), p[0].get("d", 0))):
        a, b = _padded(s["curve"]["certified_accuracy"], base["curve"]["certified_accuracy"])
        ax.step(np.arange(len(a)), 100 * (a - b), where="post", label=f"{_label(s)} vs {_label(base)}")
    _finish_difference(fig, ax, pairs[0][0]["unit"], "certified accuracy - DPA (percentage points)", title, png, pdf)


def _finish_difference(fig, ax, unit: str, ylabel: str, title: str, png: str, pdf: str) -> None:
    """Axes of a certified-accuracy difference plot (a zero line, attack size in ``unit``), saved."""
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"attack size ({unit})")
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize="small")
    _save(fig, png, pdf)


#: Chen et al. Fig. 2: (training-set size n, selection size n_s) of its two panels.
CHEN_FIG2_PANELS = ((13007, 10), (50000, 1000))


def plot_selection_delta(png: str, pdf: str, out_csv: str | None = None, poisoning_model: str = "P6") -> None:
    """δ(ρ) of the three random selection schemes (Chen et al. Fig. 2; analytic, no training).

    A prediction is certified at ρ when p1 - p2 > δ(ρ); δ is shown where it is at most 1 (above
    that nothing is certified). Corollary 1 uses the corrected π (see poisoncert.certify.selection).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import certify

    schemes = ("bagging_without_replacement", "bagging_with_replacement", "binomial")
    fig, axes = plt.subplots(1, len(CHEN_FIG2_PANELS), figsize=(12.8, 4.2), constrained_layout=True)
    rows = []
    for ax, (n, ns) in zip(axes, CHEN_FIG2_PANELS):
        # the range of ρ: until every scheme's δ exceeds 1
        hi = 1
        while min(float(certify.selection_delta(np.array([hi]), sch, n, ns, poisoning_model)[0]) for sch in schemes) < 1 and hi < n:
            hi *= 2
        rho = np.unique(np.linspace(0, hi, 400).astype(np.int64))
        for sch in schemes:
            delta = certify.selection_delta(rho, sch, n, ns, poisoning_model)
            keep = delta <= 1
            ax.plot(rho[keep], delta[keep], label=sch.replace("_", " "))
            rows += [{"n": n, "n_s": ns, "scheme": sch, "rho": int(r), "delta": float(v)} for r, v in zip(rho, delta)]
        ax.set_xlabel(f"ρ (attack size, poisoning model {poisoning_model})")
        ax.set_ylabel("δ(ρ)")
        ax.set_ylim(0, 1)
        ax.set_title(f"n = {n}, n_s = {ns}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("δ(ρ) of three random selection schemes (Chen et al. Fig. 2)")
    _save(fig, png, pdf)
    if out_csv:
        import pandas as pd

        atomic_write_text(out_csv, pd.DataFrame(rows).to_csv(index=False))


# ---------------------------------------------------------------------------------------------- running time


def ensemble_key(path: str | Path) -> str:
    """``{exp}/k{k}_d{d}``: the ensemble a workflow file belongs to, from its folder.

    A certificate summary records its ``scores_file`` (``results/{exp}/k{k}_d{d}/scores.npz``); a
    benchmark file lies in ``results/benchmarks/{rule}/{exp}/k{k}_d{d}/``.

    >>> ensemble_key("results/fa/k25_d4/scores.npz"), ensemble_key("results/benchmarks/train/fa/k25_d4/shard0.tsv")
    ('fa/k25_d4', 'fa/k25_d4')
    """
    parent = Path(path).parent
    return f"{parent.parent.name}/{parent.name}"


def read_benchmarks(paths: list[str]) -> dict[str, dict[str, Any]]:
    """Snakemake ``benchmark:`` files (TSV with a wall-clock ``s`` column), summed per ensemble.

    ``results/benchmarks/train/{exp}/k{k}_d{d}/shard{s}.tsv`` add up to the ensemble's training
    time (``train_s``, ``train_jobs``); ``results/benchmarks/certify/{exp}/k{k}_d{d}/{cert}.tsv``
    give each certificate's time (``certify_s``: certificate -> seconds). Repeated benchmark runs
    (``benchmark: repeat(...)``, several rows) count their mean.
    """
    import pandas as pd

    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        if not str(p):
            continue
        try:
            df = pd.read_csv(p, sep="\t")
            seconds = float(df["s"].astype(float).mean())
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
            raise PoisonCertError(f"benchmark file {p} is missing or not a Snakemake benchmark TSV with an 's' column ({type(exc).__name__})") from None
        rule = Path(p).parent.parent.parent.name
        rec = out.setdefault(ensemble_key(p), {"train_s": 0.0, "train_jobs": 0, "certify_s": {}})
        if rule == "certify":
            rec["certify_s"][Path(p).stem] = seconds
        else:
            rec["train_s"] += seconds
            rec["train_jobs"] += 1
    return out


def add_training_time(df, summaries: list[dict[str, Any]], timings: dict[str, dict[str, Any]]):
    """The training-time columns of DPA Table 1 beside each row of :func:`summary_table`.

    DPA Table 1 reports "training time per partition" on a single GPU, i.e. per base classifier:
    ``train_min_per_model`` is the ensemble's summed train-job wall-clock over its number of base
    models (vectorised jobs train many models at once, so it is an amortised figure, not one
    model's time alone); ``train_min_total`` is the whole ensemble's, ``train_device`` the device
    the models were trained on (from the scores metadata). Rows without train benchmarks (App. B's
    2-means, scores made elsewhere) get N/A.
    """
    per_model, total, device = [], [], []
    for s in summaries:
        rec = timings.get(ensemble_key(s.get("scores_file", "")))
        if rec is None or not rec["train_jobs"]:
            per_model.append(np.nan)
            total.append(np.nan)
            device.append(None)
            continue
        total.append(round(rec["train_s"] / 60, 3))
        per_model.append(round(rec["train_s"] / 60 / s["n_models"], 4))
        device.append(s.get("device"))
    df = df.copy()
    pos = list(df.columns).index("median_certified_radius") + 1
    df.insert(pos, "train_device", device)
    df.insert(pos + 1, "train_min_per_model", per_model)
    df.insert(pos + 2, "train_min_total", total)
    return df


def plot_running_time(summaries: list[dict[str, Any]], timings: dict[str, dict[str, Any]], title: str, png: str, pdf: str,
                      out_csv: str | None = None) -> None:
    """Jia et al. Fig. 3(c): the running time of the method, measured by the workflow's benchmark files.

    One bar group per ensemble: training (the sum of its train jobs' wall-clock) and each
    certificate (its certify job's wall-clock), in minutes on a log axis. Jia compares against
    Ma et al. and Rosenfeld et al., which are not implemented here: only our bars are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = []
    seen = set()
    for s in sorted(summaries, key=lambda s: (s.get("k", 0), s.get("d", 0), s["certificate"])):
        key = ensemble_key(s.get("scores_file", ""))
        rec = timings.get(key)
        if rec is None:
            continue
        label = _ensemble_label(s, key)
        if key not in seen and rec["train_jobs"]:
            seen.add(key)
            rows.append({"ensemble": label, "stage": "train", "device": s.get("device"), "n_models": s["n_models"],
                         "jobs": rec["train_jobs"], "minutes": rec["train_s"] / 60})
        if s["certificate"] in rec["certify_s"]:
            rows.append({"ensemble": label, "stage": f"certify {CERT_LABELS.get(s['certificate'], s['certificate'])}", "device": "cpu",
                         "n_models": s["n_models"], "jobs": 1, "minutes": rec["certify_s"][s["certificate"]] / 60})
    if not rows:
        raise PoisonCertError("no benchmark file matches these summaries: pass the train/certify benchmark TSVs of the same ensembles")
    df = pd.DataFrame(rows)
    ensembles = list(dict.fromkeys(df["ensemble"]))
    stages = list(dict.fromkeys(df["stage"]))
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(ensembles) * len(stages)), 4.2), constrained_layout=True)
    for j, stage in enumerate(stages):
        g = df[df["stage"] == stage].set_index("ensemble")
        x = [i + (j - (len(stages) - 1) / 2) * width for i, e in enumerate(ensembles) if e in g.index]
        y = [max(60 * g.loc[e, "minutes"], 0.01) for e in ensembles if e in g.index]  # benchmark resolution: 0.01 s
        dev = g["device"].iloc[0] if stage == "train" else "cpu"
        bars = ax.bar(x, y, width, label=f"{stage} ({dev})")
        ax.bar_label(bars, labels=[_duration(v) for v in y], fontsize="small")
    ax.set_xticks(range(len(ensembles)), [e.replace(" ", "\n", 1) for e in ensembles], fontsize="small")
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(60 * df["minutes"].min(), 0.01) / 3)
    ax.set_ylabel("running time (s, sum of the jobs' wall-clock)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    _save(fig, png, pdf)
    if out_csv:
        atomic_write_text(out_csv, df.to_csv(index=False))


def _ensemble_label(s: dict[str, Any], key: str) -> str:
    scheme = registry.SCHEMES.get(s.get("scheme", ""))
    if scheme is not None and scheme.selection:
        what = f"n_s={s.get('k')}, T={s['n_models']}"
    else:
        what = f"k={s.get('k')}" + (f", d={s.get('d')}" if scheme is not None and scheme.uses_d else "")
    return f"{key.split('/')[0]} {what}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else (f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h")


# ---------------------------------------------------------------------------------------------- FA Fig. 4


def plot_fa_certificate_gain(summaries: list[dict[str, Any]], title: str, png: str, pdf: str) -> None:
    """FA Fig. 4: certified accuracy of Theorem 2 minus the DPA-style bound on the same k·d models.

    The DPA-style bound (FA Section 5.2) replaces Δ^{d_sym} by 2·d_sym; its curve is recorded by
    ``poisoncert certify`` as ``extra.curve_dpa_style`` of every FA summary. One curve per (k, d)
    with d > 1 (at d = 1 both bounds are DPA's), in percentage points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the certificates whose statistics carry the DPA-style bound on the same models (FA Theorem 2's)
    fa = [s for s in summaries if getattr(registry.CERTIFICATES.get(s["certificate"]), "statistics", None) and s.get("d", 1) != 1]
    if not fa:
        raise PoisonCertError("no FA summary with d > 1 among these summaries (FA Fig. 4 compares two bounds on k*d > k models)")
    missing = [s for s in fa if "curve_dpa_style" not in s.get("extra", {})]
    if missing:
        raise PoisonCertError(f"the FA summary of k={missing[0].get('k')}, d={missing[0].get('d')} has no DPA-style curve (extra.curve_dpa_style): "
                              "it was written by an older poisoncert certify; delete it and rerun")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for s in sorted(fa, key=lambda s: (s.get("k", 0), s.get("d", 0))):
        a, b = _padded(s["curve"]["certified_accuracy"], s["extra"]["curve_dpa_style"]["certified_accuracy"])
        ax.step(np.arange(len(a)), 100 * (a - b), where="post", label=f"k={s.get('k')}, d={s.get('d')}")
    _finish_difference(fig, ax, fa[0]["unit"], "Theorem 2 - DPA-style bound (percentage points)", title, png, pdf)


def _padded(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two certified-accuracy curves over radius 0, 1, ..., padded with 0 (a curve ends at 0) to one length."""
    n = max(len(a), len(b))
    out = np.zeros((2, n))
    out[0, : len(a)] = a
    out[1, : len(b)] = b
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- Chen Fig. 5


def selection_size_table(sizes, accuracy):
    """Chen et al. Fig. 5's numbers: per sub-dataset size, how many selections have it and the mean
    clean test accuracy of the base classifiers trained on them."""
    import pandas as pd

    sizes = np.asarray(sizes, dtype=np.int64)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if sizes.ndim != 1 or sizes.shape != accuracy.shape or sizes.size == 0:
        raise PoisonCertError(f"need one sub-dataset size and one accuracy per base model, got {sizes.shape} and {accuracy.shape}")
    df = pd.DataFrame({"size": sizes, "accuracy": accuracy})
    g = df.groupby("size")["accuracy"]
    return pd.DataFrame({"size": g.mean().index, "count": g.size().to_numpy(), "mean_accuracy": g.mean().to_numpy()})


def plot_selection_sizes(table, title: str, png: str, pdf: str) -> None:
    """Chen et al. Fig. 5: the number of selections of each size (top) and the mean clean accuracy
    of the base classifiers as a function of that size (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True, constrained_layout=True)
    top.bar(table["size"], table["count"], width=0.8)
    top.set_ylabel("number of sub-datasets")
    top.set_title(f"{title}\n{int(table['count'].sum())} selections")
    bottom.plot(table["size"], 100 * table["mean_accuracy"], marker="o")
    bottom.set_ylabel("mean clean accuracy of base classifiers (%)")
    bottom.set_xlabel("sub-dataset size (samples drawn by the selection)")
    bottom.set_ylim(0, 100)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    _save(fig, png, pdf)


# ---------------------------------------------------------------------------------------------- ROE Figs. 2-3


#: The six methods of ROE Figs. 2-3: (scheme, certificate) -> label, from the scheme records'
#: ``roe_methods``; the first (plain DPA) is the baseline of every method but those of a scheme
#: with ``roe_baseline_d1`` (FA: its own ensemble with d = 1).
ROE_METHODS = {(s.name, cert): label for s in registry.SCHEMES.values() for cert, label in s.roe_methods.items()}
_ROE_REFERENCE = next(iter(ROE_METHODS))


def roe_figure_ks(experiments: dict[str, dict[str, Any]], dataset: str) -> list[int]:
    """The k at which ``dataset`` has all six methods of ROE Figs. 2-3, one experiment each: a dpa
    ensemble (dpa, dpa_roe), an fa one with d = 1 (the FA methods' DPA baseline) and a d > 1 (fa,
    fa_roe), a dpa_star one (dpa, dpa_star_roe), all with a learner certified against insertions
    (one that sees no unlabeled training image). ``experiments``: the validated config's.

    >>> exps = {n: {"dataset": "digits", "scheme": n, "learner": "supervised", "k": [10], "d": d, "certificates": list(c)}
    ...         for n, d, c in (("dpa", [1], ("dpa", "dpa_roe")), ("fa", [1, 2], ("fa", "fa_roe")), ("dpa_star", [2], ("dpa", "dpa_star_roe")))}
    >>> roe_figure_ks(exps, "digits"), roe_figure_ks({n: e for n, e in exps.items() if n != "fa"}, "digits")
    ([10], [])
    """
    schemes = {scheme for scheme, _ in ROE_METHODS}
    found: dict[int, list[str]] = {}
    for exp in experiments.values():
        rec = registry.scheme(exp["scheme"])
        if exp["dataset"] != dataset or not rec.roe_methods or registry.learner(exp["learner"]).sees_unlabeled_train:
            continue
        if not set(rec.roe_methods) <= set(exp["certificates"]):
            continue
        if rec.roe_baseline_d1 and not (1 in exp["d"] and max(exp["d"]) > 1):
            continue
        for k in exp["k"]:
            found.setdefault(k, []).append(rec.name)
    return sorted(k for k, names in found.items() if sorted(names) == sorted(schemes))


def roe_method_curves(summaries: list[dict[str, Any]], k: int) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(label, summary, DPA baseline) of each of ROE Figs. 2-3's six methods at one k.

    DPA and DPA+ROE come from a ``dpa`` ensemble; FA, FA+ROE from an ``fa`` ensemble with d > 1;
    DPA* (certificate ``dpa`` on the seed-averaged partitions) and DPA*+ROE from a ``dpa_star``
    ensemble. The baseline of the FA methods is FA with d = 1 (DPA voting on the same k partitions
    of the FA split, as ROE's DPA rows reuse the FA paper's d = 1 models); of the others, plain DPA
    on the ``dpa`` ensemble (the same hash partitions; DPA* trains d seeds on each). Two summaries
    of one (scheme, certificate, k, d) are refused: the figure would not say which one it drew.
    """
    k = int(k)
    mine = [s for s in summaries if s.get("k") == k and (s.get("scheme"), s["certificate"]) in ROE_METHODS]
    by_key: dict[tuple, dict[str, Any]] = {}
    for s in mine:
        key = (s["scheme"], s["certificate"], s.get("d", 1))
        if key in by_key:
            raise PoisonCertError(f"two summaries of {key[0]} / {key[1]} with k={k}, d={key[2]} ({by_key[key].get('scores_file')} and "
                                  f"{s.get('scores_file')}): the ROE methods figure draws one ensemble per method")
        by_key[key] = s
    dpa = by_key.get((*_ROE_REFERENCE, 1))
    out = []
    for (scheme, cert, d), s in sorted(by_key.items(), key=lambda kv: (list(ROE_METHODS).index(kv[0][:2]), kv[0][2])):
        rec = registry.scheme(scheme)
        if rec.roe_baseline_d1:
            if d == 1:
                continue  # the FA methods' baseline, DPA on the FA split: not a method of its own
            base = by_key.get((scheme, rec.default_certificate, 1))
        else:
            base = None if (scheme, cert) == _ROE_REFERENCE else dpa
        dpart = f", d={d}" if rec.uses_d else ""
        out.append((f"{ROE_METHODS[(scheme, cert)]}{dpart}", s, base))
    if not out:
        raise PoisonCertError(f"no DPA, FA or DPA* summary with k={k} among these summaries")
    return out


def plot_roe_methods(summaries: list[dict[str, Any]], k: int, title: str, png: str, pdf: str) -> None:
    """ROE Figs. 2-3, one column: certified accuracy of DPA, DPA+ROE, FA, FA+ROE, DPA*, DPA*+ROE at
    one k (top) and each method minus its DPA baseline (bottom; see :func:`roe_method_curves`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = roe_method_curves(summaries, k)
    units = {s["unit"] for _, s, _ in curves}
    if len(units) > 1:
        raise PoisonCertError(f"the ROE methods at k={k} count attack size in different units ({', '.join(sorted(units))}); they cannot share an axis")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 7.2), sharex=True, constrained_layout=True)
    styles = {"DPA": "-", "FA": "--", "DPA*": ":"}
    for i, (label, s, base) in enumerate(curves):
        style = styles[label.split("+")[0].split(",")[0]]
        color = plt.cm.tab10(i % 10)
        top.step(s["curve"]["radius"], 100 * np.asarray(s["curve"]["certified_accuracy"]), where="post", label=label, color=color, linestyle=style)
        if base is not None:
            a, b = _padded(s["curve"]["certified_accuracy"], base["curve"]["certified_accuracy"])
            rec = registry.scheme(s["scheme"])
            what = f"{rec.label} d=1" if rec.roe_baseline_d1 else ROE_METHODS[_ROE_REFERENCE]
            bottom.step(np.arange(len(a)), 100 * (a - b), where="post", label=f"{label} - {what}", color=color, linestyle=style)
    top.set_ylabel("certified accuracy (%)")
    top.set_ylim(0, 100)
    top.set_title(title)
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("improvement over DPA (percentage points)")
    bottom.set_xlabel(f"attack size ({units.pop()})")
    # up to the first attack size at which no method certifies anything (the curves' zero tails)
    last = max(int(np.flatnonzero(np.asarray(s["curve"]["certified_accuracy"]) > 0).max(initial=0)) for _, s, _ in curves)
    for ax in (top, bottom):
        ax.set_xlim(0, last + 1.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, png, pdf)
