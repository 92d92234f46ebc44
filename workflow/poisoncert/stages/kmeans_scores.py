"""``poisoncert kmeans-scores`` (rule ``kmeans_scores``): DPA App. B's k = m base classifiers as a scores file."""

from __future__ import annotations

import argparse
from typing import Any

from ..data import read_dataset
from ..errors import PoisonCertError
from ..learners.kmeans import kmeans_learner, kmeans_votes
from ..scores import write_scores
from ._common import json_object

__all__ = ["kmeans_scores", "kmeans_learner", "kmeans_votes"]

HELP = "DPA App. B: 2-means SS-DPA with k = m, written as a scores file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--experiment", type=json_object, default={}, help="JSON of the experiment's config (recorded)")


def kmeans_scores(dataset_file: str, out: str, experiment: dict[str, Any] | None = None) -> None:
    """DPA App. B (binary 2-means SS-DPA, k = m) as an ensemble: write its scores file directly.

    The scores are the base classifiers' votes as one-hot logits (n_test, m, 2), written
    compressed; the metadata keeps the cluster assignments (``binary_kmeans``) for the
    closed-form certificate ``binary_kmeans``.
    """
    ds = read_dataset(dataset_file)
    if ds.n_classes != 2:
        raise PoisonCertError(f"binary_kmeans (DPA App. B) needs a binary dataset (mnist17, digits17); {ds.name} has {ds.n_classes} classes")
    scores, info = kmeans_votes(ds.train_images, ds.train_labels, ds.test_images)
    m = scores.shape[1]
    sizes = info.pop("cluster_sizes")
    meta = {
        "scheme": "binary_kmeans",
        "k": m,
        "d": 1,
        "offsets": [],
        "n_models": m,
        "dataset": ds.name,
        "dataset_hash": ds.meta()["content_hash"],
        "n_classes": 2,
        "learner": "binary_kmeans",
        "partition_sizes": [1] * m,
        **info,
        "experiment": experiment or {},
    }
    write_scores(out, scores, ds.test_labels, meta, compressed=True)
    print(f"binary 2-means on {m} unlabeled training images: clusters of {sizes[0]} and {sizes[1]}; {m} base classifiers x {len(ds.test_labels)} test samples into {out}")


def main(args: argparse.Namespace) -> None:
    kmeans_scores(args.dataset_file, args.out, args.experiment)
