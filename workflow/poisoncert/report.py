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
    "plot_improvement",
    "plot_selection_delta",
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
    if s.get("scheme") == "ssdpa":
        name = scheme.label
    elif s.get("scheme") == "dpa_star" and s["certificate"] == "dpa":
        name = scheme.label  # DPA*: DPA on the seed-averaged partitions
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
            if isinstance(v, float) and c != "median_certified_radius":
                cells.append(f"{100 * v:.2f}%" if ("acc" in c) else f"{v:g}")
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                cells.append("N/A")
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
                 out_html: str | None = None) -> None:
    """The summary table (CSV, markdown and, with ``out_html``, an HTML page for the Snakemake report) and the figure."""
    summaries = read_summaries(summary_files)
    df = summary_table(summaries, radii)
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

    The baseline of an ensemble (k, d) is plain DPA voting on the same k partitions: certificate
    ``dpa`` on the same ensemble (for dpa_roe and dpa_star_roe), or ``fa`` with d = 1 (= DPA) and the
    same k (for fa with d > 1 and for fa_roe).
    """
    by_key = {(s["certificate"], s.get("k"), s.get("d")): s for s in summaries}
    pairs = []
    for s in summaries:
        cert, k, d = s["certificate"], s.get("k"), s.get("d")
        baseline = registry.CERTIFICATES[cert].baseline if cert in registry.CERTIFICATES else None
        if baseline is not None:
            base = by_key.get((baseline, k, d))
        elif cert == "fa_roe" or (cert == "fa" and d != 1):
            base = by_key.get(("fa", k, 1))
        else:
            base = None
        if base is not None and base is not s:
            pairs.append((s, base))
    return pairs


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
        n = max(len(s["curve"]["certified_accuracy"]), len(base["curve"]["certified_accuracy"]))
        a = np.zeros(n)
        b = np.zeros(n)
        a[: len(s["curve"]["certified_accuracy"])] = s["curve"]["certified_accuracy"]
        b[: len(base["curve"]["certified_accuracy"])] = base["curve"]["certified_accuracy"]
        ax.step(np.arange(n), 100 * (a - b), where="post", label=f"{_label(s)} vs {_label(base)}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"attack size ({pairs[0][0]['unit']})")
    ax.set_ylabel("certified accuracy - DPA (percentage points)")
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
