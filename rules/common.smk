# Helpers shared by the rules: config validation, target lists, wildcard constraints, and the
# named input, param and resource functions the rules use (no logic inside the rules themselves).
import functools
import json
import os
import re
import shlex
import sys

try:
    from poisoncert import paths, registry
    from poisoncert.config import LATER_TRAIN_DEFAULTS, ensembles, validate_config
    from poisoncert.errors import PoisonCertError
    from poisoncert.figures import FIGURES
    from poisoncert.learners import for_experiment
    from poisoncert.learners.base import upstream_file
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
#: The train rule's resources: no `gpu` entry at 0 (the SLURM plugin passes nothing at 0 either),
#: since Snakemake evaluates every resource of each of up to 38,400 train jobs (bench_dag.py).
TRAIN_RESOURCES = {"device": DEVICE, **({"gpu": GPUS} if GPUS else {})}


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
    # 'data/', './data' and 'data' are one folder: one rerun trigger; never read as a flag
    root = os.path.normpath(config["data_root"])
    root = os.path.join(".", root) if root.startswith("-") else root
    return f"--root {shlex.quote(root)}{download}"


def experiment(wildcards):
    return config["experiments"][wildcards.exp]


def dataset_file(wildcards):
    """The canonical dataset file of the experiment's dataset (rule prepare)."""
    return f"results/data/{experiment(wildcards)['dataset']}.npz"


def _recorded_train(e):
    """The experiment's training config as the jobs get it: options added after results existed
    (LATER_TRAIN_DEFAULTS) are left out at their old behaviour, so adding them reruns nothing.
    ``strategy: auto`` is recorded resolved (the measured choice for the arch and the jobs' device):
    a change of that choice retrains exactly the models whose strategy changed.
    """
    train = dict(e["train"])
    if train.get("strategy", "auto") == "auto":
        from poisoncert.train import TrainConfig, resolve_strategy

        train["strategy"] = resolve_strategy(
            TrainConfig(arch=train.get("arch", "small_cnn")), _device_kind()
        )
    return {
        key: v
        for key, v in train.items()
        if key not in LATER_TRAIN_DEFAULTS or v != LATER_TRAIN_DEFAULTS[key]
    }


@functools.lru_cache(maxsize=None)
def _train_args(exp):
    e = config["experiments"][exp]
    words = ["--train-config", json.dumps(_recorded_train(e))]
    return shlex.join(words + for_experiment(e).train_flags(exp, e))


def train_args(wildcards):
    """A train job's flags: the training config (a param: a change retrains) and the shared
    SS-DPA extractor or 2-phase phi_2 it reads. Cached per experiment: 38,400 jobs share a few.
    """
    return _train_args(wildcards.exp)


def _explicit_offsets(e, k, d):
    """The experiment's FA spread offsets for ensemble (k, d); None where they are the default R as a
    set (FA spreads bucket j to {(j + r) mod kd : r in R}): writing the default out reruns nothing.
    """
    from poisoncert.partition import default_fa_offsets

    offsets = e["offsets"]
    if offsets is None or sorted(offsets) == sorted(default_fa_offsets(int(k), int(d))):
        return None
    return offsets


def offsets_arg(wildcards):
    """FA's explicit spread offsets (--offsets), if the experiment gives other than the default."""
    offsets = _explicit_offsets(experiment(wildcards), wildcards.k, wildcards.d)
    return "" if offsets is None else f"--offsets {','.join(map(str, offsets))}"


def same_seed_arg(wildcards):
    return "--same-seed" if experiment(wildcards)["same_seed"] else ""


def partition_selection_args(wildcards):
    return selection_args(experiment(wildcards))


def experiment_json(wildcards):
    """The whole validated experiment, recorded in the scores file's meta (aggregate, kmeans_scores):
    canonical (poisoncert.config.canonical; default offsets as null), so equal settings rerun nothing.
    """
    e = experiment(wildcards)
    explicit = _explicit_offsets(e, wildcards.k, wildcards.d)
    if e["offsets"] is not None and explicit is None:
        e = {**e, "offsets": None}
    return json.dumps(e)


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


def all_summaries(wildcards):
    """Every certificate summary of the config (rule paper_table)."""
    return [f for name in config["experiments"] for f in certificate_summaries(name)]


def ensemble_dir(exp, k, d):
    return paths.ensemble_dir(exp, k, d)


def n_shards(n_models):
    return paths.n_shards(n_models, config["shard_size"])


def extractor_input(wildcards):
    """The shared label-free extractor of a learner that reads one (registry needs_extractor:
    rotnet, simclr, frozen), for rules train and poison_check."""
    if registry.learner(experiment(wildcards)["learner"]).needs_extractor:
        return {"extractor": f"results/{wildcards.exp}/extractor.pt"}
    return {}


def extractor_arg(wildcards):
    """poison_check's --extractor flag (learner frozen retrains on the extractor's features)."""
    return " ".join(
        f"--extractor {shlex.quote(path)}"
        for path in extractor_input(wildcards).values()
    )


@functools.lru_cache(maxsize=None)
def _train_upstream(exp):
    e = config["experiments"][exp]
    return {role: upstream_file(exp, role) for role in for_experiment(e).upstream}


@functools.lru_cache(maxsize=None)
def _train_inputs(exp):
    data = f"results/data/{config['experiments'][exp]['dataset']}.npz"
    return {"data": data, **_train_upstream(exp)}


def train_inputs(wildcards):
    """A train job's dataset and the upstream files its learner reads (poisoncert.learners: the
    shared label-free extractor, or the shared phi_2 of a two_phase experiment). One input
    function, cached per experiment: Snakemake's per-call overhead is paid once per job (DAG
    planning of 38,400 train jobs, benchmarks/bench_dag.py)."""
    return _train_inputs(wildcards.exp)


def shard_files(wildcards):
    from poisoncert.partition import n_models

    exp = experiment(wildcards)
    n = n_models(exp["scheme"], int(wildcards.k), int(wildcards.d), exp["n_models"])
    return [
        f"{ensemble_dir(wildcards.exp, wildcards.k, wildcards.d)}/logits/shard{s}.npz"
        for s in range(n_shards(n))
    ]


@functools.lru_cache(maxsize=None)
def certificate_summaries(exp_name):
    return paths.certificate_summaries(config, exp_name)


@functools.lru_cache(maxsize=None)
def train_benchmarks(exp_name):
    """Benchmark files of every train job of an experiment (none for a scheme that does not train)."""
    return paths.train_benchmarks(config, exp_name)


def certify_benchmarks(exp_name):
    return paths.certify_benchmarks(config, exp_name)


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
    return paths.experiments_on(config, dataset)


def figure_inputs(figure):
    """The input function of figure record {figure}'s rule: its files by role."""

    def inputs(wildcards):
        return figure.inputs(config, dict(wildcards.items()))

    return inputs


def figure_outputs(figure):
    """Figure record {figure}'s output files by format; the first is shown in `snakemake --report`."""
    out = {}
    for i, fmt in enumerate(figure.formats):
        path = f"{figure.output}.{fmt}"
        if i == 0:
            path = report(
                path,
                caption=f"../workflow/report/{figure.caption}",
                category=figure.category,
                subcategory=figure.subcategory,
                labels={"result": figure.label},
            )
        out[fmt] = path
    return out


def figure_args(figure):
    """The `poisoncert figure` arguments of a job of figure record {figure}: inputs, outputs, wildcards."""

    def args(wildcards, output):
        words = [figure.name]
        for role, files in figure.inputs(config, dict(wildcards.items())).items():
            words += [w for f in files for w in ("--in", f"{role}={f}")]
        words += [
            w for fmt in figure.formats for w in ("--out", f"{fmt}={output[fmt]}")
        ]
        words += [w for key, v in wildcards.items() for w in ("--set", f"{key}={v}")]
        return shlex.join(words)

    return args


def all_targets():
    """The default targets, from poisoncert.paths.all_targets (the figures from their records)."""
    return paths.all_targets(config)


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
