"""Chen et al.'s 2-phase classifier (Algorithm 3, case 3): each base model phi_1^i is the engine
trained on its selection with the known-clean classes merged into one virtual class; its logits are
the one-hot votes of phi_2(phi_1^i(x)) with the shared phi_2 (rule ``phase2``, upstream role
``phase2``). Its ensembles are the supervised learner's (the record it is certified as)."""

from __future__ import annotations

import json

import numpy as np

from ..data import load_npz
from ..errors import PoisonCertError
from .base import TWO_PHASE, BaseLearner, Fit, Shard, register

__all__ = ["TwoPhase", "read_phase2"]


def read_phase2(path: str, dataset_hash: str, clean_classes) -> np.ndarray:
    """The phi_2 test logits of ``path``, checked against the data and clean classes they must belong to."""
    z = load_npz(path, "phase-2", ("logits", "clean_classes", "meta"))
    meta = json.loads(str(z["meta"]))
    if meta.get("dataset_hash") != dataset_hash:
        raise PoisonCertError(f"{path} was trained on other data; delete it and rerun")
    if sorted(int(c) for c in clean_classes) != z["clean_classes"].tolist():
        raise PoisonCertError(f"{path} was trained on clean classes {z['clean_classes'].tolist()}, the partitions say {sorted(clean_classes)}; delete it and rerun")
    return z["logits"]


class TwoPhase(BaseLearner):
    name = TWO_PHASE
    record = "supervised"
    upstream = ("phase2",)

    def fit_predict(self, shard: Shard) -> Fit:
        from ..train import train_shard
        from ..two_phase import combine, phase1_labels

        ds, pmeta = shard.dataset, shard.partitions_meta
        if not pmeta.get("two_phase"):
            raise PoisonCertError("--phase2 is for 2-phase ensembles; these partitions are not one")
        labels, n_classes = phase1_labels(ds.train_labels, ds.n_classes, pmeta["clean_classes"])
        logits = train_shard(shard.train_sets(labels), list(shard.seeds), ds.test_images, n_classes, shard.train, device=shard.device,
                             progress=shard.progress)
        phase2_logits = read_phase2(shard.file("phase2"), pmeta["dataset_hash"], pmeta["clean_classes"])
        phase1 = np.asarray(logits, dtype=np.float32)
        return Fit(combine(logits, phase2_logits, ds.n_classes, pmeta["clean_classes"]), arrays={"phase1_logits": phase1})


register(TwoPhase())
