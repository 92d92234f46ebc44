rule extractor:
    """SS-DPA: a label-free RotNet-style feature extractor, trained once per experiment on all unlabeled images."""
    input:
        dataset_file,
    output:
        "results/{exp}/extractor.pt",
    log:
        "results/logs/extractor/{exp}.log",
    benchmark:
        "results/benchmarks/extractor/{exp}.tsv"
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        gpu=GPUS,
        device=DEVICE,
    params:
        cfg=extractor_json,
        runtime=train_runtime(),
    shell:
        "poisoncert extractor --dataset-file {input:q} --out {output:q} --config {params.cfg:q} "
        "--device {resources.device} > {log:q} 2>&1"


rule phase2:
    """Chen et al. Algorithm 3: the shared 2nd-phase classifier phi_2, trained once on the known-clean classes only."""
    input:
        dataset_file,
    output:
        "results/{exp}/phase2.npz",
    log:
        "results/logs/phase2/{exp}.log",
    benchmark:
        "results/benchmarks/phase2/{exp}.tsv"
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        gpu=GPUS,
        device=DEVICE,
    params:
        clean=clean_classes_arg,
        train=train_json,
        seed=lookup(dpath="experiments/{exp}/seed_base", within=config),
        runtime=train_runtime(),
    shell:
        "poisoncert phase2 --dataset-file {input:q} --out {output:q} --clean-classes {params.clean} "
        "--train-config {params.train:q} --seed {params.seed} --device {resources.device} --threads {threads} > {log:q} 2>&1"


rule train:
    """Train one shard of base models (vectorised, deterministic) and write their test-set logits."""
    input:
        unpack(train_inputs),
        partitions=rules.partition.output[0],
    output:
        "results/{exp}/k{k}_d{d}/logits/shard{shard}.npz",
    log:
        "results/logs/train/{exp}/k{k}_d{d}/shard{shard}.log",
    benchmark:
        "results/benchmarks/train/{exp}/k{k}_d{d}/shard{shard}.tsv"
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        args=train_args,
        shard_size=config["shard_size"],
        runtime=train_runtime(),
    shell:
        "poisoncert train --dataset-file {input.data:q} --partitions {input.partitions:q} --out {output:q} "
        "--shard {wildcards.shard} --shard-size {params.shard_size} {params.args} "
        "--device {resources.device} --threads {threads} > {log:q} 2>&1"


rule aggregate:
    """Gather the per-shard logits into the scores file (n_test, n_models, n_classes)."""
    input:
        data=dataset_file,
        partitions=rules.partition.output[0],
        shards=shard_files,
    output:
        "results/{exp}/k{k}_d{d}/scores.npz",
    log:
        "results/logs/aggregate/{exp}/k{k}_d{d}.log",
    wildcard_constraints:
        exp=TRAINED_EXP,  # not the binary_kmeans experiments (rule kmeans_scores)
    conda:
        ENV
    params:
        experiment=experiment_json,
    shell:
        "poisoncert aggregate --dataset-file {input.data:q} --partitions {input.partitions:q} "
        "--out {output:q} --experiment {params.experiment:q} {input.shards:q} > {log:q} 2>&1"
