"""``poisoncert paper-table`` (rule ``paper_table``): a transcribed paper table beside this run's numbers."""

from __future__ import annotations

import argparse

HELP = "a transcribed paper table beside this run's numbers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="file stem in workflow/poisoncert/paper_results/, e.g. dpa_table1")
    p.add_argument("summaries", nargs="*")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", help="also the table as an HTML page (the form snakemake --report shows)")


def main(args: argparse.Namespace) -> None:
    from ..data import atomic_write_text
    from ..papers import compare, load_published, render_html, render_markdown
    from ..report import read_summaries

    table = compare(load_published(args.table), read_summaries(args.summaries))
    atomic_write_text(args.out_csv, table.to_csv(index=False))
    atomic_write_text(args.out_md, render_markdown(args.table, table))
    if args.out_html:
        atomic_write_text(args.out_html, render_html(args.table, table))
    counts = table["status"].value_counts().to_dict()
    print(f"{args.table}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
