"""``poisoncert certify`` (rule ``certify``): certify a scores file, ours or one trained elsewhere.

The certificate is computed under the threat model of the ensemble
(:func:`poisoncert.registry.ensemble_threat`): the scheme its metadata names, or ``--scheme``,
or, for a file that names none, the documented default of one base model per poisoned sample
(DPA). A certificate that the scheme's footprint does not support is refused with one line that
names the allowed ones; the summary records the threat model it assumed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import certify as maths
from .. import registry
from ..config import load_schema
from ..data import atomic_write_text
from ..scores import read_scores
from ._common import ENSEMBLE_FLAGS, PARAMETER_FLAGS, add_ensemble_arguments, int_list, merge_flags, threat_note

HELP = "certify a scores file (ours or one trained elsewhere)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scores")
    p.add_argument("--certificate", required=True, help=", ".join(registry.CERTIFICATES))
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--radii", type=int_list, default=None,
                   help="attack sizes of the certified-accuracy columns (default: the config's radii default, from the schema)")
    add_ensemble_arguments(p)


def certify_scores(scores: np.ndarray, labels: np.ndarray, meta: dict[str, Any], name: str, radii: list[int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run certificate ``name`` on a scores array under its threat model; per-sample columns and a summary."""
    rec = registry.certificate(name)
    threat = registry.ensemble_threat(meta)
    cert = registry.compute(threat["scheme"], name, scores, meta, threat["learner"])
    counts = cert.detail.get("counts")
    if counts is None or counts.shape != (len(labels), scores.shape[2]) or not np.all(counts.sum(axis=1) == scores.shape[1]):
        # the certificate did not count every base model's vote (DPA* averages seeds): count them here
        counts = maths.vote_counts(maths.votes(scores), scores.shape[2])
    summary = {
        "certificate": name,
        "unit": cert.unit,
        "threat_model": threat,
        "n_test": int(len(labels)),
        "n_models": int(scores.shape[1]),
        "mean_base_accuracy": maths.mean_base_accuracy(counts, labels),
        **maths.summary_metrics(cert.prediction, cert.radius, labels, radii),
        "parameters": registry.certificate_parameters(name, meta),
    }
    if rec.statistics is not None:
        summary["extra"] = rec.statistics(scores, labels, meta)
    certified = maths.certified_radius_or_minus_one(cert.prediction, cert.radius, labels)
    columns = {"sample": np.arange(len(labels)), "label": labels, "prediction": cert.prediction, "radius": cert.radius, "certified_radius": certified}
    for key, val in cert.detail.items():
        val = np.asarray(val)
        if val.shape == labels.shape:
            columns[key] = val
    return columns, summary


def run_certify(scores_file: str, name: str, out_csv: str, out_json: str, radii: list[int], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Certify a scores file; write the per-sample CSV and the summary JSON.

    The summary also records the ensemble's experiment config (as the scores metadata has it) and
    the certificate's parameters: the paper tables (:mod:`poisoncert.papers`) match cells on them.
    """
    import pandas as pd

    registry.certificate(name)
    scores, labels, meta = read_scores(scores_file, mmap=True)
    overrides = overrides or {}
    meta = merge_flags(meta, overrides)
    columns, summary = certify_scores(scores, labels, meta, name, radii)
    summary["scores_file"] = str(scores_file)
    for key in ("scheme", "k", "d", "dataset", "dataset_hash", "device", "shard_size", "experiment"):
        if key in meta:
            summary[key] = meta[key]
    summary["scheme"] = summary["threat_model"]["scheme"]
    csv = pd.DataFrame(columns).to_csv(index=False)
    atomic_write_text(out_csv, csv)
    try:
        atomic_write_text(out_json, json.dumps(summary, indent=1))
    except BaseException:
        Path(out_csv).unlink(missing_ok=True)  # no half of a result left looking complete
        raise
    med = summary["median_certified_radius"]
    assumed = threat_note(summary["threat_model"])
    print(f"{name}: clean accuracy {summary['clean_accuracy']:.4f}, mean base accuracy {summary['mean_base_accuracy']:.4f}, "
          f"median certified radius {med if med is not None else 'N/A'} ({summary['unit']}){assumed}")
    return summary


def main(args: argparse.Namespace) -> None:
    overrides = {key: getattr(args, dest) for dest, key in {**ENSEMBLE_FLAGS, **PARAMETER_FLAGS}.items()}
    radii = args.radii if args.radii is not None else load_schema()["properties"]["radii"]["default"]
    run_certify(args.scores, args.certificate, args.out_csv, args.out_json, radii, overrides)
