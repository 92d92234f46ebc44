"""Helpers the stage modules share: CLI argument types and the training configuration."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import PoisonCertError

__all__ = ["int_list", "json_object", "train_config", "add_device_arguments", "ENSEMBLE_FLAGS", "PARAMETER_FLAGS",
           "add_ensemble_arguments", "merge_flags", "threat_note"]


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers (``3,17``)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (part of the models' identity)")


def train_config(fields: dict[str, Any], threads: int):
    """A :class:`poisoncert.train.TrainConfig` from config fields (lists become tuples)."""
    from ..train import TrainConfig

    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items()}
    values.setdefault("cpu_threads", threads)
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise PoisonCertError(f"bad training configuration: {exc}") from None


# ---------------------------------------------------------------------------------------------- ensemble facts


#: The certificate parameters among the scores metadata keys: a flag may change them freely.
PARAMETERS = ("alpha", "poisoning_model")


def _dest(flag: str) -> str:
    """argparse's attribute name of a flag: ``--train-size`` -> ``train_size``."""
    return flag.lstrip("-").replace("-", "_")


def _flags():
    from .. import registry

    return registry.FLAGS


#: CLI flag (dest) -> scores metadata key, both from :data:`poisoncert.registry.FLAGS` (the one
#: table of metadata keys and their flags). Facts about the ensemble can only be *supplied* where
#: the file does not record them (a flag that contradicts the file is refused: the recorded
#: threat model is the one the ensemble was built under); certificate parameters may be changed.
ENSEMBLE_FLAGS = {_dest(flag): key for key, flag in _flags().items() if key not in PARAMETERS}
PARAMETER_FLAGS = {_dest(flag): key for key, flag in _flags().items() if key in PARAMETERS}

#: What each flag supplies (its help text), by metadata key.
_FLAG_HELP = {
    "k": "supply k where the file does not record it (FA, DPA*; selection size for bagging)",
    "d": "supply d where the file does not record it (FA, DPA*)",
    "offsets": "FA spread offsets R (comma-separated)",
    "alpha": "bagging / random_selection confidence level",
    "train_size": "bagging / random_selection: training-set size n",
    "subsample_size": "bagging / random_selection: selection size (default: k)",
    "poisoning_model": "random_selection: P1..P6",
    "n_clean": "random_selection: known-clean samples in every set",
}


def add_ensemble_arguments(p: argparse.ArgumentParser, parameters: bool = True) -> None:
    """The flags that supply what a scores file does not record (``--scheme``, ``--k``, ...), from
    :data:`poisoncert.registry.FLAGS`; ``parameters``: also the certificate parameters (``--alpha``)."""
    from .. import registry

    for key, flag in _flags().items():
        if key in PARAMETERS and not parameters:
            continue
        if key == "scheme":
            p.add_argument(flag, default=None, choices=list(registry.SCHEMES),
                           help=f"the ensemble's scheme, i.e. its threat footprint, for a file that does not record one (default: {registry.DEFAULT_SCHEME})")
        elif key == "offsets":
            p.add_argument(flag, type=int_list, default=None, help=_FLAG_HELP[key])
        elif key in ("alpha",):
            p.add_argument(flag, type=float, default=None, help=_FLAG_HELP[key])
        elif key == "poisoning_model":
            p.add_argument(flag, default=None, help=_FLAG_HELP[key])
        else:
            p.add_argument(flag, type=int, default=None, help=_FLAG_HELP.get(key))


def merge_flags(meta: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The metadata with the command line's values (metadata key -> value, None = not given):
    ensemble facts fill gaps only, a contradiction is refused; parameters override.

    >>> merge_flags({"scheme": "fa", "k": 5}, {"d": 2, "alpha": 0.01, "k": None})
    {'scheme': 'fa', 'k': 5, 'd': 2, 'alpha': 0.01}
    >>> merge_flags({"scheme": "fa", "k": 5}, {"k": 7})
    Traceback (most recent call last):
    ...
    poisoncert.errors.PoisonCertError: --k 7 contradicts the scores file, which records k = 5: the file's threat model is the one its ensemble was built under; drop the flag (flags only supply what the file does not record)
    """
    from ..scores import check_meta

    out = dict(meta)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in PARAMETERS:
            out[key] = value
            continue
        if meta.get(key) is not None and meta[key] != value:
            raise PoisonCertError(
                f"{_flags()[key]} {value} contradicts the scores file, which records {key} = {meta[key]!r}: the file's threat model is the one "
                "its ensemble was built under; drop the flag (flags only supply what the file does not record)"
            )
        out[key] = value
    return check_meta(out, "the scores metadata with the command-line values")


def threat_note(threat: dict[str, Any]) -> str:
    """What was assumed about the ensemble, for the console line ('' when nothing was).

    >>> threat_note({"assumed": True, "scheme": "dpa", "learner_assumed": False})
    ' [no scheme in the scores: assumed dpa, one base model per poisoned sample]'
    """
    note = f" [no scheme in the scores: assumed {threat['scheme']}, one base model per poisoned sample]" if threat.get("assumed") else ""
    if threat.get("learner_assumed"):
        note += f" [no learner in the scores: assumed {threat['learner']}, unit {threat['unit']}]"
    return note
