"""The worked examples of docs/estimator.md: certified ensembles from Python, measured.

    python docs/examples/estimator.py            # both examples (about 3-4 min on 2 shared cores)
    python docs/examples/estimator.py --tabular  # the scikit-learn example only (seconds)

Writes docs/img/estimator_certified_accuracy.png and docs/examples/estimator_results.json.
The Fashion-MNIST example needs Debian's dataset-fashion-mnist (`make data`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from poisoncert.certify import median_certified_radius

HERE = Path(__file__).resolve().parent


def tabular() -> dict:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from poisoncert.ensemble import PartitionAggregationClassifier

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    out = {"dataset": "breast_cancer", "n_train": len(y_train), "n_test": len(y_test), "runs": []}
    single = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, y_train)
    out["single_model_accuracy"] = float(single.score(X_test, y_test))
    for scheme, d, certificate in (("dpa", 1, "dpa"), ("dpa", 1, "dpa_roe"), ("fa", 4, "fa")):
        t = time.perf_counter()
        clf = PartitionAggregationClassifier(make_pipeline(StandardScaler(), LogisticRegression()), k=25, scheme=scheme, d=d, certificate=certificate)
        cert = clf.fit(X_train, y_train).certify(X_test, y_test)
        radii = np.arange(0, 14)
        out["runs"].append({"scheme": scheme, "k": 25, "d": d, "certificate": certificate, "unit": cert.unit, "seconds": round(time.perf_counter() - t, 2),
                            "radius": radii.tolist(), "certified_accuracy": cert.certified_accuracy(radii).round(4).tolist(),
                            "median_radius": median_certified_radius(cert.prediction, cert.radius, y_test)})
    return out


def cnn() -> dict:
    from poisoncert.data import load_dataset
    from poisoncert.ensemble import EngineCNN, PartitionAggregationClassifier

    ds = load_dataset("fashion_mnist")  # uint8 (60000, 1, 28, 28): partitions by pixel sum, as the workflow
    t = time.perf_counter()
    clf = PartitionAggregationClassifier(EngineCNN(arch="small_cnn", epochs=2), k=50).fit(ds.train_images, ds.train_labels)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    scores = clf.scores(ds.test_images)  # one pass over the test set; both certificates read it
    eval_s = time.perf_counter() - t
    from poisoncert import registry

    out = {"dataset": "fashion_mnist", "n_train": len(ds.train_labels), "n_test": len(ds.test_labels), "k": 50, "epochs": 2,
           "fit_seconds": round(fit_s, 1), "scores_seconds": round(eval_s, 1), "runs": []}
    radii = np.arange(0, 26)
    for certificate in ("dpa", "dpa_roe"):
        cert = registry.compute("dpa", certificate, scores, clf.meta_)
        ok = np.where(cert.prediction == ds.test_labels, cert.radius, -1)
        acc = [(ok >= r).mean() for r in radii]
        out["runs"].append({"certificate": certificate, "unit": cert.unit, "radius": radii.tolist(), "certified_accuracy": np.round(acc, 4).tolist(),
                            "median_radius": median_certified_radius(cert.prediction, cert.radius, ds.test_labels)})
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [r for r in (results.get("tabular"), results.get("cnn")) if r]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, res in zip(axes[0], panels):
        for run in res["runs"]:
            label = {"dpa": "DPA", "dpa_roe": "DPA+ROE", "fa": f"FA (d={run.get('d')})"}[run["certificate"]]
            ax.step(run["radius"], run["certified_accuracy"], where="post", label=label)
        k = res.get("k") or res["runs"][0]["k"]
        title = (f"breast_cancer, logistic regression, k={k}" if res["dataset"] == "breast_cancer"
                 else f"Fashion-MNIST, small CNN (2 epochs), k={k}")
        ax.set(title=title, xlabel="attack size (insertions + deletions)", ylabel="certified accuracy", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tabular", action="store_true", help="only the scikit-learn example")
    args = p.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    results = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "tabular": tabular()}
    if not args.tabular:
        results["cnn"] = cnn()
    (HERE / "estimator_results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, HERE.parent / "img" / "estimator_certified_accuracy.png")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
