"""``poisoncert poison-check`` (rule ``poison_check``): attack certified samples within their radius, retrain, confirm."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from .. import registry
from ..data import Dataset, atomic_write_text, read_dataset
from ..errors import PoisonCertError
from ..learners import for_experiment
from ..scores import read_scores

HELP = "attack certified samples within their radius, retrain, confirm they hold"

COLUMNS = ["certificate", "sample", "label", "prediction", "radius", "target_class", "n_poisons", "models_changed", "votes_to_target", "new_prediction", "held"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("scores")
    p.add_argument("--targets", type=int, default=3, help="number of certified test samples to attack per certificate")
    p.add_argument("--certificates", default=None, help="comma-separated certificates to check (default: the scheme's own)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--extractor", default=None, help="learner frozen: the experiment's shared label-free extractor file")


def learner_for(ds: Dataset, meta: dict[str, Any], extractor_file: str | None = None):
    """The retrain function of the ensemble's learner, exactly as the workflow ran it (the learner's
    implementation, :mod:`poisoncert.learners`; refused for those the check does not cover)."""
    threat = registry.ensemble_threat(meta)
    impl = for_experiment({**(meta.get("experiment") or {}), "learner": threat["learner"]})
    retrain_fn = impl.retrainer(ds, meta, {"extractor": extractor_file}) if registry.learner(impl.record).poison_checked else None
    if retrain_fn is None:
        checked = [n for n, lr in registry.LEARNERS.items() if lr.poison_checked]
        raise PoisonCertError(f"the poison check retrains the learners {', '.join(checked)}, not learner '{threat['learner']}'")
    return retrain_fn


def run_poison_check(dataset_file: str, scores_file: str, out_csv: str, out_json: str, n_targets: int = 3, certificates: list[str] | None = None,
                     extractor_file: str | None = None) -> dict[str, Any]:
    """Attack certified test samples with as many poisons as each certificate allows, retrain, check."""
    import pandas as pd

    from ..attack import poison_check

    ds = read_dataset(dataset_file)
    scores, labels, meta = read_scores(scores_file)
    if meta.get("dataset_hash") != ds.meta()["content_hash"]:
        raise PoisonCertError(f"{scores_file} was made from other data than {dataset_file}")
    retrain_fn = learner_for(ds, meta, extractor_file)
    names = certificates or [registry.scheme(registry.ensemble_threat(meta)["scheme"]).default_certificate]
    outcomes = [o for name in names for o in poison_check(ds, scores, meta, retrain_fn, n_targets, certificate=name)]
    table = pd.DataFrame([{**dataclasses.asdict(o), "held": o.held} for o in outcomes], columns=COLUMNS)
    print(table.to_string(index=False))
    broken = [o for o in outcomes if not o.held]
    if broken:
        raise PoisonCertError(
            f"{len(broken)} of {len(outcomes)} certified predictions were flipped by an attack within their certificate "
            f"({', '.join(f'{o.certificate} sample {o.sample}' for o in broken[:5])}): the certificate or the training determinism is broken"
        )
    summary = {"scores_file": str(scores_file), "certificates": names, "attacked": len(outcomes), "held": len(outcomes),
               "total_poisons": int(table["n_poisons"].sum()) if len(table) else 0}
    atomic_write_text(out_csv, table.to_csv(index=False))
    atomic_write_text(out_json, json.dumps(summary, indent=1))
    print(f"poison check: {summary['held']} of {summary['attacked']} attacked certified predictions held ({', '.join(names)})")
    return summary


def main(args: argparse.Namespace) -> None:
    certs = [c for c in args.certificates.split(",") if c] if args.certificates else None
    run_poison_check(args.dataset_file, args.scores, args.out_csv, args.out_json, args.targets, certs, args.extractor)
