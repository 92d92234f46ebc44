"""``poisoncert collective`` (rule ``collective``): collective certificate of a scores file.

How many test predictions one poisoned training set of r poisons can change at once, proved per
budget by HiGHS (:func:`poisoncert.certify.collective`), beside the sample-wise count and the best
attack found. The ensemble is certified under the threat model its scores file records
(:func:`poisoncert.registry.ensemble_threat`); what one poison reaches comes from the scheme's record
(:meth:`poisoncert.registry.Scheme.poison_reach`), and a certificate without a collective
counterpart there is refused with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import certify as maths
from .. import registry
from ..certify.collective import MODES
from ..data import atomic_write_text
from ..errors import PoisonCertError
from ..scores import check_meta, read_scores
from ._common import ENSEMBLE_FLAGS, add_ensemble_arguments, int_list, merge_flags, threat_note

HELP = "collective certificate: predictions one poisoned training set can change at once (HiGHS)"

#: The CSV's columns, one row per budget.
CSV_COLUMNS = ("budget", "certified", "attack_bound", "samplewise", "proven", "seconds")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scores")
    p.add_argument("--certificate", required=True, help=f"sample-wise certificate under the same reach: {', '.join(registry.COLLECTIVE_CERTIFICATES)}")
    p.add_argument("--budgets", type=int_list, required=True, help="attack budgets r (comma-separated), in the scheme's unit")
    p.add_argument("--mode", choices=MODES, default="accuracy",
                   help="accuracy: predictions that stay correct; unchanged: predictions that stay the same")
    p.add_argument("--block-size", type=int, default=60, help="candidate samples per integer programme")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per block (HiGHS); past it the block's dual bound is used")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-png", default=None, help="figure: sample-wise and collective counts per budget, the attack bound as a band")
    p.add_argument("--out-pdf", default=None)
    p.add_argument("--out-html", default=None, help="the per-budget table as HTML (for the report)")
    p.add_argument("--title", default=None)
    add_ensemble_arguments(p, parameters=False)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS prints solver chatter on the process's stdout (fd 1) whatever its options: send it to /dev/null."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def collective_scores(scores: np.ndarray, labels: np.ndarray, meta: dict[str, Any], name: str, budgets: list[int],
                      mode: str, block_size: int, time_limit: float, progress=None) -> tuple[list[maths.CollectiveResult], dict[str, Any]]:
    """The collective certificate of an ensemble under its recorded threat model; results and a header."""
    threat = registry.ensemble_threat(meta)
    s = registry.scheme(threat["scheme"])
    view = registry.scores_view(s.name, name, scores, meta)
    votes = maths.votes(view)
    reach = s.poison_reach(name, meta, votes.shape[1])
    cert = registry.compute(s.name, name, scores, meta, threat["learner"])
    results = maths.collective(votes, view.shape[2], reach, budgets, cert.radius, labels, mode=mode,
                               block_size=block_size, time_limit=time_limit, progress=progress)
    header = {
        "certificate": name, "mode": mode, "unit": cert.unit, "threat_model": threat,
        "poison_unit": "voter" if reach.shape[1] == 1 else f"split bucket (reaches {reach.shape[1]} models)",
        "n_test": int(len(labels)), "n_voters": int(votes.shape[1]), "n_units": int(reach.shape[0]),
        "clean_accuracy": float(np.mean(cert.prediction == labels)),
        "block_size": int(block_size), "time_limit_per_block": float(time_limit),
    }
    return results, header


def table(summary: dict[str, Any]):
    """The per-budget table of a summary: counts, fractions of the test set, gain over sample-wise, gap to the attack."""
    import pandas as pd

    rows = [{"budget": b["budget"], "sample-wise": b["samplewise"], "collective certified": b["certified"],
             "gain": b["certified"] - b["samplewise"], "attack bound": b["attack_bound"], "gap": b["attack_bound"] - b["certified"],
             "certified fraction": round(b["certified_fraction"], 4), "proven": b["proven"], "seconds": b["seconds"]}
            for b in summary["budgets"]]
    return pd.DataFrame(rows)


def plot(summary: dict[str, Any], title: str, png: str, pdf: str) -> None:
    """Sample-wise and collective certified fraction against the budget; the attack bound as a band above the latter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from ..report import _save

    b = summary["budgets"]
    r = [x["budget"] for x in b]
    cert = [x["certified_fraction"] for x in b]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(r, [x["samplewise_fraction"] for x in b], "o--", color="tab:gray", label="sample-wise certificate")
    ax.plot(r, cert, "o-", color="tab:blue", label="collective certificate (proved)")
    ax.fill_between(r, cert, [x["attack_fraction"] for x in b], color="tab:red", alpha=0.2, step=None,
                    label="up to the best attack found")
    what = "certified accuracy" if summary["mode"] == "accuracy" else "predictions certified unchanged"
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # budgets are counts
    ax.set_xlabel(f"attack budget r ({summary['unit']})")
    ax.set_ylabel(f"{what} (fraction of {summary['n_test']})")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, png, pdf)


def run_collective(scores_file: str, name: str, budgets: list[int], mode: str, block_size: int, time_limit: float,
                   out_csv: str, out_json: str, out_png: str | None = None, out_pdf: str | None = None,
                   out_html: str | None = None, title: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Certify a scores file collectively; write the per-budget CSV and the JSON summary."""
    import pandas as pd

    if not budgets:
        raise PoisonCertError("--budgets needs at least one attack budget, e.g. --budgets 1,2,5")
    if block_size < 1 or not time_limit > 0:
        raise PoisonCertError(f"--block-size must be >= 1 and --time-limit > 0, got {block_size} and {time_limit}")
    scores, labels, meta = read_scores(scores_file, mmap=True)
    meta = merge_flags(check_meta(meta, "the scores metadata"), overrides or {})
    started = time.perf_counter()

    def progress(r: int, b: int, n_blocks: int, blk: maths.CollectiveBlock) -> None:
        print(f"collective {name} r={r}: block {b + 1}/{n_blocks} ({blk.size} samples): at most {blk.bound} flips, "
              f"attack found {blk.incumbent}, {blk.status}, {blk.seconds:.1f} s", file=sys.stderr, flush=True)

    with _quiet_stdout():
        results, header = collective_scores(scores, labels, meta, name, budgets, mode, block_size, time_limit, progress)
    rows = [{"budget": x.budget, "certified": x.certified, "attack_bound": x.attack_bound, "samplewise": x.samplewise,
             "proven": x.proven, "seconds": round(x.seconds, 3)} for x in results]
    summary = {
        **header, "scores_file": str(scores_file), "seconds": round(time.perf_counter() - started, 3),
        **{key: meta[key] for key in ("scheme", "k", "d", "dataset", "experiment") if key in meta},
        "budgets": [
            {**row, "n_counted": x.n_samples, "certified_fraction": x.certified_fraction, "attack_fraction": x.attack_fraction,
             "samplewise_fraction": x.fraction(x.samplewise), "attack_units": list(x.attack_units), "n_candidates": x.n_candidates,
             "blocks": [{"size": b.size, "bound": b.bound, "incumbent": b.incumbent, "proven": b.proven, "status": b.status,
                         "seconds": round(b.seconds, 3)} for b in x.blocks]}
            for row, x in zip(rows, results)
        ],
    }
    atomic_write_text(out_csv, pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(index=False))
    try:
        atomic_write_text(out_json, json.dumps(summary, indent=1))
    except BaseException:
        Path(out_csv).unlink(missing_ok=True)  # no half of a result left looking complete
        raise
    title = title or f"{Path(scores_file).parent.name}: collective {name} ({mode})"
    if out_png or out_pdf:
        if not (out_png and out_pdf):
            raise PoisonCertError("--out-png and --out-pdf go together")
        plot(summary, title, out_png, out_pdf)
    if out_html:
        atomic_write_text(out_html, f"<h3>{title}</h3>\n" + table(summary).to_html(index=False))
    note = threat_note(summary["threat_model"])
    for row in rows:
        print(f"collective {name} ({mode}) r={row['budget']}: certified {row['certified']}, attack bound {row['attack_bound']}, "
              f"sample-wise {row['samplewise']}, proven {row['proven']}, {row['seconds']:.1f} s{note}")
    return summary


def main(args: argparse.Namespace) -> None:
    overrides = {key: getattr(args, dest) for dest, key in ENSEMBLE_FLAGS.items()}
    run_collective(args.scores, args.certificate, args.budgets, args.mode, args.block_size, args.time_limit, args.out_csv, args.out_json,
                   args.out_png, args.out_pdf, args.out_html, args.title, overrides)
