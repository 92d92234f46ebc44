"""``poisoncert selection-sizes`` (rule ``selection_sizes``): Chen et al. Fig. 5, sub-dataset sizes and base accuracy.

The sizes are those the partition stage recorded for every random selection (``selection_sizes``
in ``partitions.npz``: samples drawn from the potentially poisoned part, before the known-clean
part is added and before weight-balanced expansion); each base model's clean accuracy is the
fraction of test samples its logits in the scores file classify correctly.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import PoisonCertError

HELP = "Chen et al. Fig. 5: distribution of the selections' sizes and base accuracy by size"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partitions", required=True, help="partitions.npz of a random-selection ensemble")
    p.add_argument("--scores", required=True, help="its scores.npz")
    p.add_argument("--title", default="sub-dataset sizes")
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--out-csv", required=True)


def base_accuracies(scores: np.ndarray, labels: np.ndarray, block: int = 1024) -> np.ndarray:
    """Each base model's test accuracy (its argmax vote equals the label), block by block over test samples."""
    correct = np.zeros(scores.shape[1], dtype=np.int64)
    for a in range(0, scores.shape[0], block):
        correct += (np.argmax(scores[a : a + block], axis=2) == labels[a : a + block, None]).sum(axis=0)
    return correct / scores.shape[0]


def selection_sizes(partitions_file: str, scores_file: str, title: str, out_png: str, out_pdf: str, out_csv: str) -> None:
    from ..data import atomic_write_text
    from ..partition import read_partitions
    from ..report import plot_selection_sizes, selection_size_table
    from ..scores import read_scores

    parts, meta = read_partitions(partitions_file)
    sizes = meta.get("selection_sizes")
    if sizes is None:
        if meta.get("balance") or "n_clean" not in meta:
            raise PoisonCertError(f"{partitions_file} records no selection sizes (written by an older poisoncert partition, or not a "
                                  "random-selection ensemble); delete it and rerun")
        sizes = parts.sizes() - int(meta["n_clean"])
    scores, labels, smeta = read_scores(scores_file, mmap=True)
    if scores.shape[1] != len(sizes):
        raise PoisonCertError(f"{scores_file} holds {scores.shape[1]} base models but {partitions_file} has {len(sizes)} selections")
    table = selection_size_table(sizes, base_accuracies(scores, labels))
    atomic_write_text(out_csv, table.to_csv(index=False))
    plot_selection_sizes(table, title, out_png, out_pdf)
    print(table.to_string(index=False))


def main(args: argparse.Namespace) -> None:
    selection_sizes(args.partitions, args.scores, args.title, args.out_png, args.out_pdf, args.out_csv)
