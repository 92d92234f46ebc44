# Local jobs (run by snakemake itself, not submitted to a cluster; README "Running on SLURM"):
# partition is cheap (index bookkeeping, seconds); prepare only when it downloads, because compute
# nodes usually have no internet while the login node does.
localrules:
    partition,


if config["download"]:

    localrules:
        prepare,


rule prepare:
    """Load a dataset into the canonical dataset file (uint8 NCHW, int64 labels, content hash)."""
    output:
        "results/data/{dataset}.npz",
    log:
        "results/logs/prepare/{dataset}.log",
    params:
        args=prepare_args,
    shell:
        "{PYTHON} -m poisoncert prepare --dataset {wildcards.dataset} --out {output} {params.args} > {log} 2>&1"


rule partition:
    """Every base model's training-set indices (canonical content order) and seed."""
    input:
        dataset_file,
    output:
        "results/{exp}/k{k}_d{d}/partitions.npz",
    log:
        "results/logs/partition/{exp}/k{k}_d{d}.log",
    params:
        scheme=lambda wc: experiment(wc)["scheme"],
        offsets=lambda wc: (
            "--offsets " + ",".join(map(str, experiment(wc)["offsets"]))
            if experiment(wc)["offsets"] is not None
            else ""
        ),
        same_seed=lambda wc: "--same-seed" if experiment(wc)["same_seed"] else "",
        seed_base=lambda wc: experiment(wc)["seed_base"],
        selection=lambda wc: selection_args(experiment(wc)),
    shell:
        "{PYTHON} -m poisoncert partition --dataset-file {input} --out {output} --scheme {params.scheme} "
        "--k {wildcards.k} --d {wildcards.d} {params.offsets} {params.same_seed} --seed-base {params.seed_base} "
        "{params.selection} > {log} 2>&1"
