"""benchmarks/bench_engine.py --quick runs end to end (so the benchmark cannot rot); no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest


@pytest.fixture(scope="module")
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("bench_engine", repo_root / "benchmarks" / "bench_engine.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_engine"] = mod  # its dataclass needs its module registered
    spec.loader.exec_module(mod)
    return mod


def test_quick_mode_writes_the_table_for_every_method(bench, tmp_path):
    assert bench.main(["--quick", "--repeats", "1", "--archs", "small_cnn,nin", "--ensemble", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "engine_quick.json").read_text())
    ens = res["ensemble"]  # the engine now, the engine before (grouped) and the plain loop, on the same models
    assert ens["measured_models"] == 4 and ens["strategy"] == "stacked" and min(ens["cpu_s_per_model"], ens["cpu_s_per_model_grouped"],
                                                                                 ens["cpu_s_per_model_loop"]) > 0
    assert ens["speedup_vs_grouped"] == ens["cpu_s_per_model_grouped"] / ens["cpu_s_per_model"]
    if ens["filed_at"] is not None:  # a clone with history: the engine when the issue was filed ran in the same process
        assert ens["filed_at"] == bench.FILED_AT and ens["speedup_vs_filed"] == ens["cpu_s_per_model_filed"] / ens["cpu_s_per_model"]
    assert res["env"]["threads"] == 1 and res["env"]["matmul_gflops"] > 0
    assert {r["arch"] for r in res["results"]} == {"small_cnn", "nin"}
    for r in res["results"]:
        assert set(r["methods"]) == {"engine", "loop", "func"}
        assert r["strategy"] == {"nin": "dense", "small_cnn": "stacked"}[r["arch"]]
        for t in r["methods"].values():
            assert 0 < t["train_cpu"]["min"] <= t["train_cpu"]["median"] and t["eval_cpu"]["min"] > 0
    md = (tmp_path / "engine_quick.md").read_text()
    assert "| small_cnn | 28x28x1 |" in md and "speed-up" in md


def test_the_engine_at_a_commit_that_is_not_there_is_a_reason_not_a_crash(bench, tmp_path):
    mod, why = bench.engine_at("0" * 40, tmp_path)
    assert mod is None and why.startswith("git archive " + "0" * 40 + " failed")


def test_an_ab_against_another_revision_runs_it_in_the_same_rounds(bench, tmp_path):
    """``--methods engine,engine@<commit>`` times another revision's engine beside this one (an A/B
    of a change, one command); an unknown method or a commit that is not there is one line and exit 2."""
    if bench.engine_at("HEAD", tmp_path)[0] is None:
        pytest.skip("not a git clone with history")
    out = tmp_path / "out"
    assert bench.main(["--quick", "--repeats", "1", "--archs", "small_cnn", "--methods", "engine,engine@HEAD~0", "--out", str(out)]) == 0
    res = json.loads((out / "engine_quick.json").read_text())
    (r,) = res["results"]
    assert set(r["methods"]) == {"engine", "engine@HEAD~0"} and r["methods"]["engine@HEAD~0"]["train_cpu"]["min"] > 0
    assert "| engine@HEAD~0 |" in (out / "engine_quick.md").read_text()
    assert bench.main(["--quick", "--archs", "small_cnn", "--methods", "engine,engin", "--out", str(out)]) == 2
    assert bench.main(["--quick", "--archs", "small_cnn", "--methods", "engine@" + "0" * 40, "--out", str(out)]) == 2
    if bench.engine_at(bench.FILED_AT, tmp_path)[0] is not None:  # an engine older than the strategies: a reason, not a crash
        assert bench.main(["--quick", "--archs", "small_cnn", "--methods", f"engine@{bench.FILED_AT}", "--out", str(out)]) == 2
