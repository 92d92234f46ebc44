# Helpers shared by the rules: config validation, target lists, wildcard constraints, and the
# named input, param and resource functions the rules use (no logic inside the rules themselves).
import functools
import json
import os
import re
import shlex
import sys

try:
    from poisoncert import registry
    from poisoncert.config import ensembles, validate_config
    from poisoncert.errors import PoisonCertError
    from poisoncert.stages.aggregate import LATER_TRAIN_DEFAULTS
    from poisoncert.papers import PAPER_RESULTS
except ImportError as _exc:
    sys.exit(
        f"poisoncert: this Python ({sys.executable}) has no poisoncert package ({_exc}); install it with `make install` (README)"
    )

# Validate, fill the schema's defaults in place (as snakemake.utils.validate(set_default=True) does),
# and stop with one line naming the key on a bad config.
try:
    config.update(validate_config(config))
except PoisonCertError as _exc:
    sys.exit(f"poisoncert: invalid config: {_exc}")

# glibc returns each large freed buffer to the kernel by default, so every training step's
# activations become fresh pages to zero: more system time than arithmetic on 2 cores. A fixed
# mmap threshold and no trimming keep them in the heap (poisoncert.train.keep_freed_memory does
# what glibc allows from inside a process; these variables also cover buffers above 32 MiB).
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**32))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(2**36))

ENSEMBLES = ensembles(config)
#: The conda environment of every rule (`snakemake --sdm conda`); `pip install -e .` provides the same.
ENV = "../envs/poisoncert.yaml"
#: GPUs a training job asks the scheduler for (SLURM profile: `resources: gpu`).
GPUS = 1 if config["device"] == "cuda" else 0
#: The device a training job is told to use, as configured: each job resolves 'auto' on the node it
#: runs on. A resource, not a param: 'auto' and the device it resolves to train the same bits, so
#: the rerun trigger is the resolved device in train_runtime(), not this string.
DEVICE = config["device"]


wildcard_constraints:
    exp="[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset="[a-z0-9_]+",
    k="[0-9]+",
    d="[0-9]+",
    shard="[0-9]+",
    cert="[a-z_]+",
    table="[A-Za-z0-9_]+",


# Schemes that do not train (registry: DPA App. B's binary_kmeans) get their scores.npz from the
# kmeans_scores rule, every other experiment from the aggregate rule. Two mutually exclusive
# constraints on {exp} make sure no scores file can be made by both (the lookahead stops at the
# '/' after the name).
_KMEANS_NAMES = "|".join(
    re.escape(n)
    for n, e in config["experiments"].items()
    if not registry.scheme(e["scheme"]).trains
)
KMEANS_EXP = f"(?:{_KMEANS_NAMES})" if _KMEANS_NAMES else "(?!)"  # (?!) matches nothing
_NOT_KMEANS = f"(?!(?:{_KMEANS_NAMES})/)" if _KMEANS_NAMES else ""
TRAINED_EXP = f"{_NOT_KMEANS}[A-Za-z0-9][A-Za-z0-9_-]*"


def _torch_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def _device_kind():
    """The device the jobs will train on ('auto' resolved as the jobs resolve it), for the rerun trigger."""
    if config["device"] != "auto":
        return config["device"]
    from poisoncert.train import resolve_device

    return resolve_device("auto").type


TRAIN_RUNTIME = {
    "threads": config["train_threads"],
    "device": _device_kind(),
    "torch": _torch_version(),
}


def train_runtime():
    """What besides data, partition, seed and training config can change a model's bits (a rule
    param, so a change reruns the training): CPU threads, device kind and torch build. The train
    job records the runtime it really used; aggregate refuses shards of different runtimes.
    """
    return TRAIN_RUNTIME


def prepare_args(wildcards):
    """Only what can change dataset {dataset}: the embedded datasets read no files (root, download)
    and the torchvision ones have official splits (split_seed), so neither reruns the other.
    """
    if registry.dataset(wildcards.dataset).embedded:
        return f"--seed {config['split_seed']}"
    download = " --download" if config["download"] else ""
    root = os.path.normpath(config["data_root"])  # 'data/', './data' and 'data' are one folder: one rerun trigger
    root = os.path.join(".", root) if root.startswith("-") else root  # never read as a flag
    return f"--root {shlex.quote(root)}{download}"


def experiment(wildcards):
    return config["experiments"][wildcards.exp]


def dataset_file(wildcards):
    """The canonical dataset file of the experiment's dataset (rule prepare)."""
    return f"results/data/{experiment(wildcards)['dataset']}.npz"


def _recorded_train(e):
    """The experiment's training config as the jobs get it: options added after results existed
    (LATER_TRAIN_DEFAULTS) are left out at their old behaviour, so adding them reruns nothing.
    """
    return {
        key: v
        for key, v in e["train"].items()
        if key not in LATER_TRAIN_DEFAULTS or v != LATER_TRAIN_DEFAULTS[key]
    }


@functools.lru_cache(maxsize=None)
def _train_args(exp):
    e = config["experiments"][exp]
    args = f"--train-config {shlex.quote(json.dumps(_recorded_train(e)))}"
    learner = registry.learner(e["learner"])
    if learner.needs_extractor:
        args += f" --extractor {shlex.quote(f'results/{exp}/extractor.pt')}"
        if learner.config_key:  # frozen: its own rule on the features, no heads
            fields = shlex.quote(json.dumps(e[learner.config_key]))
            args += f" --learner {learner.name} --learner-config {fields}"
        else:  # rotnet, simclr: a head per partition
            args += f" --head-config {shlex.quote(json.dumps(e['head']))}"
    elif e["two_phase"]:
        args += f" --phase2 {shlex.quote(f'results/{exp}/phase2.npz')}"
    return args


def train_args(wildcards):
    """A train job's flags: the training config (a param: a change retrains) and the shared
    SS-DPA extractor or 2-phase phi_2 it reads. Cached per experiment: 38,400 jobs share a few.
    """
    return _train_args(wildcards.exp)


def offsets_arg(wildcards):
    """FA's explicit spread offsets (--offsets), if the experiment gives them."""
    offsets = experiment(wildcards)["offsets"]
    return "" if offsets is None else f"--offsets {','.join(map(str, offsets))}"


def same_seed_arg(wildcards):
    return "--same-seed" if experiment(wildcards)["same_seed"] else ""


def partition_selection_args(wildcards):
    return selection_args(experiment(wildcards))


def experiment_json(wildcards):
    """The whole validated experiment, recorded in the scores file's meta (aggregate, kmeans_scores)."""
    return json.dumps(experiment(wildcards))


def extractor_json(wildcards):
    return json.dumps(experiment(wildcards)["extractor"])


def train_json(wildcards):
    return json.dumps(_recorded_train(experiment(wildcards)))


def clean_classes_arg(wildcards):
    return ",".join(map(str, experiment(wildcards)["clean_classes"]))


def certificates_arg(wildcards):
    return ",".join(experiment(wildcards)["certificates"])


def report_title(wildcards):
    e = experiment(wildcards)
    return f"{wildcards.exp} ({e['dataset']}, {e['scheme']})"


def experiment_summaries(wildcards):
    """Every certificate summary of experiment {exp} (rules report, improvement)."""
    return certificate_summaries(wildcards.exp)


def dataset_summaries(wildcards):
    """Every certificate summary of the experiments on dataset {dataset} (rule compare)."""
    return [
        f
        for name in experiments_on(wildcards.dataset)
        for f in certificate_summaries(name)
    ]


def experiment_train_benchmarks(wildcards):
    """The train jobs' benchmark files of experiment {exp} (rule report, for DPA Table 1's training time)."""
    return train_benchmarks(wildcards.exp)


def dataset_train_benchmarks(wildcards):
    """The train jobs' benchmark files of the experiments on dataset {dataset} (rule compare)."""
    return [
        f for name in experiments_on(wildcards.dataset) for f in train_benchmarks(name)
    ]


def experiment_benchmarks(wildcards):
    """The train and certify jobs' benchmark files of experiment {exp} (rule running_time)."""
    return train_benchmarks(wildcards.exp) + certify_benchmarks(wildcards.exp)


def fa_gain_summaries(wildcards):
    """The FA certificate summaries with d > 1 of experiment {exp} (rule fa_gain, FA Fig. 4)."""
    exp = experiment(wildcards)
    return [
        f"{ensemble_dir(wildcards.exp, k, d)}/certificates/fa.json"
        for k in exp["k"]
        for d in exp["d"]
        if d != 1
    ]


def roe_methods_summaries(wildcards):
    """The summaries at k = {k} of the dpa, fa and dpa_star experiments on {dataset} (rule roe_methods)."""
    k = int(wildcards.k)
    return [
        f"{ensemble_dir(name, k, d)}/certificates/{cert}.json"
        for name in experiments_on(wildcards.dataset)
        if config["experiments"][name]["scheme"] in ROE_FIGURE_SCHEMES
        and k in config["experiments"][name]["k"]
        for d in config["experiments"][name]["d"]
        for cert in config["experiments"][name]["certificates"]
    ]


def all_summaries(wildcards):
    """Every certificate summary of the config (rule paper_table)."""
    return [f for name in config["experiments"] for f in certificate_summaries(name)]


def ensemble_dir(exp, k, d):
    return f"results/{exp}/k{k}_d{d}"


def n_shards(n_models):
    size = config["shard_size"]
    return (n_models + size - 1) // size


def extractor_input(wildcards):
    """The shared label-free extractor of a learner that reads one (registry needs_extractor:
    rotnet, simclr, frozen), for rules train and poison_check."""
    if registry.learner(experiment(wildcards)["learner"]).needs_extractor:
        return {"extractor": f"results/{wildcards.exp}/extractor.pt"}
    return {}


def extractor_arg(wildcards):
    """poison_check's --extractor flag (learner frozen retrains on the extractor's features)."""
    return " ".join(
        f"--extractor {shlex.quote(path)}" for path in extractor_input(wildcards).values()
    )


def train_extra_inputs(wildcards):
    """The shared label-free extractor, or the shared phi_2 of a two_phase experiment."""
    if experiment(wildcards)["two_phase"]:
        return {"phase2": f"results/{wildcards.exp}/phase2.npz"}
    return extractor_input(wildcards)


def shard_files(wildcards):
    from poisoncert.partition import n_models

    exp = experiment(wildcards)
    n = n_models(exp["scheme"], int(wildcards.k), int(wildcards.d), exp["n_models"])
    return [
        f"{ensemble_dir(wildcards.exp, wildcards.k, wildcards.d)}/logits/shard{s}.npz"
        for s in range(n_shards(n))
    ]


def certificate_summaries(exp_name):
    exp = config["experiments"][exp_name]
    return [
        f"{ensemble_dir(exp_name, k, d)}/certificates/{cert}.json"
        for k in exp["k"]
        for d in exp["d"]
        for cert in exp["certificates"]
    ]


def train_benchmarks(exp_name):
    """Benchmark files of every train job of an experiment (none for a scheme that does not train)."""
    from poisoncert.partition import n_models

    exp = config["experiments"][exp_name]
    if not registry.scheme(exp["scheme"]).trains:
        return []
    return [
        f"results/benchmarks/train/{exp_name}/k{k}_d{d}/shard{s}.tsv"
        for k in exp["k"]
        for d in exp["d"]
        for s in range(n_shards(n_models(exp["scheme"], k, d, exp["n_models"])))
    ]


def certify_benchmarks(exp_name):
    exp = config["experiments"][exp_name]
    return [
        f"results/benchmarks/certify/{exp_name}/k{k}_d{d}/{cert}.tsv"
        for k in exp["k"]
        for d in exp["d"]
        for cert in exp["certificates"]
    ]


def selection_args(exp):
    """CLI flags of the random-selection schemes (empty for the deterministic ones)."""
    if not registry.scheme(exp["scheme"]).selection:
        return ""
    args = f"--n-models {exp['n_models']} --clean-count {exp['clean_count']}"
    if exp["clean_classes"]:
        args += f" --clean-classes {','.join(map(str, exp['clean_classes']))}"
    if exp["balance"]:
        size = f" --balance-size {exp['balance_size']}" if exp["balance_size"] else ""
        args += f" --balance{size}"
    if exp["two_phase"]:
        args += " --two-phase"
    return args


def radii_arg():
    return ",".join(str(r) for r in config["radii"])


def experiments_on(dataset):
    return [
        name for name, exp in config["experiments"].items() if exp["dataset"] == dataset
    ]


def has_improvement(exp):
    """Whether the experiment has a (method, DPA baseline) pair (see poisoncert.report.improvement_pairs)."""
    certs = set(exp["certificates"])
    if any(registry.certificate(c).baseline in certs for c in certs):
        return True
    return "fa" in certs and 1 in exp["d"] and (len(exp["d"]) > 1 or "fa_roe" in certs)


#: The schemes of ROE Figs. 2-3's six methods (see poisoncert.report.roe_method_curves).
ROE_FIGURE_SCHEMES = {
    "dpa": {"dpa", "dpa_roe"},
    "fa": {"fa", "fa_roe"},
    "dpa_star": {"dpa", "dpa_star_roe"},
}


def roe_figure_ks(dataset):
    """The k at which the dataset has all six methods of ROE Figs. 2-3, one experiment each: a dpa
    ensemble (dpa, dpa_roe), an fa one with d = 1 (the FA methods' DPA baseline) and a d > 1 (fa,
    fa_roe), a dpa_star one (dpa, dpa_star_roe), all with the supervised learner."""
    found = {}
    for name in experiments_on(dataset):
        exp = config["experiments"][name]
        need = ROE_FIGURE_SCHEMES.get(exp["scheme"])
        if (
            need is None
            or exp["learner"] != "supervised"
            or not need <= set(exp["certificates"])
        ):
            continue
        if exp["scheme"] == "fa" and not (1 in exp["d"] and max(exp["d"]) > 1):
            continue
        for k in exp["k"]:
            found.setdefault(k, []).append(exp["scheme"])
    return sorted(
        k
        for k, schemes in found.items()
        if sorted(schemes) == sorted(ROE_FIGURE_SCHEMES)
    )


def all_targets():
    figures = (
        "table.csv",
        "table.md",
        "table.html",
        "certified_accuracy.png",
        "certified_accuracy.pdf",
    )
    out = []
    for name, exp in config["experiments"].items():
        out += [f"results/{name}/report/{f}" for f in figures]
        if exp["poison_check"]:
            out += [
                f"{ensemble_dir(name, k, d)}/poison_check.json"
                for k in exp["k"]
                for d in exp["d"]
            ]
    out += [
        f"results/paper_tables/{t}.{ext}"
        for t in config["paper_tables"]
        for ext in ("csv", "md", "html")
    ]
    out += [
        f"results/{name}/report/improvement_over_dpa.{ext}"
        for name, exp in config["experiments"].items()
        if has_improvement(exp)
        for ext in ("png", "pdf")
    ]
    for name, exp in config["experiments"].items():
        if exp["scheme"] == "fa" and "fa" in exp["certificates"] and max(exp["d"]) > 1:
            out += [
                f"results/{name}/report/fa_theorem2_vs_dpa.{ext}"
                for ext in ("png", "pdf")
            ]
        if exp["scheme"] == "binomial":
            out += [
                f"results/{name}/report/selection_sizes_k{k}_d{d}.{ext}"
                for k in exp["k"]
                for d in exp["d"]
                for ext in ("png", "pdf", "csv")
            ]
        if "bagging" in exp["certificates"]:
            out += [
                f"results/{name}/report/running_time.{ext}"
                for ext in ("png", "pdf", "csv")
            ]
    out += [
        "results/figures/chen_fig2_delta.png",
        "results/figures/chen_fig2_delta.pdf",
    ]
    datasets = sorted({exp["dataset"] for exp in config["experiments"].values()})
    for ds in datasets:
        if len(experiments_on(ds)) > 1:
            out += [f"results/compare/{ds}/{f}" for f in figures]
        out += [
            f"results/compare/{ds}/roe_methods_k{k}.{ext}"
            for k in roe_figure_ks(ds)
            for ext in ("png", "pdf")
        ]
    return out


# ---------------------------------------------------------------- collective certificates (issue 21)


def collective_ensembles():
    """(exp, k, d, certificate) of every ensemble certified collectively (rules/collective.smk): the
    experiments with a `collective` key, each of their certificates that has a collective counterpart
    under the scheme's reach (poisoncert.registry.COLLECTIVE_CERTIFICATES)."""
    from poisoncert.registry import COLLECTIVE_CERTIFICATES

    out = []
    for name, exp in config["experiments"].items():
        if not exp.get("collective"):
            continue
        certs = [c for c in exp["certificates"] if c in COLLECTIVE_CERTIFICATES]
        if not certs:
            sys.exit(
                f"poisoncert: invalid config: experiments.{name}.collective: none of its certificates "
                f"({', '.join(exp['certificates'])}) has a collective certificate; supported: "
                f"{', '.join(COLLECTIVE_CERTIFICATES)} (docs/collective.md); remove the key"
            )
        out += [(name, k, d, c) for k in exp["k"] for d in exp["d"] for c in certs]
    return out


def collective_targets():
    return [
        f"results/{e}/k{k}_d{d}/collective/{c}.{ext}"
        for e, k, d, c in collective_ensembles()
        for ext in ("csv", "json", "png", "html")
    ]


def collective_budgets(wildcards):
    return ",".join(str(b) for b in experiment(wildcards)["collective"]["budgets"])


def collective_setting(key):
    """A param function: experiments.<exp>.collective.<key> (schema defaults filled in)."""

    def value(wildcards):
        return str(experiment(wildcards)["collective"][key])

    return value


def collective_title(wildcards):
    e = experiment(wildcards)
    return f"{wildcards.exp} ({e['dataset']}, {e['scheme']} k={wildcards.k} d={wildcards.d}): collective {wildcards.cert}"
