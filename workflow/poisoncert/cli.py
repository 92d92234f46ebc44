"""``poisoncert <verb>`` (also ``python -m poisoncert <verb>``): the command line the Snakemake rules call.

Each verb is one stage module of :mod:`poisoncert.stages`, named like its rule. A
:class:`~poisoncert.errors.PoisonCertError` becomes one line on stderr (``poisoncert: error:
...``) and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from .errors import PoisonCertError


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (what is wrong, and where the help is), not
    argparse's usage block; exit status 2 as argparse's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    from . import stages

    p = OneLineParser(prog="poisoncert", description=__doc__.split("\n\n")[0])
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
    import signal
    import threading

    from .data import write_error

    # past the file-size limit (ulimit -f) a write fails with EFBIG, reported below, instead of
    # the signal SIGXFSZ killing the process without a word
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return run(argv)
    except PoisonCertError as exc:
        print(f"poisoncert: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a refused write the stage did not name itself (disk full, read-only folder)
        err = write_error(exc.filename or "an output file", exc)
        if err is None:
            raise
        print(f"poisoncert: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
