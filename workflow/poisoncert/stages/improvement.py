"""``poisoncert improvement`` (rule ``improvement``): certified accuracy minus the DPA baseline (FA Fig. 3 right, ROE Fig. 2 bottom)."""

from __future__ import annotations

import argparse

HELP = "certified accuracy minus the DPA baseline (FA Fig. 3 right, ROE Fig. 2 bottom)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("summaries", nargs="+")
    p.add_argument("--title", default="improvement over DPA")
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)


def main(args: argparse.Namespace) -> None:
    from ..report import plot_improvement, read_summaries

    plot_improvement(read_summaries(args.summaries), args.title, args.out_png, args.out_pdf)
