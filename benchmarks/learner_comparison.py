"""Data-efficient base learners at the same k (issue 16): certified accuracy vs attack size.

The Lethal Dose Conjecture (Wang, Levine & Feizi 2022): at a fixed number of partitions k, a more
data-efficient base learner raises DPA's certified accuracy. This benchmark trains DPA ensembles
(pixel-sum hash partitions, DPA Theorem 1 certificate) with several base learners on the *same*
partitions and reports, for each learner:

* certified accuracy at every attack size r = 0, 1, ..., per k (figure, CSV, Markdown table);
* the k that maximises certified accuracy at each radius (the envelope over k);
* wall and CPU time of each ensemble (and of the shared extractor).

Learners (``--learners``):

* ``supervised``: the papers' kind of learner, the workflow's ``train`` settings, no augmentation;
* ``crop_flip``: the same plus random crop (``--crop-padding``) and horizontal flips where they keep
  the label (``registry.DATASETS[...].hflip_ok``: fashion_mnist yes, digits no);
* ``trivial_augment``: crop + flip as above plus TrivialAugment (``TrainConfig.augment``);
* ``frozen_centroid`` / ``frozen_knn``: learner ``frozen`` (:mod:`poisoncert.learners.frozen`) on the SS-DPA
  RotNet features; ``rotnet``: SS-DPA's logistic-regression heads on the same features (DPA paper
  Table 2's learner, light).

**Units differ.** The supervised learners' radii count insertions+deletions (DPA Theorem 1); the
three learners on the label-free extractor saw every unlabeled training image, so their radii
count **label flips** only (SS-DPA's unit, DPA Theorem 2): a weaker threat. The figure draws them
dashed and every table row names its unit.

Examples (2-core CPU; about 1 CPU-minute for digits, about 15 for fashion_mnist with a reused extractor)::

    python benchmarks/learner_comparison.py --dataset digits
    python benchmarks/learner_comparison.py --dataset fashion_mnist --ks 50,250,1200 --n-test 2000 \\
        --learners supervised,trivial_augment,frozen_centroid,frozen_knn,rotnet --extractor results/fmnist_ssdpa/extractor.pt

Writes ``<out>/<dataset>.csv`` (learner, unit, k, radius, certified accuracy), ``<dataset>_best_k.csv``,
``<dataset>_times.csv``, ``<dataset>.md`` and ``<dataset>.png``; logits are cached under ``<out>/cache``
(delete it to retrain).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from poisoncert import registry  # noqa: E402
from poisoncert.certify.metrics import certified_accuracy  # noqa: E402
from poisoncert.data import content_hash, load_dataset  # noqa: E402
from poisoncert.learners.frozen import FrozenConfig, fit_predict  # noqa: E402
from poisoncert.partition import make_partitions  # noqa: E402
from poisoncert.learners.extractors import ExtractorConfig, extract_features, train_extractor  # noqa: E402
from poisoncert.learners.heads import HeadConfig, train_heads  # noqa: E402
from poisoncert.train import TrainConfig, runtime_fingerprint, train_shard  # noqa: E402

SUPERVISED = ("supervised", "crop_flip", "trivial_augment")
ON_FEATURES = ("frozen_centroid", "frozen_knn", "rotnet")
LABELS = {
    "supervised": "DPA, supervised (no aug.)",
    "crop_flip": "DPA, supervised + crop/flip",
    "trivial_augment": "DPA, supervised + crop/flip + TrivialAugment",
    "frozen_centroid": "frozen RotNet + nearest centroid",
    "frozen_knn": "frozen RotNet + k-NN",
    "rotnet": "SS-DPA heads on RotNet (paper's)",
}

#: Per dataset: the workflow's train settings (config/fashion_mnist.yaml; TrainConfig's digits defaults),
#: the crop padding, the extractor settings (config/fashion_mnist.yaml's fmnist_ssdpa; defaults) and k.
PRESETS = {
    "digits": {"train": {}, "crop_padding": 1, "extractor": {"arch": "light", "lr_schedule": "cosine", "crop_pad": 0}, "ks": "10,25,50,100"},
    "fashion_mnist": {"train": {"arch": "small_cnn", "epochs": 10}, "crop_padding": 2,
                      "extractor": {"arch": "light", "width": 16, "n_blocks": 3, "feature_block": 2, "epochs": 4, "batch_size": 128, "lr_schedule": "cosine", "crop_pad": 0},
                      "ks": "50,250,1200"},
}


def _workflow_times(paths: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds summed over Snakemake benchmark TSVs (rule benchmark: directive); nan if none."""
    wall = cpu = 0.0
    found = False
    for path in paths:
        with open(path) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                wall += float(row["s"])
                cpu += float(row["cpu_time"])
                found = True
    return (wall, cpu) if found else (float("nan"), float("nan"))


def _workflow_dirs(path: str) -> tuple[Path, str]:
    """results/ and the experiment name of a workflow output under results/{exp}/..."""
    p = Path(path).resolve()
    exp_dir = p if p.is_dir() else p.parent
    return exp_dir.parent, exp_dir.name


def label(learner: str, dataset: str) -> str:
    """The learner's row label; 'crop/flip' says 'crop' where flips are off (not label-preserving)."""
    text = LABELS[learner]
    return text if registry.dataset(dataset).hflip_ok else text.replace("crop/flip", "crop")


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def train_config(learner: str, dataset: str, base: dict, epochs: int | None, crop: int) -> TrainConfig:
    cfg = TrainConfig(**base)
    if epochs:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    if learner == "supervised":
        return cfg
    cfg = dataclasses.replace(cfg, crop_padding=crop, hflip=registry.dataset(dataset).hflip_ok)
    return dataclasses.replace(cfg, augment="trivial_augment") if learner == "trivial_augment" else cfg


def get_extractor(args, ds, preset) -> tuple[dict, float, float, str]:
    """The shared label-free extractor: a given file (checked against the data), a cached one, or trained now."""
    h = content_hash(ds)
    cache = Path(args.out) / "cache" / f"{args.dataset}_extractor.pt"
    for path, how in ((args.extractor, "reused file"), (str(cache), "cached")):
        if path and Path(path).exists():
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("dataset_hash") not in (None, h):
                raise SystemExit(f"{path} was trained on other data than {args.dataset}")
            if state["config"] != {**dataclasses.asdict(ExtractorConfig()), **preset["extractor"]}:
                print(f"note: {path} has extractor config {state['config']}", file=sys.stderr)
            wall, cpu = float(state.get("train_wall_s", "nan")), float(state.get("train_cpu_s", "nan"))
            if how == "reused file":  # the workflow's rule extractor measured itself
                results, exp = _workflow_dirs(path)
                wall, cpu = _workflow_times(sorted((results / "benchmarks" / "extractor").glob(f"{exp}.tsv")))
            return state, wall, cpu, f"{how} {path}"
    state, wall, cpu = _timed(lambda: train_extractor(ds.train_images, ExtractorConfig(**preset["extractor"])))
    state.update(dataset_hash=h, train_wall_s=wall, train_cpu_s=cpu)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache)
    return state, wall, cpu, "trained here"


def ensemble_logits(learner, k, args, ds, test_images, parts, feats, preset) -> tuple[np.ndarray, float, float]:
    """(k, n_test, C) logits of the learner's k base models, cached by (dataset, learner, k, settings)."""
    cache = Path(args.out) / "cache" / f"{args.dataset}_{learner}_k{k}_e{args.epochs or 0}_t{len(test_images)}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["logits"], float(z["wall"]), float(z["cpu"])
    members = [parts.members(m) for m in range(parts.n_models)]
    seeds = [int(s) for s in parts.seeds]
    if learner in args.reuse:
        return _reuse(args.reuse[learner], learner, k, args, ds, len(test_images), parts, preset)
    if learner in SUPERVISED:
        cfg = train_config(learner, args.dataset, preset["train"], args.epochs, preset["crop_padding"])
        sets = [(ds.train_images[m], ds.train_labels[m]) for m in members]
        fn = lambda: train_shard(sets, seeds, test_images, ds.n_classes, cfg, device="cpu", progress=False)  # noqa: E731
    else:
        n = len(ds.train_labels)
        ftr, fte = feats[:n], feats[n:]
        if learner == "rotnet":
            fn = lambda: train_heads(ftr, ds.train_labels, members, seeds, fte, ds.n_classes, HeadConfig())  # noqa: E731
        else:
            fcfg = FrozenConfig("centroid") if learner == "frozen_centroid" else FrozenConfig("knn", args.knn_k)
            fn = lambda: fit_predict(ftr, ds.train_labels, members, seeds, fte, ds.n_classes, fcfg)  # noqa: E731
    logits, wall, cpu = _timed(fn)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, logits=logits, wall=wall, cpu=cpu)
    return logits, wall, cpu


def _reuse(exp_dir: str, learner: str, k: int, args, ds, n_test: int, parts, preset) -> tuple[np.ndarray, float, float]:
    """A supervised ensemble the workflow already trained (results/{exp}/k{k}_d1/scores.npz), checked to be
    the very ensemble this benchmark would train: same data, partitions, seeds and train settings."""
    from poisoncert.scores import read_scores

    scores, _, meta = read_scores(Path(exp_dir) / f"k{k}_d1" / "scores.npz", mmap=True)
    want = dataclasses.asdict(train_config(learner, args.dataset, preset["train"], args.epochs, preset["crop_padding"]))
    norm = lambda x: list(x) if isinstance(x, (tuple, list)) else x  # noqa: E731  (JSON has lists)
    same_train = all(norm(want[key]) == norm(v) for key, v in meta["train"].items() if key in want)
    extra = {key: want[key] for key in want if key not in meta["train"]}  # options newer than the file: must be at their defaults
    ok = (meta.get("dataset_hash") == content_hash(ds) and meta.get("scheme") == "dpa" and meta["seeds"] == [int(x) for x in parts.seeds]
          and same_train and extra == {key: getattr(TrainConfig(), key) for key in extra} and meta.get("learner") == "supervised")
    if not ok:
        raise SystemExit(f"{exp_dir}/k{k}_d1 is not the '{learner}' ensemble of this benchmark (data, partitions, seeds or train settings differ)")
    logits = np.ascontiguousarray(np.transpose(np.asarray(scores[:n_test]), (1, 0, 2)))
    results, exp = _workflow_dirs(exp_dir)
    wall, cpu = _workflow_times(sorted((results / "benchmarks" / "train" / exp / f"k{k}_d1").glob("*.tsv")))
    return logits, wall, cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=sorted(PRESETS))
    p.add_argument("--ks", default=None, help="comma-separated k (default: the preset's)")
    p.add_argument("--learners", default=",".join(SUPERVISED + ON_FEATURES))
    p.add_argument("--epochs", type=int, default=None, help="override the supervised learners' epochs")
    p.add_argument("--knn-k", type=int, default=5)
    p.add_argument("--n-test", type=int, default=0, help="first n test images (0 = all)")
    p.add_argument("--extractor", default=None, help="reuse an extractor file (rule extractor's results/{exp}/extractor.pt)")
    p.add_argument("--reuse", action="append", default=[], metavar="LEARNER=DIR",
                   help="take a supervised learner's ensembles from a workflow run's results/{exp} (checked to match; "
                        "times from its benchmark TSVs, which count the evaluation of the whole test set)")
    p.add_argument("--radii", default=None, help="table radii (default: a preset per k)")
    p.add_argument("--root", default="data")
    p.add_argument("--out", default="results/benchmarks/learners")
    args = p.parse_args(argv)
    args.reuse = dict(x.split("=", 1) for x in args.reuse)
    torch.set_num_threads(1)
    preset = PRESETS[args.dataset]
    ks = [int(x) for x in (args.ks or preset["ks"]).split(",")]
    learners = [x for x in args.learners.split(",") if x]
    unknown = set(learners) - set(LABELS)
    if unknown:
        raise SystemExit(f"unknown learners {sorted(unknown)}; choose from {', '.join(LABELS)}")
    ds = load_dataset(args.dataset, root=args.root)
    n_test = args.n_test or len(ds.test_labels)
    test_images, test_labels = ds.test_images[:n_test], ds.test_labels[:n_test]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    feats, ext_info = None, None
    if any(lr in ON_FEATURES for lr in learners):
        state, ext_wall, ext_cpu, how = get_extractor(args, ds, preset)
        fcache = out / "cache" / f"{args.dataset}_features_t{n_test}.npz"
        if fcache.exists():
            z = np.load(fcache)
            feats, f_wall, f_cpu = z["features"], float(z["wall"]), float(z["cpu"])
        else:
            (feats, f_wall, f_cpu) = _timed(lambda: extract_features(state, np.concatenate([ds.train_images, test_images])))
            np.savez(fcache, features=feats, wall=f_wall, cpu=f_cpu)
        ext_info = {"how": how, "config": state["config"], "train_wall_s": ext_wall, "train_cpu_s": ext_cpu,
                    "features_wall_s": f_wall, "features_cpu_s": f_cpu, "n_features": int(state["n_features"])}
        print(f"extractor ({how}): {state['n_features']} features; train {ext_wall:.0f} s wall / {ext_cpu:.0f} s CPU; "
              f"features of {len(feats)} images {f_wall:.1f} s", flush=True)

    rows, times, curves = [], [], {}
    for k in ks:
        parts = make_partitions(ds.train_images, ds.train_labels, "dpa", k, 1)
        for lr in learners:
            logits, wall, cpu = ensemble_logits(lr, k, args, ds, test_images, parts, feats, preset)
            scores = np.ascontiguousarray(np.transpose(logits, (1, 0, 2)))
            name = "frozen" if lr.startswith("frozen") else ("rotnet" if lr == "rotnet" else "supervised")
            cert = registry.compute("dpa", "dpa", scores, {"k": k, "learner": name})
            radii = np.arange(0, k // 2 + 2)
            acc = certified_accuracy(cert.prediction, cert.radius, test_labels, radii)
            curves[(lr, k)] = (radii, acc, cert.unit)
            base = float((logits.argmax(-1) == test_labels[None]).mean())
            times.append({"learner": lr, "k": k, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "mean_base_accuracy": round(base, 4)})
            for r, a in zip(radii.tolist(), acc.tolist()):
                rows.append({"learner": lr, "unit": cert.unit, "k": k, "radius": r, "certified_accuracy": round(float(a), 5)})
            print(f"k={k:5d} {lr:16s} clean {acc[0]:.4f} base {base:.4f}  {wall:7.1f} s wall {cpu:7.1f} s CPU  ({cert.unit})", flush=True)

    # ---- the k that maximises certified accuracy at each radius ---------------------------
    max_r = max(k // 2 + 1 for k in ks)
    best = []
    for lr in learners:
        for r in range(0, max_r + 1):
            cand = [(curves[(lr, k)][1][r] if r < len(curves[(lr, k)][1]) else 0.0, -k, k) for k in ks]
            a, _, k = max(cand)
            best.append({"learner": lr, "unit": curves[(lr, ks[0])][2], "radius": r, "best_k": k, "certified_accuracy": round(float(a), 5)})

    _write_csv(out / f"{args.dataset}.csv", rows)
    _write_csv(out / f"{args.dataset}_best_k.csv", best)
    _write_csv(out / f"{args.dataset}_times.csv", times)
    table_radii = [int(x) for x in args.radii.split(",")] if args.radii else _default_radii(ks)
    meta = {
        "dataset": args.dataset, "n_train": int(len(ds.train_labels)), "n_test": int(n_test), "ks": ks,
        "train": dataclasses.asdict(train_config("supervised", args.dataset, preset["train"], args.epochs, preset["crop_padding"])),
        "crop_padding": preset["crop_padding"], "hflip": registry.dataset(args.dataset).hflip_ok, "knn_k": args.knn_k,
        "extractor": ext_info, "reused": args.reuse, "runtime": runtime_fingerprint(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or ''}".strip(", "),
    }
    (out / f"{args.dataset}.json").write_text(json.dumps(meta, indent=2) + "\n")
    _write_markdown(out / f"{args.dataset}.md", meta, learners, ks, curves, best, times, table_radii)
    _plot(out / f"{args.dataset}.png", args.dataset, learners, ks, curves, best)
    print(f"wrote {out}/{args.dataset}.{{csv,md,png,json}}, _best_k.csv, _times.csv")
    return 0


def _default_radii(ks):
    top = max(ks) // 2
    grid = [0, 1, 2, 5, 10, 25, 50, 100, 150, 200, 300, 400, 500, 600]
    return [r for r in grid if r <= top]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _acc_at(curve, r):
    radii, acc, _ = curve
    return float(acc[r]) if r < len(acc) else 0.0


def _short_unit(unit: str) -> str:
    return "label flips" if unit == registry.LABEL_FLIPS else "ins.+del."


def _write_markdown(path, meta, learners, ks, curves, best, times, radii) -> None:
    t = {(x["learner"], x["k"]): x for x in times}
    lines = [f"# Base learners at the same k: {meta['dataset']}", "",
             f"DPA partitions (pixel-sum hash), DPA Theorem 1 certificate; {meta['n_train']} training images, "
             f"first {meta['n_test']} test images. Supervised: `{json.dumps({k: meta['train'][k] for k in ('arch', 'epochs', 'batch_size', 'lr')})}`, "
             f"crop padding {meta['crop_padding']}, flips {'on' if meta['hflip'] else 'off (not label-preserving)'} for the augmented rows. "
             f"Runtime {meta['runtime']}, {meta['machine']}.", "",
             "Times are of building the k base models and their test logits here (one process, 1 thread, "
             f"{meta['n_test']} test images)" + (
                 f"; the ensembles of {', '.join(meta['reused'])} were taken from a workflow run ({', '.join(meta['reused'].values())}): "
                 "their times are the sum of its train jobs (shards of `shard_size` models, 10,000 test images each, process start-up included)"
                 if meta["reused"] else "") + ". The machine was shared, so wall time exceeds CPU time.", "",
             "| learner | unit | k | " + " | ".join(f"@{r}" for r in radii) + " | base acc. | wall s | CPU s |",
             "|---|---|---|" + "---|" * len(radii) + "---|---|---|"]
    for k in ks:
        for lr in learners:
            c = curves[(lr, k)]
            cells = " | ".join(f"{100 * _acc_at(c, r):.2f}%" for r in radii)
            x = t[(lr, k)]
            lines.append(f"| {label(lr, meta['dataset'])} | {_short_unit(c[2])} | {k} | {cells} | {100 * x['mean_base_accuracy']:.2f}% | {x['wall_s']:.1f} | {x['cpu_s']:.1f} |")
    lines += ["", "The k that maximises certified accuracy at each radius (certified accuracy there):", "",
              "| learner | unit | " + " | ".join(f"@{r}" for r in radii) + " |", "|---|---|" + "---|" * len(radii)]
    bk = {(b["learner"], b["radius"]): b for b in best}
    for lr in learners:
        cells = " | ".join(f"k={bk[(lr, r)]['best_k']}: {100 * bk[(lr, r)]['certified_accuracy']:.1f}%" if bk[(lr, r)]["certified_accuracy"] > 0 else "—"
                           for r in radii)
        lines.append(f"| {label(lr, meta['dataset'])} | {_short_unit(curves[(lr, ks[0])][2])} | {cells} |")
    if meta["extractor"]:
        e = meta["extractor"]
        lines += ["", f"Shared label-free extractor ({e['how']}): config `{json.dumps(e['config'])}`, {e['n_features']} features; "
                      f"training {e['train_wall_s']:.0f} s wall / {e['train_cpu_s']:.0f} s CPU (once per dataset); "
                      f"features of all train + test images {e['features_wall_s']:.1f} s."]
    path.write_text("\n".join(lines) + "\n")


def _plot(path, dataset, learners, ks, curves, best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ks) + 1, figsize=(4.2 * (len(ks) + 1), 3.8), sharey=True)
    colors = {"supervised": "C0", "crop_flip": "C1", "trivial_augment": "C2", "frozen_centroid": "C3", "frozen_knn": "C4", "rotnet": "C7"}
    for ax, k in zip(axes, ks):
        for lr in learners:
            radii, acc, unit = curves[(lr, k)]
            ax.plot(radii, 100 * acc, color=colors[lr], ls="--" if unit == registry.LABEL_FLIPS else "-", label=label(lr, dataset))
        ax.set_title(f"{dataset}, k = {k}")
        ax.set_xlabel("attack size (solid: insertions+deletions, dashed: label flips)", fontsize=7)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    for lr in learners:
        rs = [b["radius"] for b in best if b["learner"] == lr]
        acc = [100 * b["certified_accuracy"] for b in best if b["learner"] == lr]
        unit = curves[(lr, ks[0])][2]
        ax.plot(rs, acc, color=colors[lr], ls="--" if unit == registry.LABEL_FLIPS else "-", label=label(lr, dataset))
    ax.set_title(f"best k per radius (k in {ks})", fontsize=9)
    ax.set_xlabel("attack size", fontsize=7)
    ax.grid(alpha=0.3)
    axes[0].set_ylabel("certified accuracy (%)")
    axes[-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
