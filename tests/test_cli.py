"""The command line: every stage module is a verb with help, flags and a main; errors are one line."""

import subprocess
import sys

import pytest

from conftest import snakemake_env
from poisoncert import cli, stages


@pytest.mark.parametrize("verb", sorted(stages.VERBS))
def test_every_verb_is_a_stage_module_with_help_arguments_and_main(verb):
    mod = stages.module(verb)
    assert mod.__name__ == f"poisoncert.stages.{stages.VERBS[verb]}"
    assert isinstance(mod.HELP, str) and mod.HELP and "\n" not in mod.HELP
    assert callable(mod.add_arguments) and callable(mod.main)


def test_every_verb_parses_its_help(capsys):
    for verb in stages.VERBS:
        with pytest.raises(SystemExit) as exc:
            cli.run([verb, "--help"])
        assert exc.value.code == 0
        assert f"usage: poisoncert {verb}" in capsys.readouterr().out


def test_top_level_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        cli.run(["--help"])
    out = capsys.readouterr().out
    for verb in stages.VERBS:
        assert verb in out


def test_a_poisoncert_error_is_one_line_and_exit_status_2(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    code = cli.main(["certify", str(missing), "--certificate", "dpa", "--out-csv", str(tmp_path / "o.csv"), "--out-json", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("poisoncert: error: ") and "nope.npz" in err[0]
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.json").exists()


def test_check_config_verb_accepts_the_default_config(repo_root, capsys):
    assert cli.main(["check-config", str(repo_root / "config.yaml")]) == 0


def test_console_script_and_module_are_the_same_entry_point(repo_root):
    for cmd in (["poisoncert", "--help"], [sys.executable, "-m", "poisoncert", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(), timeout=120)
        assert proc.returncode == 0 and "usage: poisoncert" in proc.stdout, proc.stderr
