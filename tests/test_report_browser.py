"""The Snakemake HTML report in a real browser: every results table and figure is in it, with its caption.

A small workflow (two digits experiments, a paper table) runs, ``snakemake --report`` bundles it,
and Debian's chromium (headless, driven through the DevTools protocol: ``headless_chromium``)
clicks through the report app as a reader would: each category, each result's view button. A
figure must decode in the page; a table must render in the report's frame with the header and the
row count of the CSV the workflow wrote. Screenshots of every view are saved in the test's tmp dir.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from headless_chromium import Chromium, find_chromium

SMALL = {
    "shard_size": 4,
    "radii": [0, 1, 2],
    "paper_tables": ["dpa_table1"],
    "experiments": {
        "small_dpa": {"dataset": "digits", "scheme": "dpa", "k": [4], "certificates": ["dpa", "dpa_roe"], "train": {"epochs": 1}},
        "small_fa": {"dataset": "digits", "scheme": "fa", "k": [3], "d": [2], "certificates": ["fa"], "train": {"epochs": 1}},
    },
}
FIGURE, TABLE = "certified accuracy (figure)", "certified accuracy (table)"
#: (category, label) of every result the report must show -> the CSV a table view must match (None: a figure)
EXPECTED: dict[tuple[str, str], str | None] = {
    ("small_dpa", FIGURE): None,
    ("small_dpa", TABLE): "results/small_dpa/report/table.csv",
    ("small_dpa", "improvement over DPA (figure)"): None,
    ("small_fa", FIGURE): None,
    ("small_fa", TABLE): "results/small_fa/report/table.csv",
    ("small_fa", "Theorem 2 vs the DPA-style bound (FA Fig. 4)"): None,
    ("comparison", FIGURE): None,  # one dataset: the report opens its only subcategory (digits) directly
    ("comparison", TABLE): "results/compare/digits/table.csv",
    ("paper tables", "dpa_table1"): "results/paper_tables/dpa_table1.csv",
    ("analytic", "Chen et al. Fig. 2, delta(rho) (figure)"): None,
}
#: a sentence of each table caption (workflow/report/*.rst), shown by the result's info button
CAPTIONS = {"small_dpa": "in the columns of DPA Table 1", "comparison": "Every method of this run on dataset digits",
            "paper tables": "as the paper published it"}


@pytest.fixture(scope="module")
def chromium(repo_root: Path) -> None:
    """chromium, installed by ``make browser`` (root with apt-get) if it is missing; skip only if that cannot."""
    if find_chromium() is None and shutil.which("make"):
        note = subprocess.run(["make", "-s", "-C", str(repo_root), "browser"], capture_output=True, text=True).stdout.strip()
        if find_chromium() is None:
            pytest.skip(f"chromium is not installed and cannot be installed here ({note})")
    elif find_chromium() is None:
        pytest.skip("chromium is not installed (make browser installs Debian's package as root)")


@pytest.fixture(scope="module")
def report_run(chromium: None, snakemake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small workflow run and its ``snakemake --report`` (the run's folder; report.html in it).
    Needs ``chromium`` first, so a machine without a browser skips before the run."""
    work = tmp_path_factory.mktemp("report")
    (work / "small.yaml").write_text(yaml.safe_dump(SMALL))
    for extra in (["--cores", "2"], ["--report", work / "report.html"]):
        proc = snakemake(work, "--configfile", work / "small.yaml", *extra)
        assert proc.returncode == 0, proc.stderr[-4000:]
    return work


def _show(browser: Chromium, report: Path, category: str, label: str, button: int = 0) -> None:
    """Open the report, click ``category`` in the menu, then button ``button`` (0: view, 1: info) of result ``label``."""
    browser.open(report.as_uri())
    browser.wait_for(f"[...document.querySelectorAll('nav a')].some(a => a.textContent.trim() === {json.dumps(category)})")
    browser.evaluate(f"[...document.querySelectorAll('nav a')].find(a => a.textContent.trim() === {json.dumps(category)}).click()")
    row = f"[...document.querySelectorAll('nav table tr')].find(r => r.cells[0] && r.cells[0].textContent.trim() === {json.dumps(label)})"
    browser.wait_for(f"!!{row}")
    browser.evaluate(f"{row}.querySelectorAll('a')[{button}].click()")


@pytest.mark.slow
def test_report_shows_every_table_and_figure_in_a_browser(report_run: Path, tmp_path: Path):
    report, shots = report_run / "report.html", tmp_path / "screenshots"
    shots.mkdir()
    with Chromium(tmp_path / "profile") as browser:
        browser.open(report.as_uri())
        menu = browser.wait_for("[...document.querySelectorAll('nav a')].map(a => a.textContent.trim()).filter(t => t)")
        assert {c for c, _ in EXPECTED} <= set(menu), menu
        for (category, label), csv in EXPECTED.items():
            _show(browser, report, category, label)
            name = f"{category}-{label}".replace(" ", "_").replace("/", "_")
            if csv is None:  # a figure: an <img> in the content pane that decoded
                size = browser.wait_for("(i => i && i.complete && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight])"
                                        "([...document.images].find(i => !i.closest('nav')))")
                assert min(size) > 100, (category, label, size)
            else:  # a table: rendered in the report's frame, same header and rows as the workflow's CSV
                browser.wait_for("!!document.querySelector('iframe')")
                (frame,) = browser.child_frames()
                header, n_rows = browser.wait_for(
                    "(t => t && [[...t.tHead.rows[0].cells].map(c => c.textContent), t.tBodies[0].rows.length])"
                    "(document.querySelector('table'))", frame["id"])
                table = pd.read_csv(report_run / csv)
                assert n_rows == len(table) > 0, (category, label)
                if "report" in csv or "compare" in csv:
                    assert header == list(table.columns), (category, label)
                else:  # a paper table: the published cell beside ours
                    assert {"published", "ours", "difference", "status"} <= set(header), header
            assert browser.screenshot(shots / f"{name}.png").stat().st_size > 5000
        for category, sentence in CAPTIONS.items():  # the info button shows the table's caption
            _show(browser, report, category, "dpa_table1" if category == "paper tables" else TABLE, button=1)
            assert browser.wait_for(f"document.querySelector('nav').innerText.includes({json.dumps(sentence)})")
        browser.screenshot(shots / "caption.png")
    print(f"screenshots: {shots}")
