"""``poisoncert roe-methods`` (rule ``roe_methods``): ROE Figs. 2-3, the six methods at one k and their gain over DPA."""

from __future__ import annotations

import argparse

HELP = "ROE Figs. 2-3: DPA, DPA+ROE, FA, FA+ROE, DPA*, DPA*+ROE at one k, and their improvement over DPA"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("summaries", nargs="+", help="certificate summaries (.json) of the dpa, fa (d = 1 and d > 1) and dpa_star ensembles")
    p.add_argument("--k", type=int, required=True, help="the number of partitions the figure compares the methods at")
    p.add_argument("--title", default="ROE methods")
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)


def main(args: argparse.Namespace) -> None:
    from ..report import plot_roe_methods, read_summaries

    plot_roe_methods(read_summaries(args.summaries), args.k, args.title, args.out_png, args.out_pdf)
