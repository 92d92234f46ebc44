"""``poisoncert check-config``: validate a config file and print it with every default filled in;
``--describe`` prints the config reference (Markdown, from the schema) instead: ``docs/config.md``."""

from __future__ import annotations

import argparse
import json

HELP = "validate a config file and print it with defaults (--describe: the config reference)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="the config file to check (not with --describe)")
    p.add_argument("--describe", action="store_true",
                   help="print the reference of every config key (Markdown, generated from the schema: docs/config.md)")


def main(args: argparse.Namespace) -> None:
    from ..config import load_config_file, load_schema
    from ..errors import PoisonCertError

    if args.describe:
        if args.config:
            raise PoisonCertError("check-config: give a config file or --describe, not both")
        from ..schema import describe

        print(describe(load_schema()), end="")
        return
    if not args.config:
        raise PoisonCertError("check-config: name the config file to check (or --describe for the reference of every key)")
    print(json.dumps(load_config_file(args.config), indent=1))
