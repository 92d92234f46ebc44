"""Issue 20, "Faults and reruns": a full disk, a file-size limit or a read-only folder is one line and
a non-zero exit with nothing left behind, in every stage that writes; a killed writer's temporary
does not outlive the next run."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import snakemake_env
from poisoncert import cli
from poisoncert.data import read_dataset
from poisoncert.partition import read_partitions

K = 3


def _leftovers(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A digits dataset file, a DPA k = 3 partitions file, fake shard logits and a scores file."""
    d = tmp_path_factory.mktemp("faults")
    assert cli.main(["prepare", "--dataset", "digits", "--out", str(d / "digits.npz")]) == 0
    assert cli.main(["partition", "--dataset-file", str(d / "digits.npz"), "--out", str(d / "parts.npz"), "--scheme", "dpa", "--k", str(K)]) == 0
    ds = read_dataset(d / "digits.npz")
    parts, pmeta = read_partitions(d / "parts.npz")
    logits = np.random.default_rng(0).normal(size=(K, len(ds.test_labels), ds.n_classes)).astype(np.float32)
    meta = {"models": [0, K], "seeds": [int(s) for s in parts.seeds], "dataset_hash": pmeta["dataset_hash"], "shard_size": K,
            "device": "cpu", "threads": 1, "torch": "x", "train": {"arch": "small_cnn"}, "runtime": {"torch": "x"}, "learner": "supervised"}
    np.savez(d / "shard0.npz", logits=logits, meta=np.array(json.dumps(meta)))
    paths = {"data": d / "digits.npz", "parts": d / "parts.npz", "shard": d / "shard0.npz", "scores": d / "scores.npz"}
    assert cli.main(_aggregate_args(paths, paths["scores"])) == 0
    return paths


def _aggregate_args(inputs, out) -> list[str]:
    return ["aggregate", "--dataset-file", str(inputs["data"]), "--partitions", str(inputs["parts"]), "--out", str(out), str(inputs["shard"])]


def _certify_args(inputs, folder) -> list[str]:
    return ["certify", str(inputs["scores"]), "--certificate", "dpa", "--out-csv", str(folder / "dpa.csv"), "--out-json", str(folder / "dpa.json")]


def _run_cli(args: list[str], fsize: int | None = None) -> subprocess.CompletedProcess:
    """``poisoncert <args>`` in a child process, optionally under a file-size limit (RLIMIT_FSIZE)."""

    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    code = "import sys; from poisoncert.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=snakemake_env(),
                          preexec_fn=limit, timeout=300)


def _one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("poisoncert: error: cannot write"), proc.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str):
    """A tmpfs mounted on ``folder`` (root and a kernel that allows it; else the test is skipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# ---- the file-size limit (EFBIG): a real one, in a child process --------------------------------


def test_aggregate_over_the_file_size_limit(inputs, tmp_path):
    proc = _run_cli(_aggregate_args(inputs, tmp_path / "scores.npz"), fsize=20_000)  # the scores are ~43 kB
    _one_line(proc, "file-size limit", "scores.npz")
    assert _leftovers(tmp_path) == []


def test_certify_over_the_file_size_limit(inputs, tmp_path):
    proc = _run_cli(_certify_args(inputs, tmp_path), fsize=2_000)  # the CSV is ~8 kB
    _one_line(proc, "file-size limit", "dpa.csv")
    assert _leftovers(tmp_path) == []


# ---- a really full disk and a really read-only folder (tmpfs) ------------------------------------


def test_aggregate_on_a_full_disk_is_one_line_not_sigbus(inputs, tmp_path):
    """The scores' memory map on a sparse file used to die of SIGBUS (exit -7) with no message."""
    with _tmpfs(tmp_path / "small", "size=32k") as small:
        proc = _run_cli(_aggregate_args(inputs, small / "scores.npz"))
        assert proc.returncode != -signal.SIGBUS
        _one_line(proc, "disk is full", "scores.npz")
        assert _leftovers(small) == []


@pytest.mark.parametrize("verb", ["aggregate", "certify"])
def test_read_only_folder(inputs, tmp_path, verb):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        args = _aggregate_args(inputs, ro / "out" / "scores.npz") if verb == "aggregate" else _certify_args(inputs, ro)
        _one_line(_run_cli(args), "read-only")
        assert _leftovers(ro) == []


# ---- every stage that writes, in process: the write refused at the rename -----------------------


def _verbs(inputs, out: Path) -> dict[str, list[str]]:
    summary = out.parent / "summary.json"
    if not summary.exists():
        assert cli.main(_certify_args(inputs, out.parent)[:-2] + ["--out-json", str(summary)]) == 0
    return {
        "prepare": ["prepare", "--dataset", "digits", "--out", str(out / "d.npz")],
        "partition": ["partition", "--dataset-file", str(inputs["data"]), "--out", str(out / "p.npz"), "--scheme", "dpa", "--k", "3"],
        "aggregate": _aggregate_args(inputs, out / "scores.npz"),
        "certify": _certify_args(inputs, out),
        "report": ["report", str(summary), "--out-csv", str(out / "t.csv"), "--out-md", str(out / "t.md"),
                   "--out-png", str(out / "f.png"), "--out-pdf", str(out / "f.pdf")],
        "figure": ["figure", "delta_figure", "--out", f"png={out / 'f.png'}", "--out", f"pdf={out / 'f.pdf'}", "--out", f"csv={out / 'f.csv'}"],
    }


@pytest.mark.parametrize("verb", ["prepare", "partition", "aggregate", "certify", "report", "figure"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EROFS])
def test_every_writing_stage_refused_write(inputs, tmp_path, monkeypatch, capsys, verb, code):
    args = _verbs(inputs, tmp_path / "out")[verb]
    capsys.readouterr()

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poisoncert: error: cannot write"), err
    assert not (tmp_path / "out").exists() or _leftovers(tmp_path / "out") == []


def test_preallocation_failure_is_one_line(inputs, tmp_path, monkeypatch, capsys):
    """ENOSPC from reserving the scores' blocks (the step that replaces SIGBUS) is one line, no temporary."""

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    assert cli.main(_aggregate_args(inputs, tmp_path / "scores.npz")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk is full" in err[0], err
    assert _leftovers(tmp_path) == []


def test_other_os_errors_keep_their_traceback(inputs, tmp_path, monkeypatch):
    """Only refused writes become one line: a missing input is the stage's own message, a bug stays a bug."""

    def broken(src, dst):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        cli.main(_certify_args(inputs, tmp_path))
    assert _leftovers(tmp_path) == []


# ---- temporaries of a killed writer do not outlive the rerun ------------------------------------


def test_killed_aggregate_leaves_nothing_after_the_rerun(inputs, tmp_path):
    """A writer killed inside scores_writer leaves its full-size temporary; the next aggregate removes it,
    as it removes stale temporaries of the atomic writes, but never a live writer's (locked) one."""
    out = tmp_path / "scores.npz"
    kill = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from poisoncert.scores import scores_writer
        with scores_writer({str(out)!r}, (5, 3, 10), np.zeros(5, int), {{}}) as a:
            a[:] = 1
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", kill], env=snakemake_env(), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (stale,) = _leftovers(tmp_path)
    assert stale.startswith(".scores.npz.scores") and stale.endswith(".npy")
    (tmp_path / ".scores.npz.tmp4242").write_bytes(b"half a zip")  # an old-style stale temporary
    live = tmp_path / ".scores.npz.tmp4343"
    live.write_bytes(b"")
    with open(live, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a live writer holds its lock
        assert cli.main(_aggregate_args(inputs, out)) == 0
    assert _leftovers(tmp_path) == [".scores.npz.tmp4343", "scores.npz"]
    assert cli.main(_aggregate_args(inputs, out)) == 0  # no live writer now
    assert _leftovers(tmp_path) == ["scores.npz"]


def test_unrelated_hidden_files_are_kept(inputs, tmp_path):
    keep = [".scores.npz.notes", ".scores.npzx.tmp1", ".other.npz.tmp1", "scores.npz.tmp1"]
    for name in keep:
        (tmp_path / name).write_text("mine")
    assert cli.main(_aggregate_args(inputs, tmp_path / "scores.npz")) == 0
    assert _leftovers(tmp_path) == sorted(keep + ["scores.npz"])


@pytest.mark.parametrize("where", ["file/x.csv", "file/sub/x.csv", "a" * 300 + ".csv", "b" * 250 + ".csv"])
def test_impossible_output_paths_are_one_line(inputs, tmp_path, capsys, where):
    """A folder of the path that is a file, a name too long (also just the temporary's): one line."""
    (tmp_path / "file").write_text("a file")
    args = ["certify", str(inputs["scores"]), "--certificate", "dpa", "--out-csv", str(tmp_path / where), "--out-json", str(tmp_path / "o.json")]
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poisoncert: error: cannot write"), err
    assert _leftovers(tmp_path) == ["file"]
