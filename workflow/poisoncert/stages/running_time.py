"""``poisoncert running-time`` (rule ``running_time``): Jia et al. Fig. 3(c), training and certification time from the benchmark files."""

from __future__ import annotations

import argparse

HELP = "Jia et al. Fig. 3(c): running time of training and certification, from Snakemake benchmark files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("summaries", nargs="+", help="certificate summaries (.json) of the ensembles")
    p.add_argument("--benchmarks", nargs="+", required=True, help="their train and certify benchmark TSVs")
    p.add_argument("--title", default="running time")
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--out-csv", default=None)


def main(args: argparse.Namespace) -> None:
    from ..report import plot_running_time, read_benchmarks, read_summaries

    plot_running_time(read_summaries(args.summaries), read_benchmarks(args.benchmarks), args.title, args.out_png, args.out_pdf, args.out_csv)
