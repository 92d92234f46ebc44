"""``poisoncert fa-gain`` (rule ``fa_gain``): FA Fig. 4, Theorem 2 minus the DPA-style bound on the same k*d models."""

from __future__ import annotations

import argparse

HELP = "FA Fig. 4: certified accuracy of Theorem 2 minus the DPA-style bound on the same k*d base models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("summaries", nargs="+", help="certificate summaries (.json) of FA ensembles")
    p.add_argument("--title", default="FA Theorem 2 vs the DPA-style bound on the same base models")
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)


def main(args: argparse.Namespace) -> None:
    from ..report import plot_fa_certificate_gain, read_summaries

    plot_fa_certificate_gain(read_summaries(args.summaries), args.title, args.out_png, args.out_pdf)
