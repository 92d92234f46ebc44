"""Poison-and-retrain check: attack certified predictions for real and confirm they hold.

For a test sample x certified at radius R by DPA (Theorem 1) or FA (Theorem 2), craft R poisons:
copies of x labelled with the runner-up class, each with a tiny pixel change so that their
pixel-sum hashes differ and every copy lands in a *different* partition (DPA) or split bucket
(FA) — the strongest insertion attack of that size against the voting. Insert them, rebuild the
partitions, retrain exactly the base models whose training sets changed, and check that the
ensemble's prediction on x did not change. Retraining only the affected models is valid because
a base model is a deterministic function of its own training set and seed (the engine's shard
invariance); the check also retrains one *unaffected* model and requires bit-identical logits,
which proves that the retrained models are the same learners that produced the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import certify
from .data import Dataset
from .errors import PoisonCertError
from .partition import make_partitions

__all__ = ["PoisonOutcome", "craft_poisons", "poison_check"]

ATTACKABLE = ("dpa", "fa")


@dataclass
class PoisonOutcome:
    sample: int
    label: int
    prediction: int
    radius: int
    target_class: int
    n_poisons: int
    models_changed: int
    votes_to_target: int
    new_prediction: int

    @property
    def held(self) -> bool:
        return self.new_prediction == self.prediction


def craft_poisons(image: np.ndarray, count: int, n_buckets: int) -> np.ndarray:
    """``count`` near-copies of ``image`` (uint8 C,H,W) whose pixel sums fall in distinct buckets mod n_buckets.

    Copy j raises pixel values (never past 255) by j in total, so its pixel sum is the image's
    plus j and the copies occupy ``count`` consecutive buckets. Needs count <= n_buckets.
    """
    if count > n_buckets:
        raise PoisonCertError(f"cannot place {count} poisons in distinct buckets of {n_buckets}")
    flat = image.reshape(-1).astype(np.int64)
    headroom = 255 - flat
    if count - 1 > headroom.sum():
        raise PoisonCertError(f"image is too saturated to make {count} copies with distinct pixel sums")
    out = np.repeat(flat[None, :], count, axis=0)
    for j in range(1, count):
        add = np.minimum(headroom, np.maximum(0, j - np.concatenate([[0], np.cumsum(headroom)[:-1]])))
        out[j] += add
    assert np.array_equal(out.sum(axis=1) - flat.sum(), np.arange(count))
    return out.astype(np.uint8).reshape((count,) + image.shape)


def _contents(ds_images: np.ndarray, ds_labels: np.ndarray, members: np.ndarray) -> bytes:
    return ds_images[members].tobytes() + ds_labels[members].tobytes()


def poison_check(
    ds: Dataset,
    scores: np.ndarray,
    meta: dict[str, Any],
    train_fn,
    n_targets: int = 3,
) -> list[PoisonOutcome]:
    """Attack up to ``n_targets`` certified, correctly classified test samples with R poisons each.

    ``train_fn(train_sets, seeds) -> logits (B, n_test, C)`` retrains base models exactly as the
    workflow did (same engine configuration, device and threads).
    """
    scheme = meta.get("scheme")
    if scheme not in ATTACKABLE:
        raise PoisonCertError(f"the poison check attacks {', '.join(ATTACKABLE)} ensembles (insertions), not '{scheme}'")
    k, d = int(meta["k"]), int(meta["d"])
    offsets = meta.get("offsets") or None
    cert = certify.dpa(scores) if scheme == "dpa" else certify.fa(scores, k, d, offsets)
    labels = ds.test_labels
    runner = _runner_up(scores, cert.prediction)
    order = np.flatnonzero((cert.prediction == labels) & (cert.radius >= 1))
    # spread the targets over the range of radii, smallest (closest to the decision boundary) first
    by_radius = order[np.argsort(cert.radius[order], kind="stable")]
    targets = by_radius[np.unique(np.linspace(0, len(by_radius) - 1, min(n_targets, len(by_radius))).astype(int))] if len(by_radius) else by_radius
    seeds = np.asarray(meta["seeds"], dtype=np.int64)
    same_seed = bool(meta.get("same_seed", False))
    clean = make_partitions(ds.train_images, ds.train_labels, scheme, k, d, offsets, same_seed, int(seeds[0]))
    if not np.array_equal(seeds, clean.seeds):
        raise PoisonCertError("the scores' seeds do not match the partitions rebuilt from the dataset; is this the right dataset?")
    n_buckets = k * d if scheme == "fa" else k
    outcomes: list[PoisonOutcome] = []
    verified_unaffected = False
    for j in targets:
        radius = int(cert.radius[j])
        target_class = int(runner[j])
        poisons = craft_poisons(ds.test_images[j], radius, n_buckets)
        x = np.concatenate([ds.train_images, poisons])
        y = np.concatenate([ds.train_labels, np.full(radius, target_class, dtype=np.int64)])
        poisoned = make_partitions(x, y, scheme, k, d, offsets, same_seed, int(seeds[0]))
        changed = [m for m in range(clean.n_models) if _contents(ds.train_images, ds.train_labels, clean.members(m)) != _contents(x, y, poisoned.members(m))]
        retrain = list(changed)
        unaffected = [m for m in range(clean.n_models) if m not in changed]
        if not verified_unaffected and unaffected:
            retrain.append(unaffected[0])
        logits = train_fn([(x[poisoned.members(m)], y[poisoned.members(m)]) for m in retrain], [int(seeds[m]) for m in retrain])
        if not verified_unaffected and unaffected:
            if not np.array_equal(logits[-1], scores[:, unaffected[0], :]):
                raise PoisonCertError(
                    "retraining an unaffected base model did not reproduce its logits bit for bit; "
                    "the check needs the same engine settings, device and thread count as the workflow run"
                )
            verified_unaffected = True
            logits = logits[:-1]
        new_scores = scores[j : j + 1].copy()
        for i, m in enumerate(changed):
            new_scores[0, m] = logits[i, j]
        votes_to_target = int(((certify.votes(new_scores)[0] == target_class) & (certify.votes(scores[j : j + 1])[0] != target_class)).sum())
        new_cert = certify.dpa(new_scores) if scheme == "dpa" else certify.fa(new_scores, k, d, offsets)
        outcomes.append(
            PoisonOutcome(int(j), int(labels[j]), int(cert.prediction[j]), radius, target_class, radius, len(changed), votes_to_target, int(new_cert.prediction[0]))
        )
    return outcomes


def _runner_up(scores: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The class with the most votes other than the prediction (smaller index among equals)."""
    counts = certify.vote_counts(certify.votes(scores), scores.shape[2]).astype(np.int64)
    counts[np.arange(len(prediction)), prediction] = -1
    return np.argmax(counts, axis=1)
