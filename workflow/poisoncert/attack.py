"""Poison-and-retrain check: attack certified predictions for real and confirm they hold.

For every deterministic (scheme, certificate) pair of the registry: take a test sample x
certified at radius R, craft an attack of size R *within the ensemble's threat model*, rebuild
the base models' training sets from the poisoned data with the scheme's own partitioning,
retrain exactly the base models whose training sets changed, and check that the ensemble's
prediction on x (the certificate's own aggregation rule on its own view of the scores,
:func:`poisoncert.registry.predict`) did not change.

The attacks (the scheme record's ``attack``):

* ``insert`` (DPA, FA, DPA*; unit insertions+deletions): R near-copies of x labelled with the
  runner-up class, each nudged so that its pixel sum lands in a different bucket: a partition
  (DPA), a split bucket whose d spread models it reaches (FA), or a partition and all d seeds
  of it (DPA*). Buckets are chosen where the reached models vote for the prediction, the
  strongest such attack on the vote;
* ``flip`` (SS-DPA, App. B 2-means, and any ensemble whose learner sees the unlabeled training
  images; unit label flips): the labels of R training samples in R different base models'
  sets, each the sample nearest to x in a model that votes for the prediction, set to the
  runner-up class (to the other class on binary data).

Retraining only the affected models is valid because a base model is a deterministic function
of its own training set and seed (the engine's shard invariance); the check also retrains one
*unaffected* model and requires bit-identical logits, which proves that the retrained models are
the same learners that produced the scores. A within-radius attack that flips a prediction
means the certificate (or the determinism it rests on) is broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import certify, registry
from .data import Dataset
from .errors import PoisonCertError
from .partition import Partitions, make_partitions, pixel_sum_hash

__all__ = ["PoisonOutcome", "near_copies", "craft_poisons", "poison_check", "RetrainFn"]

#: retrain_fn(train_sets, seeds) -> logits (B, n_test, C): the ensemble's learner, exactly as it ran.
RetrainFn = Callable[[list[tuple[np.ndarray, np.ndarray]], list[int]], np.ndarray]


@dataclass
class PoisonOutcome:
    certificate: str
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


def near_copies(image: np.ndarray, deltas) -> np.ndarray:
    """Copies of ``image`` (uint8 C,H,W) whose pixel sums exceed the image's by each of ``deltas``.

    Copy j raises pixel values (never past 255, first pixels first) by ``deltas[j]`` in total.

    >>> near_copies(np.array([[[250, 0]]], np.uint8), [0, 7]).reshape(2, -1).tolist()
    [[250, 0], [255, 2]]
    """
    flat = image.reshape(-1).astype(np.int64)
    headroom = 255 - flat
    before = np.concatenate([[0], np.cumsum(headroom)[:-1]])
    deltas = [int(x) for x in deltas]
    if deltas and max(deltas) > headroom.sum():
        raise PoisonCertError(f"image is too saturated to raise its pixel sum by {max(deltas)}")
    out = np.repeat(flat[None, :], len(deltas), axis=0)
    for j, delta in enumerate(deltas):
        out[j] += np.minimum(headroom, np.maximum(0, delta - before))
    assert np.array_equal(out.sum(axis=1) - flat.sum(), np.asarray(deltas, dtype=np.int64).reshape(-1))
    return out.astype(np.uint8).reshape((len(deltas),) + image.shape)


def craft_poisons(image: np.ndarray, count: int, n_buckets: int) -> np.ndarray:
    """``count`` near-copies of ``image`` whose pixel sums fall in ``count`` consecutive buckets mod n_buckets."""
    if count > n_buckets:
        raise PoisonCertError(f"cannot place {count} poisons in distinct buckets of {n_buckets}")
    return near_copies(image, range(count))


def _contents(images: np.ndarray, labels: np.ndarray, members: np.ndarray) -> bytes:
    return images[members].tobytes() + labels[members].tobytes()


def training_sets(scheme: str, images: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> Partitions:
    """Every base model's training set of a deterministic scheme, rebuilt from (possibly poisoned) data."""
    k = len(labels) if registry.scheme(scheme).k_is_m else int(meta["k"])
    seeds = meta.get("seeds") or [0]
    return make_partitions(images, labels, scheme, k, int(meta.get("d") or 1), meta.get("offsets") or None,
                           bool(meta.get("same_seed", False)), int(seeds[0]))


def _bucket_models(scheme: str, k: int, d: int, offsets: list[int]) -> list[list[int]]:
    """For each insertion bucket (pixel sum mod n_buckets), the base models a poison in it reaches."""
    rec = registry.scheme(scheme)
    n_buckets = rec.n_split(k, d)
    if rec.offsets:  # FA: split bucket j reaches the d models (j + r) mod kd, r in R
        return [[(b + r) % n_buckets for r in offsets] for b in range(n_buckets)]
    per = rec.n_models(k, d) // n_buckets  # DPA: one model; DPA*: the d seeds of one partition
    return [[b * per + s for s in range(per)] for b in range(n_buckets)]


def _weight(model_votes: np.ndarray, prediction: int, target: int) -> np.ndarray:
    """How much turning each model's vote to ``target`` closes the gap: 2 from the prediction, 1 from a third class."""
    return np.where(model_votes == prediction, 2, np.where(model_votes == target, 0, 1))


def _insert_attack(ds: Dataset, j: int, radius: int, target: int, prediction: int, model_votes: np.ndarray, parts: Partitions, scheme: str, meta):
    k, d = int(meta["k"]), int(meta.get("d") or 1)
    reach = _bucket_models(scheme, k, d, list(parts.offsets))
    weight = _weight(model_votes, prediction, target)
    gain = np.array([weight[m].sum() for m in reach])
    buckets = np.argsort(-gain, kind="stable")[:radius]
    if len(buckets) < radius:
        raise PoisonCertError(f"cannot place {radius} poisons in distinct buckets of {len(reach)}")
    h = int(pixel_sum_hash(ds.test_images[j : j + 1])[0])
    poisons = near_copies(ds.test_images[j], [(int(b) - h) % len(reach) for b in buckets])
    x = np.concatenate([ds.train_images, poisons])
    y = np.concatenate([ds.train_labels, np.full(radius, target, dtype=np.int64)])
    return x, y


def _flip_attack(ds: Dataset, j: int, radius: int, target: int, prediction: int, model_votes: np.ndarray, parts: Partitions, invert: bool):
    weight = _weight(model_votes, prediction, target)
    x_j = ds.test_images[j].reshape(-1).astype(np.int64)
    flat = ds.train_images.reshape(len(ds.train_images), -1).astype(np.int64)
    choices = []  # (weight, model, sample, new label)
    for m in range(parts.n_models):
        members = parts.members(m)
        if weight[m] == 0 or len(members) == 0:
            continue
        dist = ((flat[members] - x_j) ** 2).sum(axis=1)
        for i in members[np.argsort(dist, kind="stable")]:
            y_i = int(ds.train_labels[i])
            # App. B's classifier votes against its own label off its cluster: there, flipping a sample
            # labelled with the target class moves the vote to the target too (binary data only)
            new = target if y_i != target else (1 - y_i if invert and ds.n_classes == 2 else None)
            if new is not None:
                choices.append((int(weight[m]), m, int(i), new))
                break
    choices.sort(key=lambda c: -c[0])  # stable: most gain first, then model index
    y = ds.train_labels.copy()
    for _, _, i, new in choices[:radius]:
        y[i] = new
    if len(choices) < radius:
        raise PoisonCertError(f"only {len(choices)} base models can be reached by a label flip, fewer than the radius {radius}")
    return ds.train_images, y


def poison_check(
    ds: Dataset,
    scores: np.ndarray,
    meta: dict[str, Any],
    retrain_fn: RetrainFn,
    n_targets: int = 3,
    certificate: str | None = None,
    radius_of: Callable[[certify.Certificate], np.ndarray] | None = None,
) -> list[PoisonOutcome]:
    """Attack up to ``n_targets`` certified, correctly classified test samples, each at its radius.

    ``retrain_fn`` retrains base models exactly as the ensemble's learner did (same engine
    configuration, device and threads). ``certificate`` defaults to the scheme's own;
    ``radius_of`` (tests only) replaces the certificate's radii, to show the check catches an
    inflated certificate.
    """
    if ds.train_pixel_sums is not None:
        # the crafted poisons steer their bucket through the stored image's pixel sum
        raise PoisonCertError(f"the poison check crafts poisons by their stored pixels; dataset '{ds.name}' hashes its source images (train_pixel_sums)")
    threat = registry.ensemble_threat(meta)
    scheme = registry.scheme(threat["scheme"])
    name = certificate or scheme.default_certificate
    if not registry.certificate(name).deterministic or scheme.attack is None:
        raise PoisonCertError(f"the poison check attacks deterministic certificates; '{name}' on '{scheme.name}' is not one")
    attack = "flip" if threat["unit"] == registry.LABEL_FLIPS else scheme.attack
    cert = registry.compute(scheme.name, name, scores, meta, threat["learner"])
    view = registry.scores_view(scheme.name, name, scores, meta)
    radius_all = np.asarray(radius_of(cert) if radius_of is not None else cert.radius)
    labels = ds.test_labels
    model_votes_all = certify.votes(scores)
    order = np.flatnonzero((cert.prediction == labels) & (radius_all >= 1))
    # spread the targets over the range of radii, smallest (closest to the decision boundary) first
    by_radius = order[np.argsort(radius_all[order], kind="stable")]
    targets = by_radius[np.unique(np.linspace(0, len(by_radius) - 1, min(n_targets, len(by_radius))).astype(int))] if len(by_radius) else by_radius
    clean = training_sets(scheme.name, ds.train_images, ds.train_labels, meta)
    if meta.get("seeds") is not None and not np.array_equal(np.asarray(meta["seeds"], dtype=np.int64), clean.seeds):
        raise PoisonCertError("the scores' seeds do not match the partitions rebuilt from the dataset; is this the right dataset?")
    outcomes: list[PoisonOutcome] = []
    verified_unaffected = False
    for j in targets:
        radius = int(radius_all[j])
        prediction = int(cert.prediction[j])
        target = _runner_up(view[j : j + 1], prediction)  # on the voters the certificate counts (DPA*: partitions)
        if attack == "insert":
            x, y = _insert_attack(ds, j, radius, target, prediction, model_votes_all[j], clean, scheme.name, meta)
        else:
            x, y = _flip_attack(ds, j, radius, target, prediction, model_votes_all[j], clean, registry.learner(threat["learner"]).votes_off_cluster)
        poisoned = training_sets(scheme.name, x, y, meta)
        changed = [m for m in range(clean.n_models) if _contents(ds.train_images, ds.train_labels, clean.members(m)) != _contents(x, y, poisoned.members(m))]
        retrain = list(changed)
        unaffected = [m for m in range(clean.n_models) if m not in set(changed)]
        check_one = not verified_unaffected and bool(unaffected)
        if check_one:
            retrain.append(unaffected[0])
        logits = retrain_fn([(x[poisoned.members(m)], y[poisoned.members(m)]) for m in retrain], [int(poisoned.seeds[m]) for m in retrain])
        if check_one:
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
        new_votes = certify.votes(new_scores)[0]
        votes_to_target = int(((new_votes == target) & (model_votes_all[j] != target)).sum())
        new_prediction = int(registry.predict(scheme.name, name, new_scores, meta)[0])
        n_poisons = radius if attack == "insert" else int((y != ds.train_labels).sum())
        outcomes.append(PoisonOutcome(name, int(j), int(labels[j]), prediction, radius, target, n_poisons, len(changed), votes_to_target, new_prediction))
    if not outcomes:
        raise PoisonCertError(f"{name}: no test sample is correctly classified with a certificate >= 1, so there is nothing to attack; "
                              "the ensemble is too weak for a poison check (more data per model, more epochs) or set poison_check: 0")
    if not verified_unaffected:
        raise PoisonCertError(f"{name}: every attack changed every base model, so no unaffected model could prove that retraining "
                              "reproduces the ensemble bit for bit; the check cannot vouch for these results")
    return outcomes


def _runner_up(scores: np.ndarray, prediction: int) -> int:
    """The class other than the prediction with the most base-model votes (smaller index among equals)."""
    counts = certify.vote_counts(certify.votes(scores), scores.shape[2])[0].astype(np.int64)
    counts[prediction] = -1
    return int(np.argmax(counts))
