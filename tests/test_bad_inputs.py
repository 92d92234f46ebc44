"""Every bad input is one line that says what is wrong and how to fix it: never a traceback, never a
silently wrong result, no partial output. Each case of issue 13, then property-based tests that feed
random malformed configs and scores files through the real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisoncert import certify
from poisoncert.cli import main
from poisoncert.config import check_yaml_or_exit, load_config_file, validate_config
from poisoncert.errors import PoisonCertError
from poisoncert.scores import write_scores

GOOD = {"experiments": {"e": {"dataset": "digits", "scheme": "dpa", "k": [5]}}}


def _with(**exp):
    return {"experiments": {"e": {**GOOD["experiments"]["e"], **exp}}}


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({}, r"'experiments' is a required property"),
        ({"radii": [0, 1]}, r"'experiments' is a required property"),
        (_with(k=[5.0]), r"experiments\.e\.k\[0\]: 5\.0 must be a whole number"),
        (_with(train={"epochs": 2.0}), r"experiments\.e\.train\.epochs: 2\.0 must be a whole number"),
        ({**GOOD, "radii": [0, 1.0]}, r"radii\[1\]: 1\.0 must be a whole number"),
        (_with(k=[5, 5]), r"experiments\.e\.k: \[5, 5\] has repeated values"),
        ({**GOOD, "radii": [1, 1]}, r"radii: \[1, 1\] has repeated values"),
        (_with(scheme="bagging", clean_classes=[12]), r"experiments\.e\.clean_classes: \[12\] are not classes of digits \(0\.\.9\)"),
        ({"experiments": {"compare": GOOD["experiments"]["e"]}}, r"experiments\.compare: 'compare' is a folder results/ uses itself"),
        ({"experiments": {"logs": GOOD["experiments"]["e"]}}, r"experiments\.logs: 'logs' is a folder"),
        (_with(k=[True]), r"experiments\.e\.k\[0\]: True is not of type 'integer'"),
        (_with(train={"momentum": 1.0}), r"experiments\.e\.train\.momentum"),
    ],
)
def test_bad_config_is_one_line(cfg, match):
    with pytest.raises(PoisonCertError, match=match) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  e:\n    dataset: digits\n   scheme: dpa\n")
    with pytest.raises(PoisonCertError, match=r"bad\.yaml, line 4, column 4: not valid YAML"):
        load_config_file(bad)
    assert main(["check-config", str(bad)]) == 2
    assert "line 4, column 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check_yaml_or_exit(bad)  # the Snakefile's own config.yaml
    assert capsys.readouterr().err.startswith("poisoncert: invalid config: config file")


def test_empty_partition_warning_tells_the_truth(digits):
    from poisoncert.partition import make_partitions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_partitions(digits.train_images[:20], digits.train_labels[:20], "dpa", 19)
    msg = " ".join(str(w.message) for w in caught)
    assert "zero logits" in msg and "vote for class 0" in msg and "like any other" not in msg


# ---------------------------------------------------------------------------------------------- stages


@pytest.fixture
def digits_files(tmp_path):
    from poisoncert.stages.partition import partition
    from poisoncert.stages.prepare import prepare

    data = tmp_path / "digits.npz"
    prepare("digits", data)
    parts = tmp_path / "parts.npz"
    partition(str(data), str(parts), "dpa", 6)
    return data, parts


def test_a_diverged_shard_fails_naming_its_models(digits_files, tmp_path):
    from poisoncert.stages.train import train

    data, parts = digits_files
    out = tmp_path / "shard0.npz"
    with pytest.raises(PoisonCertError, match=r"base models \[0, 1, 2.*of shard 0 produced non-finite logits.*lower train\.lr"):
        train(str(data), str(parts), str(out), 0, 3, {"epochs": 1, "lr": 1e5, "momentum": 0.0, "nesterov": False}, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".shard0*"))


def test_aggregate_refuses_shards_of_different_runtimes(digits_files, tmp_path):
    from poisoncert.data import atomic_savez, load_npz
    from poisoncert.stages.aggregate import aggregate
    from poisoncert.stages.train import train

    data, parts = digits_files
    shards = [tmp_path / f"shard{s}.npz" for s in (0, 1)]
    for s, path in enumerate(shards):
        train(str(data), str(parts), str(path), s, 3, {"epochs": 1}, progress=False)
    z = load_npz(shards[1], "logits", ("logits", "meta"))
    meta = json.loads(str(z["meta"]))
    meta["runtime"]["cpu_threads"] = 2  # as if retrained with another train_threads
    atomic_savez(shards[1], logits=z["logits"], meta=np.array(json.dumps(meta)))
    out = tmp_path / "scores.npz"
    with pytest.raises(PoisonCertError, match=r"shard1\.npz was trained by another runtime.*delete the stale shards"):
        aggregate(str(data), str(parts), [str(p) for p in shards], str(out), {})
    assert not out.exists()


def test_corrupt_mnist_files_are_called_corrupt(tmp_path):
    from poisoncert.data import load_dataset

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(PoisonCertError, match=r"exist but cannot be read.*corrupt or truncated: replace") as info:
        load_dataset("mnist", root=tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(PoisonCertError, match=r"not found under"):
        load_dataset("mnist", root=tmp_path / "nowhere")


def test_report_refuses_a_json_that_is_not_a_summary(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    rc = main(["report", str(other), "--out-csv", str(tmp_path / "t.csv"), "--out-md", str(tmp_path / "t.md"),
               "--out-png", str(tmp_path / "t.png"), "--out-pdf", str(tmp_path / "t.pdf")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is not a certificate summary" in err[0]
    assert not list(tmp_path.glob("t.*"))


# ---------------------------------------------------------------------------------------------- scores format


def _scores(n=4, m=5, c=3):
    s = np.zeros((n, m, c), np.float32)
    s[:, :, 0] = 1
    return s


def _write_raw(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _certify(path, tmp_path, *flags):
    return main(["certify", str(path), "--certificate", "dpa", "--out-csv", str(tmp_path / "o.csv"), "--out-json", str(tmp_path / "o.json"), *flags])


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"scores": _scores(), "labels": np.array([0, 1, 2, 3])}, r"labels in .* must lie in \[0, 3\).*found 3"),
        ({"scores": _scores(), "labels": np.array([0, -1, 0, 0])}, r"must lie in \[0, 3\).*found -1"),
        ({"scores": _scores(), "labels": np.array([0.0, 1, 0, 0])}, r"labels in .* must be integers"),
        ({"scores": _scores(), "labels": np.zeros(4, int), "meta": np.array("{not json")}, r"'meta' in .* is not valid JSON"),
        ({"scores": _scores(), "labels": np.zeros(4, int), "meta": np.array(json.dumps({"k": "5"}))}, r"'k' must be an integer >= 1, got '5'"),
        ({"scores": _scores(), "labels": np.zeros(4, int), "meta": np.array(json.dumps([1, 2]))}, r"must be a JSON object"),
        ({"scores": _scores(), "labels": np.zeros(4, int), "meta": np.array(json.dumps({"scheme": "dpa_typo"}))}, r"unknown scheme 'dpa_typo'; choose one of"),
        ({"labels": np.zeros(4, int)}, r"lacks scores"),
    ],
)
def test_bad_scores_file_is_one_line_and_leaves_nothing(tmp_path, capsys, arrays, match):
    import re

    path = tmp_path / "s.npz"
    _write_raw(path, **arrays)
    assert _certify(path, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.json").exists()


def test_out_csv_pointing_at_a_folder(tmp_path, capsys, monkeypatch):
    path = tmp_path / "s.npz"
    write_scores(path, _scores(), np.zeros(4, int), {})
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    rc = main(["certify", str(path), "--certificate", "dpa", "--out-csv", str(tmp_path / "folder"), "--out-json", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is a folder" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "s.npz"]  # no stray temporary file


def test_missing_metadata_names_the_right_flags(tmp_path, capsys):
    path = tmp_path / "s.npz"
    write_scores(path, _scores(), np.zeros(4, int), {"scheme": "bagging"})
    rc = main(["certify", str(path), "--certificate", "bagging", "--out-csv", str(tmp_path / "o.csv"), "--out-json", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "--train-size" in err and "--offsets" not in err
    write_scores(path, _scores(m=4), np.zeros(4, int), {"scheme": "fa"})
    rc = main(["certify", str(path), "--certificate", "fa", "--out-csv", str(tmp_path / "o.csv"), "--out-json", str(tmp_path / "o.json")])
    assert rc == 2 and "--k, --d, --offsets" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- maths API


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: certify.dpa([[[1, 0]], [[1, 0, 0]]]), "rectangular array"),
        (lambda: certify.bagging(np.array([[5, 1]]), 100, 10, "0.1"), "alpha must be a number"),
        (lambda: certify.bagging(np.array([[5, 1]]), 100, 10, None), "alpha must be a number"),
        (lambda: certify.median_certified_radius(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int)), "zero test samples"),
        (lambda: certify.fa_from_votes(np.array([[0.5, 1.0]]), 2, 2, 1), "not fractions"),
        (lambda: certify.fa_certified_accuracy(np.zeros((1, 2, 2), np.float32), np.array([5]), 2, 1), r"labels must lie in \[0, 2\)"),
        (lambda: certify.dpa_from_counts([[0, 0]]), "same, non-zero number"),
        (lambda: certify.dpa_from_counts([[1, 0], [2, 0]]), "row 1 sums to 2"),
        (lambda: certify.random_selection(np.array([[5, 1]]), "binomial", 100, 10, alpha=[0.1]), "alpha must be a number"),
    ],
)
def test_maths_api_errors_are_poisoncert_errors(call, match):
    with pytest.raises(PoisonCertError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- property-based

_BAD_VALUES = {
    "k": st.one_of(st.just([]), st.lists(st.integers(max_value=0), min_size=1, max_size=3), st.just([2.5]), st.just([4.0]), st.just("5"), st.just([3, 3])),
    "d": st.one_of(st.just([0]), st.just([1.0]), st.just("1"), st.just([])),
    "scheme": st.text(min_size=1, max_size=8).filter(lambda t: t not in ("dpa", "ssdpa", "fa", "dpa_star", "bagging", "bagging_wor", "binomial", "binary_kmeans")),
    "dataset": st.text(min_size=1, max_size=8).filter(lambda t: t not in ("digits", "digits17", "mnist", "mnist17", "cifar10", "gtsrb", "gtsrb48", "fashion_mnist")),
    "certificates": st.sampled_from([["fa"], ["bagging"], ["dpa_star_roe"], ["nope"], []]),
    "train": st.one_of(st.fixed_dictionaries({"epochs": st.sampled_from([0, -1, 2.0, "3"])}), st.fixed_dictionaries({"lr": st.sampled_from([0, -0.1, "x"])}),
                       st.fixed_dictionaries({"arch": st.sampled_from(["vgg", ""])}), st.fixed_dictionaries({"bogus": st.integers()})),
    "poison_check": st.sampled_from([-1, 1.5, "2"]),
    "clean_classes": st.sampled_from([[10], [3, 3], [-1]]),
}
_BAD_TOP = {
    "radii": st.sampled_from([[], [-1], [1, 1], [0.5], "0,1"]),
    "shard_size": st.sampled_from([0, 2.0, "16"]),
    "device": st.sampled_from(["gpu", "", 1]),
    "bogus_key": st.integers(),
}

bad_configs = st.one_of(
    st.tuples(st.sampled_from(sorted(_BAD_VALUES)), st.data()).map(lambda t: ("exp", t[0], t[1])),
    st.tuples(st.sampled_from(sorted(_BAD_TOP)), st.data()).map(lambda t: ("top", t[0], t[1])),
    st.sampled_from(["compare", "data", "bad name", "-x"]).map(lambda n: ("name", n, None)),
)


def _bad_config(kind, key, data):
    cfg = json.loads(json.dumps(GOOD))
    if kind == "exp":
        cfg["experiments"]["e"][key] = data.draw(_BAD_VALUES[key], label=key)
    elif kind == "top":
        cfg[key] = data.draw(_BAD_TOP[key], label=key)
    else:
        cfg["experiments"] = {key: cfg["experiments"]["e"]}
    return cfg


def _one_error_line(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("poisoncert:")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_configs)
def test_random_malformed_configs_are_one_line_in_process(case):
    kind, key, data = case
    cfg = _bad_config(kind, key, data)
    with pytest.raises(PoisonCertError) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value) and str(info.value).startswith("config key")


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=bad_configs)
def test_random_malformed_configs_stop_snakemake_with_one_line(repo_root, tmp_path_factory, snakemake, case):
    kind, key, data = case
    work = tmp_path_factory.mktemp("badcfg")
    cfg = work / "bad.yaml"
    cfg.write_text(yaml.safe_dump(_bad_config(kind, key, data)))
    proc = snakemake(work, "-n", "--cores", "1", "--configfile", cfg, timeout=120)
    assert proc.returncode != 0
    assert len(_one_error_line(proc.stderr)) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (work / "results").exists()


def _malformed_scores(draw) -> dict[str, np.ndarray]:
    n, m, c = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(2, 4))
    scores = np.random.default_rng(draw(st.integers(0, 99))).normal(size=(n, m, c)).astype(np.float32)
    labels = np.zeros(n, np.int64)
    meta: object = {"scheme": "dpa"}
    fault = draw(st.sampled_from(["nan", "inf", "label_high", "label_neg", "label_float", "label_shape", "meta_json", "meta_type", "meta_list",
                                  "scheme", "no_scores", "no_labels", "scores_2d", "scores_empty", "scores_str", "unsound"]))
    if fault == "nan":
        scores[draw(st.integers(0, n - 1)), 0, 0] = np.nan
    elif fault == "inf":
        scores[0, draw(st.integers(0, m - 1)), 0] = -np.inf
    elif fault == "label_high":
        labels[draw(st.integers(0, n - 1))] = c + draw(st.integers(0, 5))
    elif fault == "label_neg":
        labels[0] = -draw(st.integers(1, 5))
    elif fault == "label_float":
        labels = labels.astype(np.float64) + 0.5
    elif fault == "label_shape":
        labels = np.zeros(n + 1, np.int64)
    elif fault == "meta_json":
        meta = draw(st.sampled_from(["{", "[1,", "k=5", ""]))
    elif fault == "meta_type":
        meta = {"scheme": "fa", draw(st.sampled_from(["k", "d", "offsets"])): draw(st.sampled_from(["5", -1, 2.5, [1.5]]))}
    elif fault == "meta_list":
        meta = [1, 2]
    elif fault == "scheme":
        meta = {"scheme": draw(st.text(min_size=1, max_size=6).filter(lambda t: t not in ("dpa", "fa", "ssdpa", "dpa_star", "bagging", "bagging_wor", "binomial", "binary_kmeans")))}
    elif fault == "unsound":
        meta = {"scheme": draw(st.sampled_from(["fa", "bagging", "bagging_wor", "binomial"]))}  # schemes dpa is not sound for
    arrays: dict[str, np.ndarray] = {"scores": scores, "labels": labels, "meta": np.array(meta if isinstance(meta, str) else json.dumps(meta))}
    if fault == "no_scores":
        del arrays["scores"]
    elif fault == "no_labels":
        del arrays["labels"]
    elif fault == "scores_2d":
        arrays["scores"] = scores[:, 0, :]
    elif fault == "scores_empty":
        arrays["scores"] = scores[:, :0, :]
    elif fault == "scores_str":
        arrays["scores"] = np.array([["a"]])
    return arrays


malformed_scores = st.composite(lambda draw: _malformed_scores(draw))()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(arrays=malformed_scores)
def test_random_malformed_scores_are_one_line_in_process(tmp_path_factory, capsys, arrays):
    work = tmp_path_factory.mktemp("badscores")
    _write_raw(work / "s.npz", **arrays)
    capsys.readouterr()
    assert _certify(work / "s.npz", work) == 2  # dpa: refused for fa/bagging/binomial/binary_kmeans ensembles
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poisoncert: error:"), err
    assert sorted(p.name for p in work.iterdir()) == ["s.npz"]


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(arrays=malformed_scores, truncate=st.booleans())
def test_random_malformed_scores_through_python_m_poisoncert(repo_root, tmp_path_factory, arrays, truncate):
    work = tmp_path_factory.mktemp("badscores")
    path = work / "s.npz"
    _write_raw(path, **arrays)
    if truncate:
        path.write_bytes(path.read_bytes()[: max(10, path.stat().st_size // 2)])
    env = {**os.environ, "PYTHONPATH": str(repo_root / "workflow")}
    proc = subprocess.run([sys.executable, "-m", "poisoncert", "certify", str(path), "--certificate", "dpa", "--out-csv", str(work / "o.csv"),
                           "--out-json", str(work / "o.json")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poisoncert:"), proc.stderr
    assert "Traceback" not in proc.stderr and sorted(p.name for p in work.iterdir()) == ["s.npz"]


# ---------------------------------------------------------------------------------------------- scores at scale


def test_scores_writer_streams_and_read_scores_maps(tmp_path):
    from poisoncert.scores import npz_memmap, read_scores, scores_writer

    rng = np.random.default_rng(0)
    full = rng.normal(size=(6, 10, 3)).astype(np.float32)
    meta: dict = {}
    with scores_writer(tmp_path / "s.npz", full.shape, np.arange(6) % 3, meta) as arr:
        for a in range(0, 10, 4):  # shard by shard
            arr[:, a : a + 4] = full[:, a : a + 4]
        meta["scheme"] = "dpa"
    scores, labels, m = read_scores(tmp_path / "s.npz", mmap=True)
    assert isinstance(scores, np.memmap) or isinstance(scores.base, np.memmap)  # mapped, not read into memory
    assert np.array_equal(scores, full) and m == {"scheme": "dpa"}
    assert np.array_equal(read_scores(tmp_path / "s.npz")[0], full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]
    write_scores(tmp_path / "c.npz", full, np.zeros(6, int), {}, compressed=True)
    assert npz_memmap(tmp_path / "c.npz", "scores") is None  # compressed: read into memory instead
    with pytest.raises(PoisonCertError, match="NaN"):
        with scores_writer(tmp_path / "bad.npz", full.shape, np.zeros(6, int), {}) as arr:
            arr[:] = np.nan
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "s.npz"]  # nothing half-written left


def test_corrupt_stored_scores_member_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.npz"
    write_scores(path, _scores(), np.zeros(4, int), {})
    raw = bytearray(path.read_bytes())
    i = raw.index(b"\x93NUMPY")  # the first member's .npy magic
    raw[i : i + 6] = b"XXXXXX"
    path.write_bytes(bytes(raw))
    assert _certify(path, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt" in err[0], err


def test_bad_alpha_in_the_metadata_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.npz"
    write_scores(path, _scores(), np.zeros(4, int), {"scheme": "bagging", "k": 3, "train_size": 50, "experiment": {"alpha": "x"}})
    rc = main(["certify", str(path), "--certificate", "bagging", "--out-csv", str(tmp_path / "o.csv"), "--out-json", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "alpha must be a number" in err[0], err
