"""``poisoncert delta-figure`` (rule ``delta_figure``): Chen et al. Fig. 2, delta(rho) of the three selection schemes."""

from __future__ import annotations

import argparse

HELP = "Chen et al. Fig. 2: delta(rho) of the three random selection schemes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--out-csv", default=None)
    p.add_argument("--poisoning-model", default="P6")


def main(args: argparse.Namespace) -> None:
    from ..report import plot_selection_delta

    plot_selection_delta(args.out_png, args.out_pdf, args.out_csv, args.poisoning_model)
