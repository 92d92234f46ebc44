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
from ..errors import PoisonCertError
from ..scores import check_meta, read_scores
from ._common import int_list

HELP = "certify a scores file (ours or one trained elsewhere)"

#: The certificate parameters among the scores metadata keys: a flag may change them freely.
PARAMETERS = ("alpha", "poisoning_model")


def _dest(flag: str) -> str:
    """argparse's attribute name of a flag: ``--train-size`` -> ``train_size``."""
    return flag.lstrip("-").replace("-", "_")


#: CLI flag (dest) -> scores metadata key, both from :data:`poisoncert.registry.FLAGS` (the one
#: table of metadata keys and their flags). Facts about the ensemble can only be *supplied* where
#: the file does not record them (a flag that contradicts the file is refused: the recorded
#: threat model is the one the ensemble was built under); certificate parameters may be changed.
ENSEMBLE_FLAGS = {_dest(flag): key for key, flag in registry.FLAGS.items() if key not in PARAMETERS}
PARAMETER_FLAGS = {_dest(flag): key for key, flag in registry.FLAGS.items() if key in PARAMETERS}


def merge_flags(meta: dict[str, Any], supplied: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The metadata with the command line's values: ensemble facts fill gaps only, parameters override.

    >>> merge_flags({"scheme": "fa", "k": 5}, {"d": 2}, {"alpha": 0.01})
    {'scheme': 'fa', 'k': 5, 'd': 2, 'alpha': 0.01}
    """
    out = dict(meta)
    for key, value in supplied.items():
        if value is None:
            continue
        if meta.get(key) is not None and meta[key] != value:
            flag = registry.FLAGS[key]
            raise PoisonCertError(
                f"{flag} {value} contradicts the scores file, which records {key} = {meta[key]!r}: the file's threat model is the one "
                "its ensemble was built under; drop the flag (flags only supply what the file does not record)"
            )
        out[key] = value
    out.update({k: v for k, v in parameters.items() if v is not None})
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scores")
    p.add_argument("--certificate", required=True, help=", ".join(registry.CERTIFICATES))
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--radii", type=int_list, default=None,
                   help="attack sizes of the certified-accuracy columns (default: the config's radii default, from the schema)")
    p.add_argument("--scheme", default=None, choices=list(registry.SCHEMES),
                   help=f"the ensemble's scheme, i.e. its threat footprint, for a file that does not record one (default: {registry.DEFAULT_SCHEME})")
    p.add_argument("--k", type=int, default=None, help="supply k where the file does not record it (FA, DPA*; selection size for bagging)")
    p.add_argument("--d", type=int, default=None, help="supply d where the file does not record it (FA, DPA*)")
    p.add_argument("--offsets", type=int_list, default=None, help="FA spread offsets R (comma-separated)")
    p.add_argument("--alpha", type=float, default=None, help="bagging / random_selection confidence level")
    p.add_argument("--train-size", type=int, default=None, help="bagging / random_selection: training-set size n")
    p.add_argument("--subsample-size", type=int, default=None, help="bagging / random_selection: selection size (default: k)")
    p.add_argument("--poisoning-model", default=None, help="random_selection: P1..P6")
    p.add_argument("--clean-size", type=int, default=None, help="random_selection: known-clean samples in every set")


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
    supplied = {k: v for k, v in overrides.items() if k not in PARAMETER_FLAGS.values()}
    parameters = {k: v for k, v in overrides.items() if k in PARAMETER_FLAGS.values()}
    meta = check_meta(merge_flags(meta, supplied, parameters), "the scores metadata with the command-line values")
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
    threat = summary["threat_model"]
    assumed = f" [no scheme in the scores: assumed {threat['scheme']}, one base model per poisoned sample]" if threat["assumed"] else ""
    if threat.get("learner_assumed"):
        assumed += f" [no learner in the scores: assumed {threat['learner']}, unit {threat['unit']}]"
    print(f"{name}: clean accuracy {summary['clean_accuracy']:.4f}, mean base accuracy {summary['mean_base_accuracy']:.4f}, "
          f"median certified radius {med if med is not None else 'N/A'} ({summary['unit']}){assumed}")
    return summary


def main(args: argparse.Namespace) -> None:
    overrides = {key: getattr(args, dest) for dest, key in {**ENSEMBLE_FLAGS, **PARAMETER_FLAGS}.items()}
    radii = args.radii if args.radii is not None else load_schema()["properties"]["radii"]["default"]
    run_certify(args.scores, args.certificate, args.out_csv, args.out_json, radii, overrides)
