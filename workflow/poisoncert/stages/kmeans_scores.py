"""``poisoncert kmeans-scores`` (rule ``kmeans_scores``): DPA App. B's k = m base classifiers as a scores file."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from typing import Any

import numpy as np

from ..data import read_dataset
from ..errors import PoisonCertError
from ..partition import make_partitions
from ..scores import write_scores
from ._common import json_object

HELP = "DPA App. B: 2-means SS-DPA with k = m, written as a scores file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--experiment", type=json_object, default={}, help="JSON of the experiment's config (recorded)")


def kmeans_learner(train_images: np.ndarray, test_images: np.ndarray):
    """App. B's base learner: 2-means on the unlabeled training images, then one labelled sample per model.

    Returns ``(retrain_fn, fit)``. ``retrain_fn(train_sets, seeds)`` gives each base classifier's
    one-hot votes (B, n_test, 2): a classifier owning the single sample (t, y) votes y on the test
    images of t's cluster and 1 - y on the others. ``fit`` is
    :func:`poisoncert.semisup.binary_kmeans_fit` on the given images (label-free: label flips
    leave it unchanged).
    """
    from ..semisup import KMeansConfig, assign_clusters, binary_kmeans_fit

    fit = binary_kmeans_fit(train_images, test_images, KMeansConfig())
    n_test = len(test_images)

    def retrain_fn(train_sets, seeds=None) -> np.ndarray:
        if any(len(y) != 1 for _, y in train_sets):
            raise PoisonCertError("an App. B base classifier is trained on exactly one labelled sample")
        own = np.concatenate([x for x, _ in train_sets]) if train_sets else train_images[:0]
        clusters = assign_clusters(fit["centroids"], own) if len(own) else np.zeros(0, np.int64)
        labels = np.array([int(y[0]) for _, y in train_sets], dtype=np.int64)
        votes = np.where(fit["test_clusters"][None, :] == clusters[:, None], labels[:, None], 1 - labels[:, None])
        out = np.zeros((len(train_sets), n_test, 2), dtype=np.float32)
        np.put_along_axis(out, votes[..., None], 1.0, axis=2)
        return out

    return retrain_fn, fit


def kmeans_votes(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """App. B's base classifiers' one-hot votes (n_test, m, 2) and the fit they come from.

    Base classifier i owns the i-th training sample in canonical content order (its singleton
    partition, :func:`poisoncert.partition.make_partitions`) and is :func:`kmeans_learner`.
    """
    from ..semisup import KMeansConfig

    retrain_fn, fit = kmeans_learner(train_images, test_images)
    parts = make_partitions(train_images, train_labels, "binary_kmeans", len(train_labels))
    order = parts.indices
    scores = np.ascontiguousarray(np.transpose(retrain_fn([(train_images[order[i : i + 1]], train_labels[order[i : i + 1]]) for i in range(len(order))]), (1, 0, 2)))
    info = {
        "kmeans": dataclasses.asdict(KMeansConfig()),
        "centroids_sha256": hashlib.sha256(np.ascontiguousarray(fit["centroids"]).tobytes()).hexdigest(),
        "binary_kmeans": {"train_clusters": fit["train_clusters"][order].tolist(), "train_labels": train_labels[order].tolist(),
                          "test_clusters": fit["test_clusters"].tolist()},
        "cluster_sizes": np.bincount(fit["train_clusters"], minlength=2).tolist(),
    }
    return scores, info


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
