"""Certificates of the five papers, as pure numpy functions over a whole test set.

No torch, no file I/O. Every function validates its input and raises
:class:`poisoncert.errors.PoisonCertError` with a one-line message on bad input.
"""

from ._common import Certificate, check_scores, plurality, vote_counts, votes
from .dpa import dpa, dpa_from_counts
from .metrics import certified_accuracy, certified_radius_or_minus_one, median_certified_radius

__all__ = [
    "Certificate",
    "check_scores",
    "plurality",
    "vote_counts",
    "votes",
    "dpa",
    "dpa_from_counts",
    "certified_accuracy",
    "certified_radius_or_minus_one",
    "median_certified_radius",
]
