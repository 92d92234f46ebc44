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
    conda:
        ENV
    params:
        args=prepare_args,
    shell:
        "poisoncert prepare --dataset {wildcards.dataset} --out {output:q} {params.args} > {log:q} 2>&1"


rule partition:
    """Every base model's training-set indices (canonical content order) and seed."""
    input:
        dataset_file,
    output:
        "results/{exp}/k{k}_d{d}/partitions.npz",
    log:
        "results/logs/partition/{exp}/k{k}_d{d}.log",
    conda:
        ENV
    params:
        scheme=lookup(dpath="experiments/{exp}/scheme", within=config),
        seed_base=lookup(dpath="experiments/{exp}/seed_base", within=config),
        offsets=offsets_arg,
        same_seed=same_seed_arg,
        selection=partition_selection_args,
    shell:
        "poisoncert partition --dataset-file {input:q} --out {output:q} --scheme {params.scheme} "
        "--k {wildcards.k} --d {wildcards.d} {params.offsets} {params.same_seed} --seed-base {params.seed_base} "
        "{params.selection} > {log:q} 2>&1"
