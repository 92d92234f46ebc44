"""``poisoncert figure NAME`` (one rule per figure record, ``rules/report.smk``): render any figure of :mod:`poisoncert.figures`.

Inputs come by role (``--in summaries=a.json --in summaries=b.json``), outputs by format
(``--out png=f.png --out pdf=f.pdf``) and the figure's wildcards by name (``--set exp=fa_digits``;
they fill the title and, for ROE Figs. 2-3, give k). ``--title`` replaces the record's title.
"""

from __future__ import annotations

import argparse

from ..errors import PoisonCertError

HELP = "render a figure of the report (poisoncert.figures: improvement, fa_gain, roe_methods, ...)"


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the figure (poisoncert.figures.FIGURES)")
    p.add_argument("--in", dest="inputs", type=_pair, action="append", default=[], metavar="ROLE=PATH", help="an input file by role (repeat)")
    p.add_argument("--out", dest="outputs", type=_pair, action="append", default=[], metavar="FORMAT=PATH", help="an output file by format")
    p.add_argument("--set", dest="wildcards", type=_pair, action="append", default=[], metavar="WILDCARD=VALUE", help="a wildcard value")
    p.add_argument("--title", default=None, help="the plot's title (default: the record's, with the wildcards)")


def render(name: str, inputs: dict[str, list[str]], outputs: dict[str, str], wildcards: dict[str, str], title: str | None = None) -> None:
    """Draw figure ``name`` from its inputs (by role) into its outputs (by format)."""
    from ..figures import figure

    fig = figure(name)
    missing = [fmt for fmt in fig.formats if fmt not in outputs]
    if missing:
        raise PoisonCertError(f"figure {name} writes {', '.join(fig.formats)}; give --out {missing[0]}=PATH")
    if title is None:
        try:
            title = fig.title.format(**wildcards)
        except KeyError as exc:
            raise PoisonCertError(f"figure {name}'s title needs the wildcard {exc.args[0]} (--set {exc.args[0]}=VALUE) or --title") from None
    fig.plot(inputs, outputs, wildcards, title)


def main(args: argparse.Namespace) -> None:
    inputs: dict[str, list[str]] = {}
    for role, path in args.inputs:
        inputs.setdefault(role, []).append(path)
    render(args.name, inputs, dict(args.outputs), dict(args.wildcards), args.title)
