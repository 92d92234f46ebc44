"""The documentation: the README stays a short entry page, and the MkDocs site builds strictly.

`mkdocs build --strict` fails on a page listed in `nav` that does not exist, a link to a missing
page and a docstring mkdocstrings cannot render; each check is also run on a planted defect.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(project / "mkdocs.yml"), "--site-dir", str(site)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=project)


def _readme_links(text: str) -> list[str]:
    """Relative link targets of a Markdown text, without their #anchor."""
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link.split("#")[0] for link in links if not re.match(r"^[a-z]+:", link) and not link.startswith("#")]


def test_readme_is_short_and_links_only_existing_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines (at most {README_MAX_LINES})"
    links = _readme_links(text)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    # the two commands, as the Makefile has them
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test"):
        assert re.search(rf"^{target}:", makefile, re.M) and f"make {target}" in text


def test_readme_link_check_fires_on_a_missing_page():
    assert _readme_links("[a](docs/nowhere.md#x) [b](https://example.org) [c](#top)") == ["docs/nowhere.md"]
    assert not (ROOT / "docs/nowhere.md").exists()


@pytest.fixture(scope="module")
def mkdocs_available():
    pytest.importorskip("mkdocs", reason="the docs need the dev extra: pip install -e '.[dev]'")
    pytest.importorskip("material", reason="the docs need mkdocs-material (dev extra)")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs need mkdocstrings[python] (dev extra)")


def test_mkdocs_build_strict(mkdocs_available, tmp_path):
    proc = _build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8").count("doc-function") > 10  # mkdocstrings rendered


def test_mkdocs_build_strict_fails_on_a_broken_link(mkdocs_available, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", project / "docs")
    (project / "workflow").symlink_to(ROOT / "workflow")
    with (project / "docs" / "index.md").open("a", encoding="utf-8") as f:
        f.write("\n[gone](no-such-page.md)\n")
    proc = _build(project, tmp_path / "broken")
    assert proc.returncode != 0 and "no-such-page.md" in proc.stderr  # the planted broken link stops the build
