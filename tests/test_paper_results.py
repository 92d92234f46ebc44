"""The transcribed published numbers (workflow/poisoncert/paper_results/*.csv) are well-formed and match the papers.

Format checks always run; the comparisons with the paper text read ``shared/papers/`` next to the
repository (``Path(__file__).parents[2] / "shared" / "papers"``) and are skipped when it is absent.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "workflow" / "poisoncert" / "paper_results"
PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"

COLUMNS = ["paper_file", "table", "row", "dataset", "scheme", "certificate", "k", "d", "n_models",
           "learner", "same_seed", "alpha", "poisoning_model", "n_clean", "trials",
           "metric", "radius", "value", "unit", "note"]
PAPER_FILES = {"000_6138d30384efc097.txt", "001_e5982261986cb827.txt", "002_76a9d87e4b50d8fc.txt",
               "003_065516abf582c8df.txt", "004_1be3f148c9e50cc6.txt"}
DATASETS = {"mnist", "mnist17", "cifar10", "gtsrb"}
SCHEMES = {"dpa", "ssdpa", "fa", "dpa_star", "bagging", "bagging_wor", "binomial", "binary_kmeans"}
CERTIFICATES = {"dpa", "fa", "dpa_roe", "fa_roe", "dpa_star_roe", "bagging", "random_selection", "binary_kmeans"}
FRACTION_METRICS = {"clean_accuracy", "mean_base_accuracy", "certified_accuracy", "pr_radius_up",
                    "certified_accuracy_distributional"}
RADIUS_METRICS = {"median_certified_radius", "zero_radius"}
METRICS = FRACTION_METRICS | RADIUS_METRICS | {"mean_radius_increase", "train_minutes_per_partition"}
UNITS = {"fraction", "insertions+deletions", "label flips", "poisoned samples", "minutes"}
LEARNERS = {"supervised", "rotnet", "binary_kmeans"}
CSV_FILES = sorted(RESULTS.glob("*.csv"))

needs_papers = pytest.mark.skipif(not PAPERS.is_dir(), reason=f"paper texts not found at {PAPERS}")


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def all_rows() -> list[dict[str, str]]:
    out = []
    for p in CSV_FILES:
        for r in read(p)[1]:
            out.append({**r, "_file": p.name})
    return out


def printed(value: str) -> str:
    """A fraction as the papers print it: 0.7700 -> '77.00%', 0 -> '0%'."""
    if value == "0":
        return "0%"
    return format(Decimal(value).scaleb(2), "f") + "%"


def paper_text(name: str) -> str:
    return (PAPERS / name).read_text(encoding="utf-8")


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# ----------------------------------------------------------------------------------------- format


def test_expected_files_exist():
    names = {p.name for p in CSV_FILES}
    expected = {f"dpa_table{i}.csv" for i in (1, 2, 3)} | {f"fa_table{i}.csv" for i in (1, 2, 3)} | \
               {f"roe_table{i}.csv" for i in range(1, 7)} | {"jia_text.csv", "chen_text.csv"}
    assert expected <= names, f"missing: {sorted(expected - names)}"


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.name)
def test_csv_columns_and_values(path: Path):
    header, rows = read(path)
    assert header == COLUMNS, f"{path.name}: columns {header}"
    assert rows, f"{path.name} is empty"
    for i, r in enumerate(rows, start=2):
        where = f"{path.name}:{i}"
        assert None not in r and all(v is not None for v in r.values()), f"{where}: wrong number of fields"
        assert r["paper_file"] in PAPER_FILES, where
        assert r["table"].startswith(("Table ", "text, Section ")), where
        assert r["row"].strip(), where
        assert r["dataset"] in DATASETS, where
        assert r["scheme"] in SCHEMES, where
        assert r["certificate"] in CERTIFICATES, where
        assert r["metric"] in METRICS, where
        assert r["unit"] in UNITS, where
        for key in ("k", "d", "n_models", "trials"):
            assert r[key].isdigit() and int(r[key]) >= 1, f"{where}: {key}={r[key]!r}"
        assert r["learner"] in LEARNERS, f"{where}: learner={r['learner']!r}"
        # the run columns a paper does not state are empty (any run matches)
        assert r["same_seed"] in ("", "true", "false"), f"{where}: same_seed={r['same_seed']!r}"
        assert r["alpha"] == "" or 0 < float(r["alpha"]) < 1, f"{where}: alpha={r['alpha']!r}"
        assert r["poisoning_model"] in ("", "P1", "P2", "P3", "P4", "P5", "P6"), f"{where}: poisoning_model={r['poisoning_model']!r}"
        assert r["n_clean"] == "" or r["n_clean"].isdigit(), f"{where}: n_clean={r['n_clean']!r}"
        k, d, n = int(r["k"]), int(r["d"]), int(r["n_models"])
        if r["scheme"] in ("fa", "dpa_star"):
            assert n == k * d, where
        elif r["scheme"] in ("dpa", "ssdpa", "binary_kmeans"):
            assert d == 1 and n == k, where
        if r["metric"].startswith("certified_accuracy"):
            assert r["radius"].isdigit(), f"{where}: certified accuracy needs a radius"
        else:
            assert r["radius"] == "", f"{where}: radius only for certified accuracy"
        if r["value"] == "":
            assert "N/A in paper" in r["note"], f"{where}: empty value without 'N/A in paper'"
            continue
        v = Decimal(r["value"])
        if r["metric"] in FRACTION_METRICS:
            assert r["unit"] == "fraction" and 0 <= v <= 1, f"{where}: {v} is not a fraction"
        elif r["metric"] in RADIUS_METRICS:
            assert r["value"].isdigit(), f"{where}: radius {r['value']!r} is not an integer"
        else:
            assert v >= 0, where


def test_rows_are_unique():
    seen = defaultdict(list)
    for r in all_rows():
        seen[(r["paper_file"], r["table"], r["row"], r["metric"], r["radius"])].append(r["_file"])
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    assert not dups, f"duplicate cells: {list(dups)[:5]}"


def test_one_csv_per_table():
    files = defaultdict(set)
    for r in all_rows():
        files[(r["paper_file"], r["table"])].add(r["_file"])
    assert all(len(v) == 1 for v in files.values()), {k: v for k, v in files.items() if len(v) > 1}


def readme_pairs() -> set[tuple[str, str, str]]:
    text = (RESULTS / "README.md").read_text(encoding="utf-8")
    section = text.split("## Tables", 1)[1].split("\n## ", 1)[0]
    pairs = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and cells[0].endswith(".csv`"):
            pairs.add((cells[0].strip("`"), cells[1], cells[2]))
    return pairs


def test_readme_lists_every_table():
    listed = readme_pairs()
    assert listed, "README.md lists no tables"
    present = {(r["_file"], r["paper_file"], r["table"]) for r in all_rows()}
    assert listed - present == set(), f"listed in README.md but not in the CSVs: {sorted(listed - present)}"
    assert present - listed == set(), f"in the CSVs but not listed in README.md: {sorted(present - listed)}"


def test_row_counts_match_the_tables():
    counts = defaultdict(int)
    for r in all_rows():
        counts[(r["paper_file"], r["table"])] += 1
    # cells per table: rows x printed value columns
    assert counts[("000_6138d30384efc097.txt", "Table 1")] == 10 * 4
    assert counts[("000_6138d30384efc097.txt", "Table 2")] == 5 * 2 * 3
    assert counts[("000_6138d30384efc097.txt", "Table 3")] == 10 * 2 * 3
    assert counts[("001_e5982261986cb827.txt", "Table 1")] == 22 * 5
    assert counts[("001_e5982261986cb827.txt", "Table 2")] == 20 * 4
    assert counts[("001_e5982261986cb827.txt", "Table 3")] == 20 * 3
    assert counts[("003_065516abf582c8df.txt", "Table 1")] == 27 * 5
    assert counts[("003_065516abf582c8df.txt", "Table 2")] == 18 * 5
    assert counts[("003_065516abf582c8df.txt", "Table 3")] == 10 * 5
    assert counts[("003_065516abf582c8df.txt", "Table 4")] == 20 * 5
    assert counts[("003_065516abf582c8df.txt", "Table 5")] == 18 * 5
    assert counts[("003_065516abf582c8df.txt", "Table 6")] == 4 * 5


def cell(table_file: str, row: str, metric: str, radius: str = "") -> dict[str, str]:
    hits = [r for r in read(RESULTS / table_file)[1] if r["row"] == row and r["metric"] == metric and r["radius"] == radius]
    assert len(hits) == 1, (table_file, row, metric, radius, len(hits))
    return hits[0]


def test_known_cells():
    """Cells checked by hand against the papers (independent of the text files)."""
    assert cell("dpa_table1.csv", "MNIST, DPA | 1200", "median_certified_radius")["value"] == "448"
    assert cell("dpa_table1.csv", "MNIST, DPA | 1200", "clean_accuracy")["value"] == "0.9582"
    assert cell("dpa_table1.csv", "CIFAR, DPA | 50", "median_certified_radius")["value"] == "9"
    assert cell("dpa_table1.csv", "CIFAR, SS-DPA | 50", "clean_accuracy")["value"] == "0.8197"
    na = cell("dpa_table1.csv", "CIFAR, DPA | 1000", "median_certified_radius")
    assert na["value"] == "" and "N/A in paper" in na["note"]
    assert cell("dpa_table1.csv", "MNIST, SS-DPA | 3000", "train_minutes_per_partition")["value"] == "0.10"
    assert cell("fa_table1.csv", "MNIST | 1200 | 32", "certified_accuracy", "300")["value"] == "0.8017"
    assert cell("fa_table2.csv", "MNIST | 1200 | 16", "mean_radius_increase")["value"] == "12.69"
    assert cell("fa_table3.csv", "CIFAR-10 | 50 | 1 (DPA)", "certified_accuracy_distributional", "1")["value"] == "0.6879"
    assert cell("roe_table1.csv", "CIFAR-10 | 50 | DPA∗+ROE | 32", "certified_accuracy", "20")["value"] == "0.4761"
    assert cell("roe_table3.csv", "GTSRB | 100 | DPA+ROE", "certified_accuracy", "30")["value"] == "0.1593"
    assert cell("roe_table6.csv", "FA+ROE", "certified_accuracy", "22")["value"] == "0.2207"
    assert cell("jia_text.csv", "MNIST, bagging k=100 N=1000", "certified_accuracy", "100")["value"] == "0.708"


# ------------------------------------------------------------------------------ against the papers


@needs_papers
def test_spot_check_dpa_table1_in_paper_text():
    text = paper_text("000_6138d30384efc097.txt")
    assert "MNIST, DPA 60000 1200 448 95.82% 77.00% 0.28 min" in text
    r = cell("dpa_table1.csv", "MNIST, DPA | 1200", "median_certified_radius")
    assert r["value"] == "448" and r["dataset"] == "mnist" and r["k"] == "1200"
    assert printed(cell("dpa_table1.csv", "MNIST, DPA | 1200", "clean_accuracy")["value"]) == "95.82%"


@needs_papers
def test_every_fraction_appears_in_its_paper():
    texts = {name: paper_text(name) for name in PAPER_FILES}
    missing = [(r["_file"], r["row"], r["metric"], r["radius"], printed(r["value"])) for r in all_rows()
               if r["unit"] == "fraction" and r["value"] and printed(r["value"]) not in texts[r["paper_file"]]]
    assert not missing, missing[:10]


@needs_papers
@pytest.mark.parametrize("name", ["dpa_table1.csv", "dpa_table2.csv", "dpa_table3.csv"])
def test_dpa_rows_read_in_printed_order(name: str):
    """Each DPA-table row 'k, radius (hash|same ...), accuracies ...' occurs as one run of the text, so the
    reconstruction of the garbled CIFAR k=50 rows assigns the numbers of one printed line to one row."""
    text = squash(paper_text("000_6138d30384efc097.txt"))
    groups = defaultdict(dict)
    for r in read(RESULTS / name)[1]:
        label, k = r["row"].split(" | ")[:2]
        col = r["row"].split(" | ")[2] if r["row"].count(" | ") == 2 else ""
        v = "N/A" if r["value"] == "" else (printed(r["value"]) if r["unit"] == "fraction" else r["value"])
        groups[(label, k)][(r["metric"], col)] = v
    for (label, k), g in groups.items():
        cols = ["Hash", "Sort"] if name == "dpa_table2.csv" else ["Same", "Distinct"] if name == "dpa_table3.csv" else [""]
        seq = [k] + [g[(m, c)] for m in ("median_certified_radius", "clean_accuracy", "mean_base_accuracy") for c in cols]
        line = " ".join(seq)
        assert line in text, f"{name} {label} k={k}: '{line}' not in the paper text"
        if name == "dpa_table1.csv":
            assert f"{line} {g[('train_minutes_per_partition', '')]} min" in text


@needs_papers
@pytest.mark.parametrize("name", ["fa_table1.csv", "roe_table1.csv", "roe_table2.csv", "roe_table3.csv",
                                  "roe_table4.csv", "roe_table5.csv", "roe_table6.csv"])
def test_certified_fraction_rows_read_in_printed_order(name: str):
    """The five cells of each row (by increasing attack size) occur in this order in the text, each optionally
    followed by its printed '(+x%)' / '(±x%)' annotation."""
    rows = read(RESULTS / name)[1]
    text = paper_text(rows[0]["paper_file"])
    groups = defaultdict(list)
    for r in rows:
        if r["metric"] == "certified_accuracy":
            groups[r["row"]].append((int(r["radius"]), printed(r["value"])))
    for row, cells in groups.items():
        cells.sort()
        pattern = r"[\s|]*".join(re.escape(p) + r"(?:\s*\([^)]*\))?" for _, p in cells)
        assert re.search(pattern, text), f"{name} {row}: {[p for _, p in cells]} not found in order"


@needs_papers
def test_fa_tables_2_and_3_rows_in_printed_order():
    text = paper_text("001_e5982261986cb827.txt")
    for name, metrics in (("fa_table2.csv", ["clean_accuracy", "mean_base_accuracy", "pr_radius_up", "mean_radius_increase"]),
                          ("fa_table3.csv", ["clean_accuracy", "certified_accuracy", "certified_accuracy_distributional"])):
        groups = defaultdict(dict)
        for r in read(RESULTS / name)[1]:
            groups[r["row"]][r["metric"]] = printed(r["value"]) if r["unit"] == "fraction" else r["value"]
        for row, g in groups.items():
            d = row.split(" | ")[2]
            pattern = re.escape(d) + r"\s*" + "".join(r"\|\s*" + re.escape(g[m]) + r"(?:\([^)]*\))?\s*" for m in metrics)
            assert re.search(pattern, text), f"{name} {row}: {[g[m] for m in metrics]} not found"


@needs_papers
def test_text_numbers_in_papers():
    jia = squash(paper_text("002_76a9d87e4b50d8fc.txt"))
    assert "certified accuracy of 70.8% on MNIST" in jia and "k = 100 and N = 1, 000" in jia
    assert "96.95% certified accuracy" in jia and "is r = 50" in jia
    chen = squash(paper_text("004_1be3f148c9e50cc6.txt"))
    assert "scheme 3 decreases to 0% at 868 while scheme 1,2 are at 855, 857" in chen
    for r in read(RESULTS / "chen_text.csv")[1]:
        assert r["metric"] == "zero_radius" and r["radius"] == "" and r["value"] in {"868", "855", "857"}
    dpa = squash(paper_text("000_6138d30384efc097.txt"))
    assert "certified accuracy is also 95.5% at 5952 label flips" in dpa
