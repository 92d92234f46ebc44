"""``poisoncert check-config``: validate a config file and print it with every default filled in."""

from __future__ import annotations

import argparse
import json

HELP = "validate a config file and print it with defaults"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")


def main(args: argparse.Namespace) -> None:
    from ..config import load_config_file

    print(json.dumps(load_config_file(args.config), indent=1))
