"""Ensembles trained elsewhere (issue 22): IBM ART's DeepPartitionEnsemble through poisoncert.scores.from_art,
a list of torch models (from_models) and per-model arrays (from_outputs), axis order checked."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import poisoncert
from poisoncert import certify
from poisoncert.errors import PoisonCertError
from poisoncert.scores import from_art, from_models, from_outputs, read_scores, stack_model_outputs, write_scores


@pytest.fixture(scope="module")
def digits_split():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    return X[:1400], y[:1400], X[1400:], y[1400:]


def _net(torch):
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def test_art_deep_partition_ensemble_is_certified_as_dpa(digits_split, tmp_path):
    pytest.importorskip("art")
    torch = pytest.importorskip("torch")
    from art.estimators.classification import DeepPartitionEnsemble, PyTorchClassifier

    X, y, Xt, yt = digits_split
    torch.manual_seed(0)  # before the ensemble is built: ART copies one initialisation into every model
    net = _net(torch)
    base = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(net.parameters(), lr=0.01),
                             input_shape=(64,), nb_classes=10, channels_first=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dpe = DeepPartitionEnsemble(base, ensemble_size=5, channels_first=True)
        dpe.fit(X, np.eye(10)[y], nb_epochs=8, batch_size=64)
    scores, labels, meta = from_art(dpe, Xt, yt)
    raw = dpe.predict(Xt, raw=True)  # ART: models x tests x classes
    assert raw.shape == (5, len(yt), 10) and scores.shape == (len(yt), 5, 10)
    cert = poisoncert.compute("dpa", "dpa", scores, meta)
    ref = certify.dpa(np.transpose(raw, (1, 0, 2)).astype(np.float32))
    assert np.array_equal(cert.radius, ref.radius) and np.array_equal(cert.prediction, ref.prediction)
    assert meta["scheme"] == "dpa" and meta["k"] == 5 and meta["unit"] == "insertions+deletions"
    assert "torch.manual_seed" in meta["determinism"] and "int(np.sum(x)) % k" in meta["source"]
    assert np.mean(cert.prediction == yt) > 0.7 and cert.radius.max() >= 1
    write_scores(tmp_path / "art.npz", scores, labels, meta)  # the public format: `poisoncert certify` reads it
    s, _, m = read_scores(tmp_path / "art.npz")
    assert np.array_equal(poisoncert.compute("dpa", "dpa", s, m).radius, cert.radius)


def test_a_list_of_torch_models_and_of_arrays(digits_split):
    torch = pytest.importorskip("torch")
    _, _, Xt, yt = digits_split
    torch.manual_seed(0)
    models = [_net(torch) for _ in range(4)]
    scores, labels, meta = from_models(models, Xt, yt)
    with torch.no_grad():
        outs = [m(torch.from_numpy(Xt)).numpy() for m in models]
    assert np.array_equal(scores, np.stack(outs, axis=1)) and np.array_equal(labels, yt)
    s2, _, meta2 = from_outputs(np.stack(outs), yt)  # models first: read from n_test
    assert np.array_equal(s2, scores) and meta2["k"] == 4
    s3, _, meta3 = from_outputs(np.stack(outs, axis=1), yt, scheme="dpa_star", d=2, model_order="partition-major")
    assert meta3["k"] == 2 and poisoncert.compute("dpa_star", "dpa", s3, meta3).radius.shape == (len(yt),)


@pytest.mark.parametrize("call, match", [
    (lambda: stack_model_outputs(np.zeros((4, 4, 3))), "cannot tell the axis order"),
    (lambda: stack_model_outputs(np.zeros((4, 4, 3)), n_test=4), "layout='models,tests,classes'"),
    (lambda: stack_model_outputs(np.zeros((5, 3, 2)), n_test=7), "cannot tell the axis order"),
    (lambda: stack_model_outputs(np.zeros((5, 3, 2)), layout="tests,models,classes", n_test=3), "check the layout"),
    (lambda: stack_model_outputs([np.zeros((3, 2)), np.zeros((4, 2))]), "same shape"),
    (lambda: stack_model_outputs(np.zeros((5, 3))), "3-D"),
    (lambda: stack_model_outputs(np.zeros((5, 3, 2)), layout="classes,tests,models"), "layout must be one of"),
    (lambda: from_outputs([np.eye(3)] * 4, [0, 1, 2], scheme="fa", k=2, d=2), "offsets|FA"),
    (lambda: from_outputs([np.eye(3)] * 4, [0, 1, 2], scheme="dpa_star", d=3), "base models"),
    (lambda: from_outputs([np.eye(3)] * 4, [0, 1, 7]), r"\[0, 3\)"),
    (lambda: from_models([object()], np.zeros((2, 2))), "not a model"),
    (lambda: from_outputs([np.eye(3)] * 4, [0, 1, 2], scheme="dpa_star", d=2), "model_order"),
    (lambda: from_outputs([np.eye(3)] * 4, [0, 1, 2], scheme="dpa_star", d=2, model_order="by-seed"), "model_order"),
    (lambda: from_outputs([np.eye(3)] * 4, [0, 1, 2], model_order="seed-major"), "several seeds per partition"),
    (lambda: from_art(object(), np.zeros((2, 2))), "DeepPartitionEnsemble"),
])
def test_bad_model_outputs_give_one_line(call, match):
    with pytest.raises(PoisonCertError, match=match) as exc:
        call()
    assert "\n" not in str(exc.value)


def test_dpa_star_seed_major_models_are_reordered_not_misgrouped():
    """A review's counter-example: seed-major models taken as partition-major averaged models of
    different partitions into one voter, and one poison (partition 0 = models 0 and 2) flipped a
    certified prediction. Declared, the order is converted and the partition mean is right."""
    rng = np.random.default_rng(1)
    k, d = 3, 2
    part_major = rng.normal(size=(6, k * d, 4)).astype(np.float32)
    seed_major = part_major.reshape(6, k, d, 4).transpose(0, 2, 1, 3).reshape(6, k * d, 4)
    s, _, meta = from_outputs(seed_major, np.zeros(6, int), "tests,models,classes", "dpa_star", k=k, d=d, model_order="seed-major")
    assert np.array_equal(s, part_major)
    ref = poisoncert.compute("dpa_star", "dpa", part_major, {"k": k, "d": d})
    assert np.array_equal(poisoncert.compute("dpa_star", "dpa", s, meta).radius, ref.radius)


def test_the_determinism_caveat_names_arts_global_generator():
    from poisoncert.scores import DETERMINISM_CAVEAT

    assert "global" in DETERMINISM_CAVEAT and "DeepPartitionEnsemble" in DETERMINISM_CAVEAT
