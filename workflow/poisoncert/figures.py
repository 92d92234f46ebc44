"""One record per figure: how it is drawn, when it applies, what it reads, how the report shows it.

The figure table the rest reads: ``rules/report.smk`` makes one rule per record (a loop over
:data:`FIGURES`), ``rules/common.smk``'s ``all_targets`` asks :func:`targets` which files the
config's experiments get, and ``poisoncert figure NAME`` (:mod:`poisoncert.stages.figure`)
renders any of them. Whether a figure applies is decided here alone, from the same record
behaviour its plot uses (:func:`poisoncert.report.has_improvement`,
:func:`poisoncert.report.roe_figure_ks`, the scheme records). Adding a figure is its plot
function, its record (:func:`register`) and its test.

A record's ``applies(cfg)`` lists the wildcard values of every figure a validated config gets;
``inputs(cfg, wildcards)`` names its input files by role (each a list of paths);
``plot(inputs, outputs, wildcards, title)`` draws it (``outputs``: format -> path).

>>> f = FIGURES["improvement"]
>>> f.files({"exp": "fa_digits"})
['results/fa_digits/report/improvement_over_dpa.png', 'results/fa_digits/report/improvement_over_dpa.pdf']
>>> f.title.format(exp="fa_digits")
'fa_digits: improvement over DPA'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from . import paths, registry, report
from .errors import PoisonCertError

__all__ = ["Figure", "FIGURES", "figure", "register", "targets", "selection_sizes", "base_accuracies"]

Inputs = dict[str, list[str]]
Config = Mapping[str, Any]


@dataclass(frozen=True)
class Figure:
    """A figure of the report.

    ``name``: its rule and ``poisoncert figure`` name; ``output``: its path without the format
    suffix (Snakemake wildcards in braces); ``formats``: the files it writes (the first is shown
    in ``snakemake --report``, with ``caption`` from ``workflow/report/``, ``category`` and
    ``label``); ``title``: the plot's title, formatted with the wildcards; ``doc``: one line for
    the rule.
    """

    name: str
    doc: str
    output: str
    plot: Callable[[Inputs, dict[str, str], dict[str, str], str], None]
    applies: Callable[[Config], list[dict[str, Any]]]
    inputs: Callable[[Config, Mapping[str, str]], Inputs] = field(default=lambda cfg, w: {})
    formats: tuple[str, ...] = ("png", "pdf")
    caption: str = ""
    category: str = "{exp}"
    subcategory: str | None = None
    label: str = ""
    title: str = ""
    #: the rule's log file (default ``results/logs/<name>/{exp}.log``)
    log: str = ""

    def __post_init__(self) -> None:
        if not self.log:
            object.__setattr__(self, "log", f"results/logs/{self.name}/{{exp}}.log")

    def files(self, wildcards: Mapping[str, Any]) -> list[str]:
        """The files of one instance of the figure."""
        stem = self.output.format(**wildcards)
        return [f"{stem}.{fmt}" for fmt in self.formats]


FIGURES: dict[str, Figure] = {}


def register(fig: Figure) -> Figure:
    """Add a figure to the table (the workflow's rules, targets and ``poisoncert figure`` read it)."""
    if fig.name in FIGURES and FIGURES[fig.name] is not fig:
        raise PoisonCertError(f"figure {fig.name!r} is registered twice")
    FIGURES[fig.name] = fig
    return fig


def figure(name: Any) -> Figure:
    """The figure record ``name``."""
    if not isinstance(name, str) or name not in FIGURES:
        raise PoisonCertError(f"unknown figure {name!r}; choose one of {', '.join(FIGURES)}")
    return FIGURES[name]


def targets(cfg: Config) -> list[str]:
    """Every figure file a validated config's experiments get, in table order."""
    return [f for fig in FIGURES.values() for w in fig.applies(cfg) for f in fig.files(w)]


# ---------------------------------------------------------------------------------------------- helpers


def _experiments(cfg: Config, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [{"exp": name} for name, exp in cfg["experiments"].items() if keep(exp)]


def _summaries(cfg: Config, w: Mapping[str, str]) -> Inputs:
    return {"summaries": paths.certificate_summaries(cfg, w["exp"])}


def _read(inputs: Inputs, key: str = "summaries") -> list[dict[str, Any]]:
    return report.read_summaries(inputs.get(key, []))


# ---------------------------------------------------------------------------------------------- improvement over DPA


def _plot_improvement(inputs: Inputs, out: dict[str, str], w: dict[str, str], title: str) -> None:
    report.plot_improvement(_read(inputs), title, out["png"], out["pdf"])


register(Figure(
    "improvement", "Certified accuracy of FA / ROE minus plain DPA on the same partitions (FA Fig. 3 right, ROE Fig. 2 bottom).",
    "results/{exp}/report/improvement_over_dpa", _plot_improvement,
    applies=lambda cfg: _experiments(cfg, report.has_improvement), inputs=_summaries,
    caption="improvement.rst", label="improvement over DPA (figure)", title="{exp}: improvement over DPA",
))


# ---------------------------------------------------------------------------------------------- FA Fig. 4


#: certificates whose summaries carry the DPA-style bound's curve on the same models (FA Theorem 2's statistics)
_FA_GAIN = "fa"


def _fa_gain_applies(cfg: Config) -> list[dict[str, Any]]:
    return _experiments(cfg, lambda e: _FA_GAIN in e["certificates"] and max(e["d"]) > 1)


def _fa_gain_inputs(cfg: Config, w: Mapping[str, str]) -> Inputs:
    exp = cfg["experiments"][w["exp"]]
    return {"summaries": [f"{paths.ensemble_dir(w['exp'], k, d)}/certificates/{_FA_GAIN}.json" for k in exp["k"] for d in exp["d"] if d != 1]}


def _plot_fa_gain(inputs: Inputs, out: dict[str, str], w: dict[str, str], title: str) -> None:
    report.plot_fa_certificate_gain(_read(inputs), title, out["png"], out["pdf"])


register(Figure(
    "fa_gain", "FA Fig. 4: certified accuracy of FA Theorem 2 minus the DPA-style bound on the same k*d base models.",
    "results/{exp}/report/fa_theorem2_vs_dpa", _plot_fa_gain, applies=_fa_gain_applies, inputs=_fa_gain_inputs,
    caption="fa_gain.rst", label="Theorem 2 vs the DPA-style bound (FA Fig. 4)",
    title="{exp}: Theorem 2 vs the DPA-style bound (FA Fig. 4)",
))


# ---------------------------------------------------------------------------------------------- Chen Fig. 5


def base_accuracies(scores: np.ndarray, labels: np.ndarray, block: int = 1024) -> np.ndarray:
    """Each base model's test accuracy (its argmax vote equals the label), block by block over test samples."""
    correct = np.zeros(scores.shape[1], dtype=np.int64)
    for a in range(0, scores.shape[0], block):
        correct += (np.argmax(scores[a : a + block], axis=2) == labels[a : a + block, None]).sum(axis=0)
    return correct / scores.shape[0]


def selection_sizes(partitions_file: str, scores_file: str, title: str, out_png: str, out_pdf: str, out_csv: str) -> None:
    """Chen et al. Fig. 5: the sizes the partition stage recorded for every random selection
    (``selection_sizes``: samples drawn from the potentially poisoned part, before the known-clean
    part and before weight-balanced expansion) and each base model's clean accuracy by size."""
    from .data import atomic_write_text
    from .partition import read_partitions
    from .scores import read_scores

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
    table = report.selection_size_table(sizes, base_accuracies(scores, labels))
    atomic_write_text(out_csv, table.to_csv(index=False))
    report.plot_selection_sizes(table, title, out_png, out_pdf)
    print(table.to_string(index=False))


def _selection_sizes_applies(cfg: Config) -> list[dict[str, Any]]:
    return [{"exp": name, "k": k, "d": d} for name, exp in cfg["experiments"].items() if registry.scheme(exp["scheme"]).random_size
            for k in exp["k"] for d in exp["d"]]


def _selection_sizes_inputs(cfg: Config, w: Mapping[str, str]) -> Inputs:
    folder = paths.ensemble_dir(w["exp"], w["k"], w["d"])
    return {"partitions": [f"{folder}/partitions.npz"], "scores": [f"{folder}/scores.npz"]}


def _plot_selection_sizes(inputs: Inputs, out: dict[str, str], w: dict[str, str], title: str) -> None:
    selection_sizes(inputs["partitions"][0], inputs["scores"][0], title, out["png"], out["pdf"], out["csv"])


register(Figure(
    "selection_sizes", "Chen et al. Fig. 5: sizes of the random selections and the base classifiers' accuracy by size.",
    "results/{exp}/report/selection_sizes_k{k}_d{d}", _plot_selection_sizes, applies=_selection_sizes_applies,
    inputs=_selection_sizes_inputs, formats=("png", "pdf", "csv"), caption="selection_sizes.rst",
    label="selection sizes, n_s = {k} (Chen Fig. 5)", title="{exp}, n_s = {k} (Chen et al. Fig. 5)",
    log="results/logs/selection_sizes/{exp}/k{k}_d{d}.log",
))


# ---------------------------------------------------------------------------------------------- Jia Fig. 3(c)


#: Jia et al. Fig. 3(c) times the bagging certificate (and training) of an experiment
_RUNNING_TIME = "bagging"


def _running_time_inputs(cfg: Config, w: Mapping[str, str]) -> Inputs:
    return {"summaries": paths.certificate_summaries(cfg, w["exp"]),
            "benchmarks": paths.train_benchmarks(cfg, w["exp"]) + paths.certify_benchmarks(cfg, w["exp"])}


def _plot_running_time(inputs: Inputs, out: dict[str, str], w: dict[str, str], title: str) -> None:
    report.plot_running_time(_read(inputs), report.read_benchmarks(inputs["benchmarks"]), title, out["png"], out["pdf"], out.get("csv"))


register(Figure(
    "running_time", "Jia et al. Fig. 3(c): running time of training and certification, summed from the jobs' benchmark files.",
    "results/{exp}/report/running_time", _plot_running_time,
    applies=lambda cfg: _experiments(cfg, lambda e: _RUNNING_TIME in e["certificates"]), inputs=_running_time_inputs,
    formats=("png", "pdf", "csv"), caption="running_time.rst", label="running time (Jia Fig. 3c)",
    title="{exp}: running time (Jia et al. Fig. 3c)",
))


# ---------------------------------------------------------------------------------------------- Chen Fig. 2


def _plot_delta(inputs: Inputs, out: dict[str, str], w: dict[str, str], title: str) -> None:
    report.plot_selection_delta(out["png"], out["pdf"], out.get("csv"), w.get("poisoning_model", "P6"))


register(Figure(
    "delta_figure", "Chen et al. Fig. 2: delta(rho) of bagging with/without replacement and binomial selection (analytic).",
    "results/figures/chen_fig2_delta", _plot_delta, applies=lambda cfg: [{}], formats=("png", "pdf", "csv"),
    caption="delta.rst", category="analytic", label="Chen et al. Fig. 2, delta(rho) (figure)", log="results/logs/delta_figure.log",
))


# ---------------------------------------------------------------------------------------------- ROE Figs. 2-3


def _roe_applies(cfg: Config) -> list[dict[str, Any]]:
    datasets = sorted({exp["dataset"] for exp in cfg["experiments"].values()})
    return [{"dataset": ds, "k": k} for ds in datasets for k in report.roe_figure_ks(cfg["experiments"], ds)]


def _roe_inputs(cfg: Config, w: Mapping[str, str]) -> Inputs:
    k = int(w["k"])
    exps = cfg["experiments"]
    return {"summaries": [
        f"{paths.ensemble_dir(name, k, d)}/certificates/{cert}.json"
        for name in paths.experiments_on(cfg, w["dataset"])
        if registry.scheme(exps[name]["scheme"]).roe_methods and k in exps[name]["k"]
        for d in exps[name]["d"]
        for cert in exps[name]["certificates"]
    ]}


def _plot_roe(inputs: Inputs, out: dict[str, str], w: dict[str, str], title: str) -> None:
    report.plot_roe_methods(_read(inputs), int(w["k"]), title, out["png"], out["pdf"])


register(Figure(
    "roe_methods", "ROE Figs. 2-3: DPA, DPA+ROE, FA, FA+ROE, DPA*, DPA*+ROE at one k on one dataset, and their improvement over DPA.",
    "results/compare/{dataset}/roe_methods_k{k}", _plot_roe, applies=_roe_applies, inputs=_roe_inputs,
    caption="roe_methods.rst", category="comparison", subcategory="{dataset}", label="six methods, k = {k} (ROE Figs. 2-3)",
    title="{dataset}, k = {k} (ROE Figs. 2-3)", log="results/logs/roe_methods/{dataset}_k{k}.log",
))
