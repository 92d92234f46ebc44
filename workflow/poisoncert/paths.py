"""The workflow's file layout: where each result of a validated config lives under ``results/``.

One place for the paths the Snakemake rules, the figure records (:mod:`poisoncert.figures`) and
the tests agree on; ``rules/common.smk`` wraps these for its input functions.

>>> ensemble_dir("fa_digits", 10, 2)
'results/fa_digits/k10_d2'
>>> n_shards(38400, 16)
2400
"""

from __future__ import annotations

from typing import Any

from . import registry

__all__ = [
    "ensemble_dir",
    "n_shards",
    "experiments_on",
    "certificate_summaries",
    "train_benchmarks",
    "certify_benchmarks",
]


def ensemble_dir(exp: str, k: Any, d: Any) -> str:
    """The folder of one (experiment, k, d) ensemble."""
    return f"results/{exp}/k{k}_d{d}"


def n_shards(n_models: int, shard_size: int) -> int:
    """Train jobs of an ensemble of ``n_models`` base models in shards of ``shard_size``."""
    return (n_models + shard_size - 1) // shard_size


def experiments_on(cfg: dict[str, Any], dataset: str) -> list[str]:
    """The experiments of a validated config on ``dataset``."""
    return [name for name, exp in cfg["experiments"].items() if exp["dataset"] == dataset]


def certificate_summaries(cfg: dict[str, Any], exp_name: str) -> list[str]:
    """Every certificate summary (.json) of experiment ``exp_name``."""
    exp = cfg["experiments"][exp_name]
    return [f"{ensemble_dir(exp_name, k, d)}/certificates/{cert}.json" for k in exp["k"] for d in exp["d"] for cert in exp["certificates"]]


def train_benchmarks(cfg: dict[str, Any], exp_name: str) -> list[str]:
    """Benchmark files of every train job of an experiment (none for a scheme that does not train)."""
    exp = cfg["experiments"][exp_name]
    scheme = registry.scheme(exp["scheme"])
    if not scheme.trains:
        return []
    return [
        f"results/benchmarks/train/{exp_name}/k{k}_d{d}/shard{s}.tsv"
        for k in exp["k"]
        for d in exp["d"]
        for s in range(n_shards(scheme.n_models(k, d, exp["n_models"]), cfg["shard_size"]))
    ]


def certify_benchmarks(cfg: dict[str, Any], exp_name: str) -> list[str]:
    """Benchmark files of every certify job of an experiment."""
    exp = cfg["experiments"][exp_name]
    return [f"results/benchmarks/certify/{exp_name}/k{k}_d{d}/{cert}.tsv" for k in exp["k"] for d in exp["d"] for cert in exp["certificates"]]


#: The files of each experiment's report rule, and of each dataset's comparison (rule compare).
REPORT_FILES = ("table.csv", "table.md", "table.html", "certified_accuracy.png", "certified_accuracy.pdf")


def all_targets(cfg: dict[str, Any]) -> list[str]:
    """Every file ``snakemake`` makes by default for a validated config (rule ``all``): each experiment's
    report and poison checks, the paper tables, every figure whose record applies
    (:func:`poisoncert.figures.targets`) and a comparison per dataset with several experiments."""
    from . import figures

    out = []
    for name, exp in cfg["experiments"].items():
        out += [f"results/{name}/report/{f}" for f in REPORT_FILES]
        if exp["poison_check"]:
            out += [f"{ensemble_dir(name, k, d)}/poison_check.json" for k in exp["k"] for d in exp["d"]]
    out += [f"results/paper_tables/{t}.{ext}" for t in cfg["paper_tables"] for ext in ("csv", "md", "html")]
    out += figures.targets(cfg)
    for ds in sorted({exp["dataset"] for exp in cfg["experiments"].values()}):
        if len(experiments_on(cfg, ds)) > 1:
            out += [f"results/compare/{ds}/{f}" for f in REPORT_FILES]
    return out
