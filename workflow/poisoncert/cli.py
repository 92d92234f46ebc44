"""``poisoncert <verb>`` (also ``python -m poisoncert <verb>``): the command line the Snakemake rules call.

Each verb is one stage module of :mod:`poisoncert.stages`, named like its rule. A
:class:`~poisoncert.errors.PoisonCertError` becomes one line on stderr (``poisoncert: error:
...``) and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import PoisonCertError


def _parser() -> argparse.ArgumentParser:
    from . import stages

    p = argparse.ArgumentParser(prog="poisoncert", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    for verb in stages.VERBS:
        mod = stages.module(verb)
        mod.add_arguments(sub.add_parser(verb, help=mod.HELP, description=(mod.__doc__ or "").split("\n\n")[0]))
    return p


def run(argv: Sequence[str] | None = None) -> int:
    from . import stages

    args = _parser().parse_args(argv)
    stages.module(args.verb).main(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except PoisonCertError as exc:
        print(f"poisoncert: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
