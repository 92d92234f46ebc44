"""Collective certificates (issue 21): proved against exhaustive enumeration on tiny ensembles.

The brute force here is independent of the programme and of ``attack_flips``: every set of at most r
poison units the scheme's reach allows, and every output (class) of every controlled voter on every
test sample, with the plurality recomputed (ties to the smaller class).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from poisoncert import certify, registry
from poisoncert.errors import PoisonCertError


def changed_by_sets(votes: np.ndarray, n_classes: int, reach: np.ndarray, r_max: int) -> dict[tuple[int, ...], np.ndarray]:
    """For every set of at most r_max units: which samples some output of the controlled voters changes."""
    n, n_voters = votes.shape
    pred = np.array([np.argmax(np.bincount(row, minlength=n_classes)) for row in votes])
    out = {}
    for s in range(min(r_max, len(reach)) + 1):
        for units in itertools.combinations(range(len(reach)), s):
            ctrl = sorted({int(l) for u in units for l in reach[u]})
            outputs = np.array(list(itertools.product(range(n_classes), repeat=len(ctrl))), dtype=np.int64).reshape(n_classes ** len(ctrl), len(ctrl))
            changed = np.zeros(n, dtype=bool)
            for i in range(n):
                rows = np.repeat(votes[i][None, :], len(outputs), axis=0)
                rows[:, ctrl] = outputs  # every output of every controlled voter
                counts = (rows[:, :, None] == np.arange(n_classes)).sum(axis=1)
                changed[i] = bool((np.argmax(counts, axis=1) != pred[i]).any())  # argmax: ties to the smaller class
            out[units] = changed
    return out


def brute_force(changed: dict[tuple[int, ...], np.ndarray], r: int, considered: np.ndarray) -> int:
    """min over attacks of at most r units of the considered samples whose prediction stays."""
    return min(int((considered & ~ch).sum()) for units, ch in changed.items() if len(units) <= r)


def check_against_exact(res: certify.CollectiveResult, exact: int, single_block: bool) -> None:
    """The soundness checks: certified <= exact <= attack bound, equality where proved."""
    assert res.certified <= exact, f"certified {res.certified} > exact {exact}"
    assert exact <= res.attack_bound, f"attack bound {res.attack_bound} < exact {exact}"
    assert res.certified >= res.samplewise
    if res.proven and single_block:
        assert res.certified == exact == res.attack_bound


def _ensemble(scheme: str, seed: int):
    """Tiny random ensemble of ``scheme``: (scores, labels, meta)."""
    rng = np.random.default_rng(seed)
    n, n_classes = 7, 3
    k, d = {"dpa": (5, 1), "ssdpa": (5, 1), "dpa_star": (4, 2), "fa": (3, 2)}[scheme]
    n_models = k * d if scheme in ("fa", "dpa_star") else k
    labels = rng.integers(0, n_classes, n)
    # mostly-correct models so that samples have small but non-trivial margins
    scores = rng.normal(size=(n, n_models, n_classes)).astype(np.float32)
    scores[np.arange(n), :, labels] += rng.uniform(0.0, 1.5, size=(n, 1)).astype(np.float32)
    meta = {"scheme": scheme, "k": k, "d": d}
    if scheme == "fa":
        meta["offsets"] = [0, 2]
    return scores, labels, meta


CASES = [("dpa", "dpa"), ("ssdpa", "dpa"), ("dpa_star", "dpa"), ("fa", "fa")]


def _inputs(scheme: str, cert: str, seed: int):
    scores, labels, meta = _ensemble(scheme, seed)
    view = registry.scores_view(scheme, cert, scores, meta)
    votes = certify.votes(view)
    reach = registry.scheme(scheme).poison_reach(cert, meta, votes.shape[1])
    radius = registry.compute(scheme, cert, scores, meta).radius
    return votes, view.shape[2], reach, radius, labels


@pytest.mark.parametrize("scheme,cert", CASES)
@pytest.mark.parametrize("mode", ["unchanged", "accuracy"])
def test_collective_matches_brute_force(scheme, cert, mode):
    budgets = [0, 1, 2, 3]
    for seed in range(3):
        votes, n_classes, reach, radius, labels = _inputs(scheme, cert, seed)
        pred = certify.plurality(certify.vote_counts(votes, n_classes))
        changed = changed_by_sets(votes, n_classes, reach, max(budgets))
        considered = np.ones(len(votes), bool) if mode == "unchanged" else pred == labels
        for block_size, single in ((100, True), (2, False)):
            res = certify.collective(votes, n_classes, reach, budgets, radius, labels, mode=mode, block_size=block_size, time_limit=10)
            assert [x.budget for x in res] == budgets
            certs = [x.certified for x in res]
            assert certs == sorted(certs, reverse=True)  # monotone in r
            for x in res:
                exact = brute_force(changed, x.budget, considered)
                assert exact == certify.exact_collective(votes, n_classes, reach, x.budget, labels, mode)
                check_against_exact(x, exact, single)
                # the reported attack is a real attack of at most r units achieving its bound
                assert len(x.attack_units) <= x.budget
                counts = certify.vote_counts(votes, n_classes)
                flips = certify.attack_flips(votes, counts, certify.plurality(counts), reach, x.attack_units) & considered
                assert int(considered.sum()) - int(flips.sum()) <= x.attack_bound


def test_checker_rejects_inflated_certificate():
    """The checks fire when the certificate is one too high (certified == exact, proved)."""
    hit = 0
    for scheme, cert in CASES:
        votes, n_classes, reach, radius, labels = _inputs(scheme, cert, 0)
        considered = np.ones(len(votes), bool)
        changed = changed_by_sets(votes, n_classes, reach, 2)
        for x in certify.collective(votes, n_classes, reach, [1, 2], radius, block_size=100):
            exact = brute_force(changed, x.budget, considered)
            if x.proven and x.certified == exact:
                hit += 1
                inflated = certify.CollectiveResult(x.budget, x.certified + 1, x.n_samples, x.attack_bound, x.attack_units,
                                                    x.samplewise, x.n_candidates, x.proven, x.seconds)
                with pytest.raises(AssertionError):
                    check_against_exact(inflated, exact, True)
                deflated_attack = certify.CollectiveResult(x.budget, x.certified, x.n_samples, exact - 1, x.attack_units,
                                                           x.samplewise, x.n_candidates, x.proven, x.seconds)
                with pytest.raises(AssertionError):
                    check_against_exact(deflated_attack, exact, True)
    assert hit >= 4


def test_gain_over_samplewise_and_fa_theorem4():
    """Budget 1 on FA equals App. D / Theorem 4 (fa_certified_accuracy); the collective count can beat sample-wise."""
    rng = np.random.default_rng(5)
    n, k, d, n_classes = 40, 4, 2, 3
    labels = rng.integers(0, n_classes, n)
    scores = rng.normal(size=(n, k * d, n_classes)).astype(np.float32)
    scores[np.arange(n), :, labels] += 1.0
    meta = {"scheme": "fa", "k": k, "d": d, "offsets": [0, 3]}
    votes = certify.votes(scores)
    reach = registry.scheme("fa").poison_reach("fa", meta, k * d)
    cert = registry.compute("fa", "fa", scores, meta)
    res = certify.collective(votes, n_classes, reach, [1, 2], cert.radius, labels, mode="accuracy", block_size=100)
    app_d = certify.fa_certified_accuracy(scores, labels, k, d, [0, 3], attack_size=1)
    assert res[0].proven and res[0].certified == app_d.n_correct - app_d.n_broken
    assert all(x.certified >= x.samplewise for x in res)
    assert any(x.certified > x.samplewise for x in res)  # one poison cannot flip everything flippable at once


def test_failed_solve_takes_the_whole_block(monkeypatch):
    """No bound from the solver: the block counts as flipped, never below the sample-wise count."""
    import scipy.optimize

    class Failed:
        status, x, fun, mip_dual_bound, message = 4, None, None, None, "failed"

    monkeypatch.setattr(scipy.optimize, "milp", lambda *a, **kw: Failed())
    votes, n_classes, reach, radius, labels = _inputs("dpa", "dpa", 1)
    res = certify.collective(votes, n_classes, reach, [1, 2, 3], radius, block_size=3)
    for x in res:
        assert x.blocks and all(b.bound == b.size and not b.proven for b in x.blocks)
        assert x.samplewise <= x.certified <= max(x.samplewise, x.n_samples - x.n_candidates)


def test_refusals():
    with pytest.raises(PoisonCertError, match="no collective certificate"):
        registry.scheme("dpa").poison_reach("dpa_roe", {}, 5)
    with pytest.raises(PoisonCertError, match="not sound"):
        registry.scheme("fa").poison_reach("dpa", {}, 5)
    with pytest.raises(PoisonCertError, match="no collective"):
        registry.scheme("bagging").poison_reach("bagging", {}, 5)
    v = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(PoisonCertError, match="labels"):
        certify.collective(v, 2, np.arange(3)[:, None], [1], np.zeros(2, int), mode="accuracy")
    with pytest.raises(PoisonCertError, match="mode"):
        certify.collective(v, 2, np.arange(3)[:, None], [1], np.zeros(2, int), mode="bogus")


def _cli(args):
    from poisoncert import cli

    return cli.main([str(a) for a in args])


@pytest.mark.parametrize("scheme,cert", [("fa", "fa"), ("dpa_star", "dpa")])
def test_cli_writes_csv_and_json(tmp_path, capsys, scheme, cert):
    import json

    import pandas as pd

    from poisoncert.scores import write_scores

    scores, labels, meta = _ensemble(scheme, 3)
    path = tmp_path / "scores.npz"
    write_scores(path, scores, labels, meta)
    out_csv, out_json = tmp_path / "c.csv", tmp_path / "c.json"
    assert _cli(["collective", path, "--certificate", cert, "--budgets", "2,1", "--mode", "unchanged", "--block-size", "4",
                 "--time-limit", "5", "--out-csv", out_csv, "--out-json", out_json, "--out-png", tmp_path / "c.png",
                 "--out-pdf", tmp_path / "c.pdf", "--out-html", tmp_path / "c.html"]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0 and "<table" in (tmp_path / "c.html").read_text()
    df = pd.read_csv(out_csv)
    assert list(df.columns) == ["budget", "certified", "attack_bound", "samplewise", "proven", "seconds"]
    assert df.budget.tolist() == [1, 2]
    summary = json.loads(out_json.read_text())
    assert summary["threat_model"]["scheme"] == scheme and len(summary["budgets"]) == 2
    err = capsys.readouterr().err
    assert "block 1/" in err or df.samplewise.tolist() == [summary["n_test"]] * 2  # progress per block on stderr
    votes, n_classes, reach, radius, _ = _inputs(scheme, cert, 3)
    changed = changed_by_sets(votes, n_classes, reach, 2)
    for row in df.itertuples():
        exact = brute_force(changed, row.budget, np.ones(len(votes), bool))
        assert row.certified <= exact <= row.attack_bound


def test_cli_refuses_in_one_line(tmp_path, capsys):
    from poisoncert.scores import write_scores

    scores, labels, meta = _ensemble("dpa", 0)
    path = tmp_path / "scores.npz"
    write_scores(path, scores, labels, meta)
    for cert in ("dpa_roe", "fa", "nope"):
        rc = _cli(["collective", path, "--certificate", cert, "--budgets", "1", "--out-csv", tmp_path / "x.csv", "--out-json", tmp_path / "x.json"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and err.startswith("poisoncert: error:")
    assert not (tmp_path / "x.csv").exists()


def test_dual_bound_is_floored_with_tolerance(monkeypatch):
    """A dual bound of 2.9999999 flips counts as 3 (not 2: that would certify one sample too many), 3.4 as 3."""
    import scipy.optimize

    votes, n_classes, reach, radius, labels = _inputs("dpa", "dpa", 1)
    for dual, expected in ((-2.9999999, 3), (-3.4, 3), (-0.2, 0)):
        class TimedOut:
            status, fun, mip_dual_bound, message = 1, 0.0, dual, "time limit"
            x = np.zeros(4096)

        monkeypatch.setattr(scipy.optimize, "milp", lambda *a, **kw: TimedOut())
        res = certify.collective(votes, n_classes, reach, [3], radius, block_size=100)[0]
        assert res.blocks, "the case must have candidates at budget 3"
        assert res.blocks[0].bound == min(res.blocks[0].size, expected) and not res.blocks[0].proven


def test_cli_supplies_what_the_file_lacks_and_says_what_it_assumed(tmp_path, capsys):
    """A review found an FA file without offsets asked for --offsets, which `collective` did not
    have, and an unschemed file certified as DPA without a word on the console."""
    import json

    from poisoncert.scores import write_scores

    scores, labels, meta = _ensemble("fa", 3)
    path = tmp_path / "scores.npz"
    args = ["collective", path, "--certificate", "fa", "--budgets", "1", "--mode", "unchanged", "--out-csv", tmp_path / "c.csv",
            "--out-json", tmp_path / "c.json"]
    write_scores(path, scores, labels, {k: v for k, v in meta.items() if k != "offsets"})
    assert _cli(args) == 2 and "--offsets" in capsys.readouterr().err
    assert _cli(args + ["--offsets", ",".join(map(str, meta["offsets"]))]) == 0
    capsys.readouterr()
    assert _cli(args + ["--offsets", ",".join(str(o + 1) for o in meta["offsets"]), "--k", str(meta["k"] + 1)]) == 2
    assert "contradicts the scores file" in capsys.readouterr().err  # --k contradicts the recorded k
    write_scores(path, scores[:, :3], labels, {})
    assert _cli(["collective", path, "--certificate", "dpa", "--budgets", "1", "--out-csv", tmp_path / "c.csv",
                 "--out-json", tmp_path / "c.json"]) == 0
    assert "no scheme in the scores: assumed dpa" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["threat_model"]["assumed"] is True
