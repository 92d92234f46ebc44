"""DPA App. B (binary 2-means SS-DPA, k = m) as a workflow scheme: config, scores file, certificates, a run."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from poisoncert import certify
from poisoncert.config import ensembles, validate_config
from poisoncert.data import TRAIN_SIZES, canonical_order, load_dataset, save_dataset
from poisoncert.errors import PoisonCertError
from poisoncert.learners.kmeans import binary_kmeans_base_votes, binary_kmeans_fit
from poisoncert.scores import read_scores
from poisoncert.stages.certify import certify_scores, run_certify
from poisoncert.stages.kmeans_scores import kmeans_scores


def _exp(**kw):
    base = {"dataset": "digits17", "scheme": "binary_kmeans"}
    base.update(kw)
    return {"experiments": {"b": base}}


@pytest.fixture(scope="module")
def digits17():
    return load_dataset("digits17")


def test_digits17_is_the_ones_and_sevens(digits17):
    assert len(digits17.train_labels) == TRAIN_SIZES["digits17"] == 289 and len(digits17.test_labels) == 72
    assert digits17.n_classes == 2 and digits17.class_names == ["1", "7"]
    full = load_dataset("digits")
    ones = np.concatenate([full.train_images, full.test_images])[np.concatenate([full.train_labels, full.test_labels]) == 1]
    assert sorted(map(bytes, ones)) == sorted(map(bytes, np.concatenate([digits17.train_images, digits17.test_images])[
        np.concatenate([digits17.train_labels, digits17.test_labels]) == 0]))
    other = load_dataset("digits17", seed=3)
    assert len(other.train_labels) == 289 and not np.array_equal(other.train_labels, digits17.train_labels)


def test_config_fills_k_with_the_training_set_size():
    cfg = validate_config(_exp())
    e = cfg["experiments"]["b"]
    assert e["k"] == [289] and e["d"] == [1] and e["certificates"] == ["binary_kmeans"]
    assert ensembles(cfg)[0]["n_models"] == 289
    assert validate_config(_exp(k=[289], certificates=["binary_kmeans", "dpa"]))["experiments"]["b"]["k"] == [289]
    assert validate_config({"experiments": {"m": {"dataset": "mnist17", "scheme": "binary_kmeans"}}})["experiments"]["m"]["k"] == [13007]


@pytest.mark.parametrize(
    "cfg,match",
    [
        (_exp(k=[10]), r"experiments\.b\.k: scheme 'binary_kmeans' has k = m = 289 \(the digits17 training set"),
        (_exp(dataset="digits"), r"experiments\.b\.dataset: scheme 'binary_kmeans' needs a binary dataset"),
        (_exp(d=[2]), r"experiments\.b\.d: scheme 'binary_kmeans' has no d"),
        (_exp(certificates=["fa"]), r"experiments\.b\.certificates: fa cannot certify a 'binary_kmeans' ensemble"),
        (_exp(learner="rotnet"), r"experiments\.b\.learner: rotnet is for schemes ssdpa and dpa"),
        ({"experiments": {"x": {"dataset": "digits", "scheme": "dpa"}}}, r"experiments\.x\.k: required for scheme 'dpa'"),
    ],
)
def test_bad_binary_kmeans_config_is_one_line(cfg, match):
    with pytest.raises(PoisonCertError, match=match) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory, digits17):
    d = tmp_path_factory.mktemp("appb")
    save_dataset(digits17, d / "digits17.npz")
    out = d / "scores.npz"
    kmeans_scores(str(d / "digits17.npz"), str(out), {"scheme": "binary_kmeans"})
    return out


def test_scores_file_holds_the_literal_base_classifiers(scores_file, digits17):
    scores, labels, meta = read_scores(scores_file)
    m = len(digits17.train_labels)
    assert scores.shape == (72, m, 2) and np.array_equal(labels, digits17.test_labels)
    assert set(np.unique(scores)) <= {0.0, 1.0} and (scores.sum(axis=2) == 1).all()  # one-hot votes
    assert meta["scheme"] == "binary_kmeans" and meta["k"] == m and meta["d"] == 1 and meta["learner"] == "binary_kmeans"
    assert meta["dataset"] == "digits17" and len(meta["dataset_hash"]) == 64
    literal = binary_kmeans_base_votes(digits17.train_images, digits17.train_labels, digits17.test_images)
    # model i = training sample i in canonical order
    order = canonical_order(digits17.train_images, digits17.train_labels)
    assert np.array_equal(certify.votes(scores), literal[:, order])
    assert np.array_equal(certify.vote_counts(certify.votes(scores), 2), certify.vote_counts(literal, 2))


def test_certificates_equal_the_closed_form(scores_file, digits17):
    scores, labels, meta = read_scores(scores_file)
    fit = binary_kmeans_fit(digits17.train_images, digits17.test_images)
    closed = certify.binary_kmeans(fit["train_clusters"], digits17.train_labels, fit["test_clusters"])
    cols, summary = certify_scores(scores, labels, meta, "binary_kmeans", [0, 1, 100])
    assert np.array_equal(cols["prediction"], closed.prediction) and np.array_equal(cols["radius"], closed.radius)
    assert summary["unit"] == "label flips" and summary["n_models"] == 289
    dcols, dsummary = certify_scores(scores, labels, meta, "dpa", [0, 1, 100])
    assert np.array_equal(dcols["prediction"], closed.prediction) and np.array_equal(dcols["radius"], closed.radius)
    assert dsummary["unit"] == "label flips" and dsummary["certified_accuracy"] == summary["certified_accuracy"]
    # every test image shares the margin |2A - m| (App. B)
    A = int(closed.detail["A"][0])
    assert set(np.abs(closed.detail["counts"][:, 0] - closed.detail["counts"][:, 1])) == {abs(2 * A - 289)}


def test_certificate_rejects_altered_or_foreign_scores(scores_file, tmp_path):
    scores, labels, meta = read_scores(scores_file)
    bad = scores.copy()
    bad[0, 0] = bad[0, 0, ::-1]
    with pytest.raises(PoisonCertError, match="disagree with the stored 2-means"):
        certify_scores(bad, labels, meta, "binary_kmeans", [0])
    with pytest.raises(PoisonCertError, match="needs binary_kmeans in the scores metadata"):
        certify_scores(scores, labels, {"scheme": "binary_kmeans"}, "binary_kmeans", [0])
    # a file that names no scheme is certified under the default threat model (DPA), which App. B's certificate is not for
    with pytest.raises(PoisonCertError, match="not sound for a 'dpa' ensemble.*allowed: dpa, dpa_roe"):
        certify_scores(scores, labels, {}, "binary_kmeans", [0])
    summary = run_certify(str(scores_file), "binary_kmeans", str(tmp_path / "c.csv"), str(tmp_path / "c.json"), [0, 1])
    assert summary["scheme"] == "binary_kmeans" and summary["k"] == 289 and summary["dataset"] == "digits17"


def test_end_to_end_appb_workflow(repo_root, tmp_path, snakemake):
    cfg = tmp_path / "appb.yaml"
    cfg.write_text(yaml.safe_dump({
        "radii": [0, 10, 100],
        "paper_tables": ["dpa_text"],
        "experiments": {
            "appb": {"dataset": "digits17", "scheme": "binary_kmeans", "certificates": ["binary_kmeans", "dpa"]},
            "dpa17": {"dataset": "digits17", "scheme": "dpa", "k": [3], "train": {"epochs": 1}},
        },
    }))
    proc = snakemake(tmp_path, "--configfile", cfg, "--cores", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    assert "kmeans_scores" in out
    res = tmp_path / "results"
    d = res / "appb" / "k289_d1"
    assert not (d / "partitions.npz").exists() and not (d / "logits").exists()  # no partition / train jobs
    assert (res / "dpa17" / "k3_d1" / "partitions.npz").exists()  # the other experiment still aggregates
    scores, labels, meta = read_scores(d / "scores.npz")
    assert scores.shape == (72, 289, 2) and meta["learner"] == "binary_kmeans"
    a = pd.read_csv(d / "certificates" / "binary_kmeans.csv")
    b = pd.read_csv(d / "certificates" / "dpa.csv")
    assert np.array_equal(a["radius"], b["radius"]) and np.array_equal(a["prediction"], b["prediction"])
    summary = json.loads((d / "certificates" / "binary_kmeans.json").read_text())
    assert summary["unit"] == "label flips" and summary["clean_accuracy"] > 0.9
    table = pd.read_csv(res / "appb" / "report" / "table.csv")
    assert sorted(table["certificate"]) == ["binary_kmeans", "dpa"]
    paper = pd.read_csv(res / "paper_tables" / "dpa_text.csv")
    assert set(paper["status"]) == {"not yet run"}  # digits17 is not the paper's mnist17


def test_mnist17_run_would_fill_the_dpa_text_cells(scores_file, repo_root):
    """The paper config's summaries (dataset mnist17, scheme/certificate binary_kmeans, k = m = 13007, d = 1)
    match both rows of workflow/poisoncert/paper_results/dpa_text.csv."""
    from poisoncert.config import load_config_file
    from poisoncert.papers import compare, load_published

    cfg = load_config_file(repo_root / "config" / "dpa_appB_mnist17.yaml")
    (name, e), = cfg["experiments"].items()
    assert cfg["paper_tables"] == ["dpa_text"] and 5952 in cfg["radii"]
    scores, labels, meta = read_scores(scores_file)
    _, summary = certify_scores(scores, labels, meta, e["certificates"][0], cfg["radii"])
    summary.update(dataset=e["dataset"], scheme=e["scheme"], k=e["k"][0], d=e["d"][0])  # what run_certify copies from meta
    summary["n_models"] = e["k"][0]  # MNIST 1/7 has k = m base classifiers (these digits scores have fewer)
    table = compare(load_published("dpa_text"), [summary])
    assert len(table) == 2 and set(table["status"]) == {"ours"}

