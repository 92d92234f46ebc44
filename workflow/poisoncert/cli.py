"""``python -m poisoncert <verb>``: the command line the Snakemake rules call.

Verbs: ``prepare``, ``partition``, ``extractor``, ``phase2``, ``train``, ``aggregate``,
``kmeans-scores``, ``certify``, ``report``, ``check-config``. A :class:`~poisoncert.errors.PoisonCertError` becomes one line on stderr
(``poisoncert: error: ...``) and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import PoisonCertError


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poisoncert", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("prepare", help="load a dataset into the canonical dataset file")
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--root", default="data", help="folder of the torchvision datasets")
    s.add_argument("--download", action="store_true")
    s.add_argument("--seed", type=int, default=0, help="train/test split seed (digits)")

    s = sub.add_parser("partition", help="write every base model's training-set indices")
    s.add_argument("--dataset-file", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--scheme", required=True)
    s.add_argument("--k", type=int, required=True)
    s.add_argument("--d", type=int, default=1)
    s.add_argument("--offsets", type=_int_list, default=None, help="FA spread offsets, e.g. 3,17")
    s.add_argument("--same-seed", action="store_true")
    s.add_argument("--seed-base", type=int, default=0)
    s.add_argument("--n-models", type=int, default=None, help="T: number of random selections (bagging, bagging_wor, binomial)")
    s.add_argument("--clean-classes", type=_int_list, default=None, help="classes known clean (D^c)")
    s.add_argument("--clean-count", type=int, default=0, help="number of samples known clean (D^c)")
    s.add_argument("--balance", action="store_true", help="weight-balanced resampling (Chen et al. Alg. 2)")
    s.add_argument("--balance-size", type=int, default=None)
    s.add_argument("--two-phase", action="store_true", help="Chen et al. Alg. 3: balance phi_1's classes (clean classes merged)")

    s = sub.add_parser("train", help="train one shard of base models, write their test logits")
    s.add_argument("--dataset-file", required=True)
    s.add_argument("--partitions", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--shard", type=int, required=True)
    s.add_argument("--shard-size", type=int, required=True)
    s.add_argument("--train-config", default="{}", help="JSON of TrainConfig fields")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--extractor", default=None, help="SS-DPA: feature extractor file (heads are trained on its features)")
    s.add_argument("--phase2", default=None, help="2-phase ensembles (Chen et al. Alg. 3): the shared phi_2 file")

    s = sub.add_parser("phase2", help="train Chen et al.'s shared 2nd-phase classifier phi_2 on the known-clean classes")
    s.add_argument("--dataset-file", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--clean-classes", type=_int_list, required=True)
    s.add_argument("--train-config", default="{}", help="JSON of TrainConfig fields")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("kmeans-scores", help="DPA App. B: 2-means SS-DPA with k = m, written as a scores file")
    s.add_argument("--dataset-file", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--experiment", default="{}", help="JSON of the experiment's config (recorded)")

    s = sub.add_parser("extractor", help="train the SS-DPA label-free feature extractor")
    s.add_argument("--dataset-file", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--config", default="{}", help="JSON of ExtractorConfig fields")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    s = sub.add_parser("aggregate", help="gather shard logits into the scores file")
    s.add_argument("--dataset-file", required=True)
    s.add_argument("--partitions", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--experiment", default="{}", help="JSON of the experiment's config (recorded)")
    s.add_argument("shards", nargs="+")

    s = sub.add_parser("certify", help="certify a scores file (ours or one trained elsewhere)")
    s.add_argument("scores")
    s.add_argument("--certificate", required=True, help="dpa, fa, dpa_roe, fa_roe, dpa_star_roe, bagging, random_selection, binary_kmeans")
    s.add_argument("--out-csv", required=True)
    s.add_argument("--out-json", required=True)
    s.add_argument("--radii", type=_int_list, default=[0, 1, 2, 4, 8, 16])
    s.add_argument("--k", type=int, default=None, help="override/supply k (FA, DPA*)")
    s.add_argument("--d", type=int, default=None)
    s.add_argument("--offsets", type=_int_list, default=None)
    s.add_argument("--alpha", type=float, default=None, help="bagging / random_selection confidence level")
    s.add_argument("--train-size", type=int, default=None, help="bagging / random_selection: training-set size n")
    s.add_argument("--subsample-size", type=int, default=None, help="bagging / random_selection: selection size (default: k)")
    s.add_argument("--scheme", default=None, help="random_selection: bagging, bagging_wor or binomial")
    s.add_argument("--poisoning-model", default=None, help="random_selection: P1..P6")
    s.add_argument("--clean-size", type=int, default=None, help="random_selection: known-clean samples in every set")

    s = sub.add_parser("poison-check", help="attack certified samples within their radius, retrain, confirm they hold")
    s.add_argument("--dataset-file", required=True)
    s.add_argument("scores")
    s.add_argument("--targets", type=int, default=3, help="number of certified test samples to attack")
    s.add_argument("--out-csv", required=True)
    s.add_argument("--out-json", required=True)

    s = sub.add_parser("report", help="table and figure from certificate summaries")
    s.add_argument("summaries", nargs="+")
    s.add_argument("--radii", type=_int_list, default=[0, 1, 2, 4, 8, 16])
    s.add_argument("--title", default="certified accuracy")
    s.add_argument("--out-csv", required=True)
    s.add_argument("--out-md", required=True)
    s.add_argument("--out-png", required=True)
    s.add_argument("--out-pdf", required=True)

    s = sub.add_parser("improvement", help="certified accuracy minus the DPA baseline (FA Fig. 3 right, ROE Fig. 2 bottom)")
    s.add_argument("summaries", nargs="+")
    s.add_argument("--title", default="improvement over DPA")
    s.add_argument("--out-png", required=True)
    s.add_argument("--out-pdf", required=True)

    s = sub.add_parser("delta-figure", help="Chen et al. Fig. 2: delta(rho) of the three random selection schemes")
    s.add_argument("--out-png", required=True)
    s.add_argument("--out-pdf", required=True)
    s.add_argument("--out-csv", default=None)
    s.add_argument("--poisoning-model", default="P6")

    s = sub.add_parser("paper-table", help="a transcribed paper table beside this run's numbers")
    s.add_argument("table", help="file stem in workflow/paper_results/, e.g. dpa_table1")
    s.add_argument("summaries", nargs="*")
    s.add_argument("--out-csv", required=True)
    s.add_argument("--out-md", required=True)

    s = sub.add_parser("check-config", help="validate a config file and print it with defaults")
    s.add_argument("config")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import stages

    if args.verb == "prepare":
        stages.prepare(args.dataset, args.out, args.root, args.download, args.seed)
    elif args.verb == "partition":
        selection = {"n_models": args.n_models, "clean_classes": args.clean_classes, "clean_count": args.clean_count, "balance": args.balance, "balance_size": args.balance_size, "two_phase": args.two_phase}
        stages.partition(args.dataset_file, args.out, args.scheme, args.k, args.d, args.offsets, args.same_seed, args.seed_base, selection)
    elif args.verb == "train":
        stages.train(args.dataset_file, args.partitions, args.out, args.shard, args.shard_size, json.loads(args.train_config), args.device, args.threads, not args.no_progress, args.extractor, args.phase2)
    elif args.verb == "extractor":
        stages.extractor(args.dataset_file, args.out, json.loads(args.config), args.device)
    elif args.verb == "phase2":
        stages.phase2(args.dataset_file, args.out, args.clean_classes, json.loads(args.train_config), args.seed, args.device, args.threads, not args.no_progress)
    elif args.verb == "kmeans-scores":
        stages.kmeans_scores(args.dataset_file, args.out, json.loads(args.experiment))
    elif args.verb == "aggregate":
        stages.aggregate(args.dataset_file, args.partitions, args.shards, args.out, json.loads(args.experiment))
    elif args.verb == "certify":
        stages.run_certify(args.scores, args.certificate, args.out_csv, args.out_json, args.radii, {"k": args.k, "d": args.d, "offsets": args.offsets, "alpha": args.alpha, "train_size": args.train_size, "subsample_size": args.subsample_size, "scheme": args.scheme, "poisoning_model": args.poisoning_model, "n_clean": args.clean_size})
    elif args.verb == "poison-check":
        stages.run_poison_check(args.dataset_file, args.scores, args.out_csv, args.out_json, args.targets)
    elif args.verb == "report":
        from .report import write_report

        write_report(args.summaries, args.radii, args.title, args.out_csv, args.out_md, args.out_png, args.out_pdf)
    elif args.verb == "improvement":
        from .report import plot_improvement, read_summaries

        plot_improvement(read_summaries(args.summaries), args.title, args.out_png, args.out_pdf)
    elif args.verb == "delta-figure":
        from .report import plot_selection_delta

        plot_selection_delta(args.out_png, args.out_pdf, args.out_csv, args.poisoning_model)
    elif args.verb == "paper-table":
        from .data import atomic_write_text
        from .papers import compare, load_published, render_markdown
        from .report import read_summaries

        table = compare(load_published(args.table), read_summaries(args.summaries))
        atomic_write_text(args.out_csv, table.to_csv(index=False))
        atomic_write_text(args.out_md, render_markdown(args.table, table))
        counts = table["status"].value_counts().to_dict()
        print(f"{args.table}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    elif args.verb == "check-config":
        from .config import load_config_file

        print(json.dumps(load_config_file(args.config), indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except PoisonCertError as exc:
        print(f"poisoncert: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
