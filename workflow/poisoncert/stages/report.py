"""``poisoncert report`` (rules ``report`` and ``compare``): table and figure from certificate summaries."""

from __future__ import annotations

import argparse

from ._common import int_list

HELP = "table and figure from certificate summaries"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("summaries", nargs="+")
    p.add_argument("--radii", type=int_list, default=[0, 1, 2, 4, 8, 16])
    p.add_argument("--title", default="certified accuracy")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--out-html", help="also the table as an HTML page (the form snakemake --report shows)")
    p.add_argument("--benchmarks", nargs="*", default=[],
                   help="Snakemake benchmark TSVs of the ensembles' train jobs: adds DPA Table 1's training-time columns")


def main(args: argparse.Namespace) -> None:
    from ..report import write_report

    write_report(args.summaries, args.radii, args.title, args.out_csv, args.out_md, args.out_png, args.out_pdf, args.out_html, args.benchmarks)
