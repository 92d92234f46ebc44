"""The workflow's stages as functions of file paths: the thin I/O layer around the pure maths.

Each Snakemake rule calls one CLI verb (``python -m poisoncert <verb>``), which calls one
function here. Every output is written atomically, so a failed or interrupted step never leaves a
file that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import certify
from .data import atomic_savez, atomic_write_text, load_dataset, load_npz, read_dataset, save_dataset
from .errors import PoisonCertError
from .partition import SELECTION_SCHEMES, make_partitions, make_selections, read_partitions, save_partitions

__all__ = [
    "prepare",
    "partition",
    "phase2",
    "kmeans_scores",
    "shard_range",
    "train",
    "aggregate",
    "read_scores",
    "write_scores",
    "CERTIFICATES",
    "certify_scores",
    "run_certify",
]


# ---------------------------------------------------------------------------------------------- prepare


def prepare(name: str, out: str | os.PathLike, root: str = "data", download: bool = False, seed: int = 0) -> dict:
    """Load dataset ``name`` and write the canonical dataset file ``out``."""
    ds = load_dataset(name, root=root, download=download, seed=seed)
    meta = save_dataset(ds, out)
    print(f"prepared {name}: {meta['n_train']} train, {meta['n_test']} test, images {tuple(meta['image_shape'])}, sha256 {meta['content_hash'][:12]}")
    return meta


# ---------------------------------------------------------------------------------------------- partition


def partition(dataset_file: str, out: str, scheme: str, k: int, d: int = 1, offsets: list[int] | None = None, same_seed: bool = False, seed_base: int = 0, selection: dict[str, Any] | None = None) -> None:
    """Write every base model's training-set indices (canonical order) and seed.

    ``selection`` holds the random-selection parameters (n_models, clean_classes, clean_count,
    balance, balance_size, two_phase) for the schemes bagging, bagging_wor and binomial. With
    ``two_phase`` (Chen et al. Algorithm 3) BALANCE weighs phi_1's classes (poisoned classes and
    the merged clean class), and the partitions file records ``two_phase`` for the train step.
    """
    ds = read_dataset(dataset_file)
    if scheme in SELECTION_SCHEMES:
        sel = selection or {}
        two_phase = bool(sel.get("two_phase"))
        balance_labels = None
        if two_phase:
            from .two_phase import phase1_labels

            if sel.get("clean_count"):
                raise PoisonCertError("the 2-phase classifier is for known-clean classes (case 3); clean_count must be 0")
            balance_labels, _ = phase1_labels(ds.train_labels, ds.n_classes, sel.get("clean_classes"))
        parts = make_selections(
            ds.train_images, ds.train_labels, scheme, k, sel.get("n_models") or 0, seed_base,
            sel.get("clean_classes"), sel.get("clean_count") or 0, bool(sel.get("balance")), sel.get("balance_size"),
            balance_labels,
        )
        parts.extra["train_size"] = int(len(ds.train_labels))
        if two_phase:
            parts.extra["two_phase"] = True
    else:
        parts = make_partitions(ds.train_images, ds.train_labels, scheme, k, d, offsets, same_seed, seed_base)
    save_partitions(parts, out, ds.meta()["content_hash"])
    sizes = parts.sizes()
    print(f"{scheme} k={k} d={d}: {parts.n_models} base models, training-set sizes min {sizes.min()} / mean {sizes.mean():.1f} / max {sizes.max()}")


# ---------------------------------------------------------------------------------------------- extractor


def extractor(dataset_file: str, out: str, config: dict[str, Any], device: str = "auto") -> None:
    """Train the SS-DPA feature extractor once on all unlabeled training images (no labels read)."""
    import torch

    from .semisup import ExtractorConfig, train_extractor

    ds = read_dataset(dataset_file)
    try:
        cfg = ExtractorConfig(**config)
    except TypeError as exc:
        raise PoisonCertError(f"bad extractor configuration: {exc}") from None
    dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    state = train_extractor(ds.train_images, cfg, device=dev)
    state["dataset_hash"] = ds.meta()["content_hash"]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    print(f"extractor trained on {state['n_images']} unique unlabeled images: {state['n_features']} features")


def _read_extractor(path: str) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise PoisonCertError(f"extractor file {path} is missing or corrupt ({type(exc).__name__}); delete it and rerun") from None


# ---------------------------------------------------------------------------------------------- phase 2


def _train_config(train_config: dict[str, Any], threads: int):
    from .train import TrainConfig

    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in train_config.items()}
    fields.setdefault("cpu_threads", threads)
    try:
        return TrainConfig(**fields)
    except TypeError as exc:
        raise PoisonCertError(f"bad training configuration: {exc}") from None


def _device_arg(device: str):
    import torch

    dev = None if device == "auto" else device
    if dev == "cuda" and not torch.cuda.is_available():
        raise PoisonCertError("device: cuda was asked for but no GPU is visible; set device: auto or cpu")
    return dev


def _device_name(dev) -> tuple[str, str]:
    """(device kind used, its recorded name)."""
    import torch

    used = dev or ("cuda" if torch.cuda.is_available() else "cpu")
    return used, used if used == "cpu" else f"cuda:{torch.cuda.get_device_name(0)}"


def phase2(dataset_file: str, out: str, clean_classes: list[int], train_config: dict[str, Any], seed: int = 0, device: str = "auto", threads: int = 1, progress: bool = True) -> None:
    """Chen et al. Algorithm 3, line 8: train the shared phi_2 on D^c (the known-clean classes) only.

    Writes ``logits`` (n_test, #clean classes), the clean classes and metadata. The train step of a
    ``two_phase`` ensemble combines these with every phi_1^i (:func:`poisoncert.two_phase.combine`).
    """
    import torch

    from .train import runtime_fingerprint, train_shard
    from .two_phase import phase2_labels, split_classes

    torch.set_num_threads(threads)
    ds = read_dataset(dataset_file)
    _, clean = split_classes(ds.n_classes, clean_classes)
    mask = np.isin(ds.train_labels, clean)
    y2, n2 = phase2_labels(ds.train_labels[mask], ds.n_classes, clean)
    cfg = _train_config(train_config, threads)
    dev = _device_arg(device)
    logits = train_shard([(ds.train_images[mask], y2)], [int(seed)], ds.test_images, n2, cfg, device=dev, progress=progress)[0]
    used, name = _device_name(dev)
    meta = {
        "clean_classes": clean.tolist(),
        "n_train": int(mask.sum()),
        "seed": int(seed),
        "device": name,
        "threads": threads,
        "torch": torch.__version__,
        "train": dataclasses.asdict(cfg),
        "runtime": runtime_fingerprint(cfg, used),
        "dataset_hash": ds.meta()["content_hash"],
    }
    atomic_savez(out, logits=np.asarray(logits, dtype=np.float32), clean_classes=clean, meta=np.array(json.dumps(meta)))
    acc = float((clean[np.argmax(logits, axis=1)] == ds.test_labels)[np.isin(ds.test_labels, clean)].mean()) if np.isin(ds.test_labels, clean).any() else float("nan")
    print(f"phi_2 trained on {int(mask.sum())} known-clean samples of classes {clean.tolist()}: accuracy {acc:.4f} on their test samples")


def _read_phase2(path: str, dataset_hash: str, clean_classes) -> np.ndarray:
    z = load_npz(path, "phase-2", ("logits", "clean_classes", "meta"))
    meta = json.loads(str(z["meta"]))
    if meta.get("dataset_hash") != dataset_hash:
        raise PoisonCertError(f"{path} was trained on other data; delete it and rerun")
    if sorted(int(c) for c in clean_classes) != z["clean_classes"].tolist():
        raise PoisonCertError(f"{path} was trained on clean classes {z['clean_classes'].tolist()}, the partitions say {sorted(clean_classes)}; delete it and rerun")
    return z["logits"]


# ---------------------------------------------------------------------------------------------- train


def shard_range(shard: int, shard_size: int, n_models: int) -> range:
    """Models of shard ``shard``: fixed by index and shard_size alone, never by data."""
    if shard_size < 1:
        raise PoisonCertError(f"shard_size must be >= 1, got {shard_size}")
    first = shard * shard_size
    if shard < 0 or first >= n_models:
        raise PoisonCertError(f"shard {shard} is out of range: {n_models} models in shards of {shard_size}")
    return range(first, min(first + shard_size, n_models))


def train(dataset_file: str, partitions_file: str, out: str, shard: int, shard_size: int, train_config: dict[str, Any], device: str = "auto", threads: int = 1, progress: bool = True, extractor_file: str | None = None, phase2_file: str | None = None) -> None:
    """Train the base models of one shard and write their test-set logits.

    With ``extractor_file`` (SS-DPA, learner rotnet) each base model is a head on the shared
    label-free features, trained on its own partition's labels only. For a ``two_phase``
    partitions file (Chen et al. Algorithm 3) each phi_1^i is trained on its set with the clean
    classes merged into one virtual class, and the logits written are the one-hot votes of
    phi_2(phi_1^i(x)) with the shared phi_2 of ``phase2_file``.
    """
    import torch

    from .train import runtime_fingerprint, train_shard

    torch.set_num_threads(threads)
    ds = read_dataset(dataset_file)
    parts, pmeta = read_partitions(partitions_file)
    if pmeta["dataset_hash"] != ds.meta()["content_hash"]:
        raise PoisonCertError(f"{partitions_file} was made from other data than {dataset_file}; rerun the partition step")
    two_phase = bool(pmeta.get("two_phase"))
    if two_phase != (phase2_file is not None):
        raise PoisonCertError(
            f"{partitions_file} is a 2-phase ensemble; pass its phase-2 model (--phase2)" if two_phase
            else f"--phase2 is for 2-phase ensembles; {partitions_file} is not one"
        )
    models = shard_range(shard, shard_size, parts.n_models)
    labels, n_classes = ds.train_labels, ds.n_classes
    if two_phase:
        from .two_phase import combine, phase1_labels

        labels, n_classes = phase1_labels(ds.train_labels, ds.n_classes, pmeta["clean_classes"])
    seeds = [int(parts.seeds[m]) for m in models]
    cfg = _train_config(train_config, threads)
    dev = _device_arg(device)
    extra: dict[str, np.ndarray] = {}
    if extractor_file is not None:
        from .semisup import HeadConfig, extract_features, train_heads

        state = _read_extractor(extractor_file)
        if state.get("dataset_hash") != pmeta["dataset_hash"]:
            raise PoisonCertError(f"{extractor_file} was trained on other data; delete it and rerun")
        feats = extract_features(state, np.concatenate([ds.train_images, ds.test_images]))
        n_train = len(ds.train_labels)
        logits = train_heads(feats[:n_train], ds.train_labels, [parts.members(m) for m in models], seeds, feats[n_train:], ds.n_classes, HeadConfig())
    else:
        train_sets = [(ds.train_images[parts.members(m)], labels[parts.members(m)]) for m in models]
        logits = train_shard(train_sets, seeds, ds.test_images, n_classes, cfg, device=dev, progress=progress)
        if two_phase:
            phase2_logits = _read_phase2(phase2_file, pmeta["dataset_hash"], pmeta["clean_classes"])
            extra["phase1_logits"] = np.asarray(logits, dtype=np.float32)
            logits = combine(logits, phase2_logits, ds.n_classes, pmeta["clean_classes"])
    used_device, device_name = _device_name(dev)
    meta = {
        "models": [models.start, models.stop],
        "seeds": seeds,
        "shard_size": shard_size,
        "device": device_name,
        "threads": threads,
        "torch": torch.__version__,
        "train": dataclasses.asdict(cfg),
        "runtime": runtime_fingerprint(cfg, used_device),
        "learner": "rotnet" if extractor_file else ("two_phase" if two_phase else "supervised"),
        "dataset_hash": pmeta["dataset_hash"],
    }
    atomic_savez(out, logits=np.asarray(logits, dtype=np.float32), meta=np.array(json.dumps(meta)), **extra)


# ---------------------------------------------------------------------------------------------- aggregate


def write_scores(path: str | os.PathLike, scores: np.ndarray, labels: np.ndarray, meta: dict[str, Any], compressed: bool = False) -> None:
    """Write the public scores file: float32 (n_test, n_models, n_classes), int64 labels, JSON meta.

    ``compressed``: zip-deflate the arrays (``np.load`` reads either; for one-hot votes of many models).
    """
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    certify.check_scores(scores)
    if labels.shape != (scores.shape[0],):
        raise PoisonCertError(f"labels must have shape ({scores.shape[0]},), got {labels.shape}")
    atomic_savez(path, compressed=compressed, scores=scores, labels=labels, meta=np.array(json.dumps(meta)))


def read_scores(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a scores file (ours, or one a user made from an ensemble trained elsewhere).

    Required arrays: ``scores`` (n_test, n_models, n_classes) and ``labels`` (n_test,). ``meta``
    (a JSON string) is optional for user files; it should say ``scheme``, ``k`` and ``d``.
    """
    z = load_npz(path, "scores", ("scores", "labels"))
    scores = certify.check_scores(z["scores"], name=f"scores in {path}")
    labels = z["labels"]
    if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise PoisonCertError(f"labels in {path} must be integers of shape ({scores.shape[0]},), got {labels.dtype} {labels.shape}")
    meta = json.loads(str(z["meta"])) if "meta" in z else {}
    return scores, labels.astype(np.int64), meta


def aggregate(dataset_file: str, partitions_file: str, shard_files: list[str], out: str, experiment: dict[str, Any]) -> None:
    """Gather every shard's logits into the scores file, checking that nothing is missing or stale."""
    ds = read_dataset(dataset_file)
    parts, pmeta = read_partitions(partitions_file)
    n = parts.n_models
    scores = np.empty((len(ds.test_labels), n, ds.n_classes), dtype=np.float32)
    seen = np.zeros(n, dtype=bool)
    shard_meta = None
    for f in shard_files:
        z = load_npz(f, "logits", ("logits", "meta"))
        m = json.loads(str(z["meta"]))
        if m["dataset_hash"] != pmeta["dataset_hash"]:
            raise PoisonCertError(f"{f} was trained on other data; delete it and rerun")
        a, b = m["models"]
        if z["logits"].shape != (b - a, len(ds.test_labels), ds.n_classes):
            raise PoisonCertError(f"{f} holds logits of shape {z['logits'].shape}, expected {(b - a, len(ds.test_labels), ds.n_classes)}; delete it and rerun")
        if list(m["seeds"]) != [int(s) for s in parts.seeds[a:b]]:
            raise PoisonCertError(f"{f} was trained with other seeds than {partitions_file} says; delete it and rerun")
        scores[:, a:b] = np.transpose(z["logits"], (1, 0, 2))
        seen[a:b] = True
        shard_meta = shard_meta or m
    if not seen.all():
        raise PoisonCertError(f"models {np.flatnonzero(~seen)[:10].tolist()}... have no logits among the {len(shard_files)} shard files")
    meta = {
        **parts.meta(),
        "seeds": parts.seeds.tolist(),
        "dataset": ds.name,
        "dataset_hash": pmeta["dataset_hash"],
        "n_classes": ds.n_classes,
        "partition_sizes": parts.sizes().tolist(),
        "shard_size": shard_meta["shard_size"],
        "device": shard_meta["device"],
        "threads": shard_meta["threads"],
        "torch": shard_meta["torch"],
        "train": shard_meta["train"],
        "experiment": experiment,
    }
    write_scores(out, scores, ds.test_labels, meta)
    print(f"aggregated {n} models x {len(ds.test_labels)} test samples into {out}")


# ---------------------------------------------------------------------------------------------- App. B 2-means


def kmeans_scores(dataset_file: str, out: str, experiment: dict[str, Any] | None = None) -> None:
    """DPA App. B (binary 2-means SS-DPA, k = m) as an ensemble: write its scores file directly.

    2-means on the unlabeled training images (:func:`poisoncert.semisup.binary_kmeans_fit`);
    base classifier i owns the i-th training sample t_i in canonical content order and votes
    label(t_i) on the test images of t_i's cluster, 1 - label(t_i) on the others. The scores are
    these votes as one-hot logits (n_test, m, 2), written compressed; the metadata keeps the
    cluster assignments (``binary_kmeans``) for the closed-form certificate ``binary_kmeans``.
    """
    import hashlib

    from .data import canonical_order
    from .semisup import KMeansConfig, binary_kmeans_fit

    ds = read_dataset(dataset_file)
    if ds.n_classes != 2:
        raise PoisonCertError(f"binary_kmeans (DPA App. B) needs a binary dataset (mnist17, digits17); {ds.name} has {ds.n_classes} classes")
    cfg = KMeansConfig()
    fit = binary_kmeans_fit(ds.train_images, ds.test_images, cfg)
    order = canonical_order(ds.train_images, ds.train_labels)
    train_clusters = fit["train_clusters"][order]
    train_labels = ds.train_labels[order]
    m = len(order)
    same = fit["test_clusters"][:, None] == train_clusters[None, :]
    votes = np.where(same, train_labels[None, :], 1 - train_labels[None, :])
    scores = np.zeros((len(ds.test_labels), m, 2), dtype=np.float32)
    np.put_along_axis(scores, votes[..., None], 1.0, axis=2)
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
        "kmeans": dataclasses.asdict(cfg),
        "centroids_sha256": hashlib.sha256(np.ascontiguousarray(fit["centroids"]).tobytes()).hexdigest(),
        "binary_kmeans": {
            "train_clusters": train_clusters.tolist(),
            "train_labels": train_labels.tolist(),
            "test_clusters": fit["test_clusters"].tolist(),
        },
        "experiment": experiment or {},
    }
    write_scores(out, scores, ds.test_labels, meta, compressed=True)
    sizes = np.bincount(fit["train_clusters"], minlength=2).tolist()
    print(f"binary 2-means on {m} unlabeled training images: clusters of {sizes[0]} and {sizes[1]}; {m} base classifiers x {len(ds.test_labels)} test samples into {out}")


# ---------------------------------------------------------------------------------------------- certify


def _need(meta: dict[str, Any], *keys: str) -> list[Any]:
    missing = [k for k in keys if k not in meta]
    if missing:
        raise PoisonCertError(f"this certificate needs {', '.join(missing)} in the scores metadata (or on the command line: --k, --d, --offsets)")
    return [meta[k] for k in keys]


def _cert_dpa(scores, meta):
    rotnet = meta.get("experiment", {}).get("learner") == "rotnet"
    unit = "label flips" if meta.get("scheme") in ("ssdpa", "binary_kmeans") or rotnet else "insertions+deletions"
    return certify.dpa(scores, unit=unit)


def _cert_binary_kmeans(scores, meta):
    (fit,) = _need(meta, "binary_kmeans")
    tc, y, xc = (np.asarray(fit[key], dtype=np.int64) for key in ("train_clusters", "train_labels", "test_clusters"))
    if scores.shape[:2] != (len(xc), len(y)) or scores.shape[2] != 2:
        raise PoisonCertError(f"scores of shape {scores.shape} do not belong to the stored 2-means fit ({len(xc)} test samples, {len(y)} base classifiers, 2 classes)")
    cert = certify.binary_kmeans(tc, y, xc)
    if not np.array_equal(certify.vote_counts(certify.votes(scores), 2), cert.detail["counts"]):
        raise PoisonCertError("the votes in these scores disagree with the stored 2-means cluster assignments; the scores file was altered")
    return cert


def _cert_fa(scores, meta):
    k, d, offsets = _need(meta, "k", "d", "offsets")
    return certify.fa(scores, k, d, offsets)


def _cert_dpa_roe(scores, meta):
    return certify.dpa_roe(scores)


def _cert_fa_roe(scores, meta):
    k, d, offsets = _need(meta, "k", "d", "offsets")
    return certify.fa_roe(scores, k, d, offsets)


def _cert_dpa_star_roe(scores, meta):
    k, d = _need(meta, "k", "d")
    return certify.dpa_roe(certify.dpa_star_logits(scores, k, d))


def _experiment_value(meta, key, default):
    return meta.get(key, meta.get("experiment", {}).get(key, default))


def _selection_counts(scores, meta):
    counts = certify.vote_counts(certify.votes(scores), scores.shape[2])
    (train_size,) = _need(meta, "train_size")
    subsample = meta.get("subsample_size") or _need(meta, "k")[0]
    return counts, int(train_size), int(subsample), float(_experiment_value(meta, "alpha", 0.001))


def _cert_bagging(scores, meta):
    counts, n, k, alpha = _selection_counts(scores, meta)
    return certify.bagging(counts, n, k, alpha)


def _cert_random_selection(scores, meta):
    counts, n, k, alpha = _selection_counts(scores, meta)
    scheme = _need(meta, "scheme")[0]
    model = _experiment_value(meta, "poisoning_model", "P6")
    return certify.random_selection(counts, scheme, n, k, alpha, model, clean_size=int(meta.get("n_clean") or 0))


#: Certificate name -> function(scores, meta) -> Certificate.
CERTIFICATES: dict[str, Callable[[np.ndarray, dict], certify.Certificate]] = {
    "dpa": _cert_dpa,
    "fa": _cert_fa,
    "dpa_roe": _cert_dpa_roe,
    "fa_roe": _cert_fa_roe,
    "dpa_star_roe": _cert_dpa_star_roe,
    "bagging": _cert_bagging,
    "random_selection": _cert_random_selection,
    "binary_kmeans": _cert_binary_kmeans,
}


def certify_scores(scores: np.ndarray, labels: np.ndarray, meta: dict[str, Any], name: str, radii: list[int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run certificate ``name`` on a scores array; return per-sample columns and a summary."""
    if name not in CERTIFICATES:
        raise PoisonCertError(f"unknown certificate '{name}'; choose one of {', '.join(CERTIFICATES)}")
    cert = CERTIFICATES[name](scores, meta)
    counts = cert.detail.get("counts")
    if counts is not None and counts.shape == (len(labels), scores.shape[2]) and np.all(counts.sum(axis=1) == scores.shape[1]):
        # the certificate already counted every model's vote: reuse it instead of a second argmax
        base_acc = float(counts[np.arange(len(labels)), labels].sum() / (len(labels) * scores.shape[1]))
    else:
        base_acc = float((certify.votes(scores) == labels[:, None]).mean())
    certified = certify.certified_radius_or_minus_one(cert.prediction, cert.radius, labels)
    max_r = int(max(certified.max(initial=0), max(radii, default=0)))
    curve_r = np.arange(max_r + 2)
    curve = certify.certified_accuracy(cert.prediction, cert.radius, labels, curve_r)
    median = certify.median_certified_radius(cert.prediction, cert.radius, labels)
    summary = {
        "certificate": name,
        "unit": cert.unit,
        "n_test": int(len(labels)),
        "n_models": int(scores.shape[1]),
        "clean_accuracy": float((cert.prediction == labels).mean()),
        "mean_base_accuracy": base_acc,
        "median_certified_radius": median,
        "certified_accuracy": {str(r): float(a) for r, a in zip(radii, certify.certified_accuracy(cert.prediction, cert.radius, labels, radii))},
        "curve": {"radius": curve_r.tolist(), "certified_accuracy": curve.tolist()},
    }
    if name == "fa":
        # FA Table 2 (Pr[r↑], Δr over the DPA-style bound on the same kd models) and Table 3
        # (distributional certified accuracy under one poison, FA Theorem 4 / App. D)
        k, d, offsets = _need(meta, "k", "d", "offsets")
        stats = certify.fa_improvement_stats(scores, k, d, offsets or None, labels)
        dist = certify.fa_certified_accuracy(scores, labels, k, d, offsets or None, attack_size=1)
        summary["extra"] = {
            "pr_radius_up": stats["pr_up"],
            "mean_radius_increase": stats["delta_r"],
            "certified_accuracy_distributional": {"1": dist.accuracy},
        }
    columns = {"sample": np.arange(len(labels)), "label": labels, "prediction": cert.prediction, "radius": cert.radius, "certified_radius": certified}
    for key, val in cert.detail.items():
        val = np.asarray(val)
        if val.shape == labels.shape:
            columns[key] = val
    return columns, summary


def run_certify(scores_file: str, name: str, out_csv: str, out_json: str, radii: list[int], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Certify a scores file; write the per-sample CSV and the summary JSON."""
    import pandas as pd

    scores, labels, meta = read_scores(scores_file)
    meta = {**meta, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    columns, summary = certify_scores(scores, labels, meta, name, radii)
    summary["scores_file"] = str(scores_file)
    for key in ("scheme", "k", "d", "dataset", "dataset_hash", "device", "shard_size"):
        if key in meta:
            summary[key] = meta[key]
    atomic_write_text(out_csv, pd.DataFrame(columns).to_csv(index=False))
    atomic_write_text(out_json, json.dumps(summary, indent=1))
    med = summary["median_certified_radius"]
    print(f"{name}: clean accuracy {summary['clean_accuracy']:.4f}, mean base accuracy {summary['mean_base_accuracy']:.4f}, median certified radius {med if med is not None else 'N/A'} ({summary['unit']})")
    return summary


# ---------------------------------------------------------------------------------------------- poison check


def run_poison_check(dataset_file: str, scores_file: str, out_csv: str, out_json: str, n_targets: int = 3) -> dict[str, Any]:
    """Attack certified test samples with as many poisons as their certificate allows, retrain, check."""
    import dataclasses as dc

    import pandas as pd
    import torch

    from .attack import poison_check
    from .train import TrainConfig, train_shard

    ds = read_dataset(dataset_file)
    scores, labels, meta = read_scores(scores_file)
    if meta.get("dataset_hash") != ds.meta()["content_hash"]:
        raise PoisonCertError(f"{scores_file} was made from other data than {dataset_file}")
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["train"].items()}
    cfg = TrainConfig(**fields)
    device = "cpu" if meta["device"] == "cpu" else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise PoisonCertError("these scores were trained on a GPU; run the poison check where one is visible")

    def train_fn(train_sets, seeds):
        return train_shard(train_sets, seeds, ds.test_images, ds.n_classes, cfg, device=device, progress=False)

    outcomes = poison_check(ds, scores, meta, train_fn, n_targets)
    rows = [{**dc.asdict(o), "held": o.held} for o in outcomes]
    table = pd.DataFrame(rows, columns=["sample", "label", "prediction", "radius", "target_class", "n_poisons", "models_changed", "votes_to_target", "new_prediction", "held"])
    print(table.to_string(index=False))
    broken = [o for o in outcomes if not o.held]
    if broken:
        raise PoisonCertError(
            f"{len(broken)} of {len(outcomes)} certified predictions were flipped by an attack within their certificate "
            f"(samples {[o.sample for o in broken]}): the certificate or the training determinism is broken"
        )
    summary = {"scores_file": str(scores_file), "attacked": len(outcomes), "held": len(outcomes) - len(broken), "total_poisons": int(table["n_poisons"].sum()) if rows else 0}
    atomic_write_text(out_csv, table.to_csv(index=False))
    atomic_write_text(out_json, json.dumps(summary, indent=1))
    print(f"poison check: {summary['held']} of {summary['attacked']} attacked certified predictions held")
    return summary
