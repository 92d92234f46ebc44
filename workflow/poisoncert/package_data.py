"""Files shipped inside the package (package data of the wheel): the config schema and the papers'
published numbers.

They live in the package, not beside it, so that an installed wheel validates a config and renders
the paper tables on its own; ``importlib.resources`` finds them wherever the package was installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import PoisonCertError

__all__ = ["package_path"]


def package_path(*parts: str) -> Path:
    """The file or folder ``parts`` inside the installed package, as a path on disk.

    The workflow hands these paths to Snakemake rules as inputs, so they must be real files: true for
    a source tree, an editable install and an installed wheel (pip never installs a zipped package).

    >>> package_path("schemas", "config.schema.yaml").is_file()
    True
    """
    path = resources.files(__package__).joinpath(*parts)
    if not isinstance(path, Path):
        raise PoisonCertError(f"poisoncert's package data {'/'.join(parts)} is not a file on disk ({path!r}); install poisoncert unzipped")
    return path
