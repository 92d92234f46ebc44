"""Property-based fuzzing (hypothesis) of the input path, extending tests/test_bad_inputs.py's config
and scores fuzzing to the classes of issue 20: sizes, encodings, hostile strings and faults. Every
case ends in a valid result or in one line (PoisonCertError / exit status 2), never a traceback, a
resource bomb, an executed string or a leftover file."""

from __future__ import annotations

import copy
import errno
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisoncert import cli, registry
from poisoncert.config import load_config_file, load_schema, validate_config
from poisoncert.errors import PoisonCertError
from poisoncert.scores import write_scores

ROOT = Path(__file__).resolve().parent.parent
BASE = {"experiments": {"e": {"dataset": "digits", "scheme": "dpa", "k": [3], "train": {"epochs": 1}}}}


def _fields() -> list[tuple[tuple[str, ...], dict]]:
    """(path in a config, schema node) of every integer field a digits DPA experiment can set."""
    schema = load_schema()
    out = [((k,), v) for k, v in schema["properties"].items() if v.get("type") in ("integer", "array")]
    exp = schema["$defs"]["experiment"]["properties"]
    for k, v in exp.items():
        if k == "train":
            out += [(("experiments", "e", "train", t), tv) for t, tv in schema["$defs"]["train"]["properties"].items()]
        elif k in ("extractor", "frozen"):
            out += [(("experiments", "e", k, t), tv) for t, tv in v["properties"].items()]
        else:
            out.append((("experiments", "e", k), v))

    def integer(node):
        t = node.get("type")
        items = node.get("items", {})
        return "integer" in (t if isinstance(t, list) else [t]) or "integer" == items.get("type")

    return [(p, n) for p, n in out if integer(n)]


FIELDS = _fields()


def _set(cfg: dict, path: tuple[str, ...], value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return cfg


def _bound(node: dict) -> int:
    return (node.get("items") or node)["maximum"] if "maximum" in (node.get("items") or node) else node["maximum"]


# ---- sizes ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_any_size_is_validated_or_refused_in_one_line(field, data):
    """Any integer, from 0 to 10^30, in any integer field: a valid config or one line, and a value
    past the field's documented maximum is always refused."""
    path, node = field
    top = _bound(node)
    value = data.draw(st.one_of(st.integers(0, top), st.integers(top + 1, 10**30), st.sampled_from([top, top + 1, 2**63, 2**64])))
    is_list = (node.get("type") == "array") or (isinstance(node.get("type"), list) and "array" in node["type"])
    cfg = _set(BASE, path, [value] if is_list else value)
    try:
        validate_config(cfg)
    except PoisonCertError as exc:
        assert "\n" not in str(exc)
    else:
        assert value <= top


# ---- encodings -----------------------------------------------------------------------------------

_TEXT = yaml.safe_dump(BASE, sort_keys=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252", "utf-32"]),
       comment=st.text(min_size=1, max_size=12), junk=st.binary(max_size=6), where=st.integers(0, 200))
def test_config_files_in_any_encoding_are_read_or_one_line(tmp_path_factory, capsys, encoding, comment, junk, where):
    """A config in another encoding, with a byte-order mark, with non-ASCII text, with random bytes:
    read (BOMs of UTF-8/16/32 included) or one line naming the file, never a traceback."""
    text = _TEXT + f"# {comment}\n"
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    raw = raw[:where] + junk + raw[where:]
    path = tmp_path_factory.mktemp("enc") / "c.yaml"
    path.write_bytes(raw)
    capsys.readouterr()
    rc = cli.main(["check-config", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    if rc == 0:
        assert err == []
    else:
        assert rc == 2 and len(err) == 1 and err[0].startswith("poisoncert: error: config"), err


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_a_byte_order_mark_is_fine(tmp_path, encoding):
    path = tmp_path / "c.yaml"
    path.write_bytes(_TEXT.encode(encoding))
    assert load_config_file(path)["experiments"]["e"]["k"] == [3]


def test_latin1_is_one_line_naming_the_byte(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes((_TEXT + "# café\n").encode("latin-1"))
    with pytest.raises(PoisonCertError, match=r"c.yaml, byte \d+: not utf-8 text .*; save it as UTF-8"):
        load_config_file(path)


# ---- hostile strings -----------------------------------------------------------------------------


def _prepare_args():
    """rules/common.smk's prepare_args, run outside Snakemake on a given config."""
    src = (ROOT / "rules" / "common.smk").read_text()
    block = re.search(r"^def prepare_args\(wildcards\):\n(?:(?:    .*)?\n)+", src, re.M).group(0)
    space: dict = {"os": os, "shlex": shlex, "registry": registry}
    exec(block, space)  # noqa: S102 - the workflow's own function
    return space


_HOSTILE = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40) | st.sampled_from(
    ["$(touch /tmp/x)", "`id`", "a b", "'", '"', "-rf", "--download", "a;b", "a|b", "$HOME", "~", "*", "\n", "a\\b", "!!"])


@settings(max_examples=100, deadline=None)
@given(root=_HOSTILE)
def test_any_data_root_reaches_the_command_as_one_argument(root):
    space = _prepare_args()

    class W:
        dataset = "mnist"

    space["config"] = {"data_root": root, "download": False}
    args = space["prepare_args"](W)
    words = shlex.split(f"poisoncert prepare --dataset mnist {args}")
    assert words[:5] == ["poisoncert", "prepare", "--dataset", "mnist", "--root"] and len(words) == 6
    assert os.path.normpath(words[5]) == os.path.normpath(root) and not words[5].startswith("-")


@settings(max_examples=50, deadline=None)
@given(key=st.sampled_from(["name", "data_root", "dataset", "scheme", "learner", "paper_table", "certificate"]), text=_HOSTILE)
def test_hostile_strings_anywhere_in_the_config_are_valid_or_one_line(key, text):
    cfg = copy.deepcopy(BASE)
    if key == "name":
        cfg["experiments"] = {text: cfg["experiments"]["e"]}
    elif key == "data_root":
        cfg["data_root"] = text
    elif key == "paper_table":
        cfg["paper_tables"] = [text]
    elif key == "certificate":
        cfg["experiments"]["e"]["certificates"] = [text]
    else:
        cfg["experiments"]["e"][key] = text
    try:
        out = validate_config(cfg)
    except PoisonCertError as exc:
        assert "\n" not in str(exc)
    else:  # accepted: the only free strings are data_root (quoted) and names that are safe path words
        for name in out["experiments"]:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name)


# ---- faults --------------------------------------------------------------------------------------

_FAULTS = [errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT, errno.EACCES]


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fz") / "s.npz"
    rng = np.random.default_rng(0)
    write_scores(path, rng.normal(size=(40, 7, 3)).astype(np.float32), rng.integers(0, 3, 40), {"scheme": "dpa", "k": 7})
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=st.sampled_from(_FAULTS), call=st.sampled_from(["replace", "write", "open", "mkdir"]), nth=st.integers(0, 2))
def test_any_refused_write_is_one_line_and_leaves_nothing(tmp_path_factory, capsys, scores_file, code, call, nth):
    """The file system refuses the n-th rename / write / open / mkdir of certify's outputs: one line,
    exit status 2, no output and no temporary."""
    out = tmp_path_factory.mktemp("out") / "sub"
    count = {"n": 0}

    def fail_nth(real):
        def wrapped(*args, **kwargs):
            target = str(args[0]) if args else ""
            if str(out) in target or (call in ("replace",) and str(out) in str(args[1])):
                count["n"] += 1
                if count["n"] > nth:
                    raise OSError(code, os.strerror(code), target)
            return real(*args, **kwargs)
        return wrapped

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        if call == "replace":
            mp.setattr(os, "replace", fail_nth(os.replace))
        elif call == "mkdir":
            mp.setattr(os, "mkdir", fail_nth(os.mkdir))
        elif call == "open":
            mp.setattr(os, "open", fail_nth(os.open))
        else:
            import builtins
            mp.setattr(builtins, "open", fail_nth(builtins.open))
        rc = cli.main(["certify", str(scores_file), "--certificate", "dpa", "--out-csv", str(out / "c.csv"), "--out-json", str(out / "c.json")])
    err = capsys.readouterr().err.strip().splitlines()
    left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    if rc == 0:  # the fault never fired, or hit a call that did not matter (mkdir of a folder that exists)
        assert left == ["c.csv", "c.json"] and err == []
        return
    assert count["n"] > nth
    assert rc == 2 and len(err) == 1 and err[0].startswith("poisoncert: error: cannot write"), err
    assert left == [], left
