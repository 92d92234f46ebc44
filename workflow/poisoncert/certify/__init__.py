"""Certificates of the five papers, as pure numpy functions over a whole test set.

No torch, no file I/O. Every function validates its input and raises
:class:`poisoncert.errors.PoisonCertError` with a one-line message on bad input.
"""

from ._common import Certificate, check_alpha, check_scores, plurality, vote_counts, votes
from .dpa import dpa, dpa_from_counts
from .binary import binary_kmeans, binary_kmeans_counts  # DPA App. B (2-means SS-DPA)
from .metrics import certified_accuracy, certified_radius_or_minus_one, mean_base_accuracy, median_certified_radius, summary_metrics
from .fa import FACertifiedAccuracy, default_fa_offsets, fa, fa_certified_accuracy, fa_from_votes, fa_improvement_stats
from .roe import dpa_roe, dpa_star_logits, fa_roe, roe_predict
from .collective import CollectiveBlock, CollectiveResult, attack_flips, collective, exact_collective
from .bagging import (
    bagging,
    bagging_radius,
    bagging_radius_delete_only,
    bagging_radius_insert_only,
    bagging_radius_modify_only,
    jia_argmax_poisoned_size,
)
from .selection import POISONING_MODELS, SCHEMES, random_selection, random_selection_radius, selection_delta

__all__ = [
    "binary_kmeans",
    "binary_kmeans_counts",
    "Certificate",
    "check_alpha",
    "check_scores",
    "plurality",
    "vote_counts",
    "votes",
    "dpa",
    "dpa_from_counts",
    "certified_accuracy",
    "certified_radius_or_minus_one",
    "median_certified_radius",
    "mean_base_accuracy",
    "summary_metrics",
    "FACertifiedAccuracy",
    "default_fa_offsets",
    "fa",
    "fa_certified_accuracy",
    "fa_from_votes",
    "fa_improvement_stats",
    "dpa_roe",
    "dpa_star_logits",
    "fa_roe",
    "roe_predict",
    "bagging",
    "bagging_radius",
    "bagging_radius_modify_only",
    "bagging_radius_delete_only",
    "bagging_radius_insert_only",
    "jia_argmax_poisoned_size",
    "CollectiveBlock",
    "CollectiveResult",
    "attack_flips",
    "collective",
    "exact_collective",
    "POISONING_MODELS",
    "SCHEMES",
    "random_selection",
    "random_selection_radius",
    "selection_delta",
]
