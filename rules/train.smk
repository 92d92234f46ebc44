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
    threads: config["train_threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        cfg=lambda wc: json.dumps(experiment(wc)["extractor"]),
        runtime=train_runtime(),
    shell:
        "{PYTHON} -m poisoncert extractor --dataset-file {input} --out {output} --config '{params.cfg}' "
        "--device {DEVICE} > {log} 2>&1"


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
    threads: config["train_threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        clean=lambda wc: ",".join(map(str, experiment(wc)["clean_classes"])),
        train=lambda wc: json.dumps(experiment(wc)["train"]),
        seed=lambda wc: experiment(wc)["seed_base"],
        runtime=train_runtime(),
    shell:
        "{PYTHON} -m poisoncert phase2 --dataset-file {input} --out {output} --clean-classes {params.clean} "
        "--train-config '{params.train}' --seed {params.seed} --device {DEVICE} --threads {threads} > {log} 2>&1"


rule train:
    """Train one shard of base models (vectorised, deterministic) and write their test-set logits."""
    message:
        "train {wildcards.exp} k={wildcards.k} d={wildcards.d} shard {wildcards.shard} (progress: tail -f {log})"
    input:
        unpack(train_extra_inputs),
        data=dataset_file,
        partitions="results/{exp}/k{k}_d{d}/partitions.npz",
    output:
        "results/{exp}/k{k}_d{d}/logits/shard{shard}.npz",
    log:
        "results/logs/train/{exp}/k{k}_d{d}/shard{shard}.log",
    benchmark:
        "results/benchmarks/train/{exp}/k{k}_d{d}/shard{shard}.tsv"
    threads: config["train_threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        args=train_args,
        shard_size=config["shard_size"],
        runtime=train_runtime(),
    shell:
        "{PYTHON} -m poisoncert train --dataset-file {input.data} --partitions {input.partitions} --out {output} "
        "--shard {wildcards.shard} --shard-size {params.shard_size} {params.args} "
        "--device {DEVICE} --threads {threads} > {log} 2>&1"


rule aggregate:
    """Gather the per-shard logits into the scores file (n_test, n_models, n_classes)."""
    input:
        data=dataset_file,
        partitions="results/{exp}/k{k}_d{d}/partitions.npz",
        shards=shard_files,
    output:
        "results/{exp}/k{k}_d{d}/scores.npz",
    wildcard_constraints:
        exp=TRAINED_EXP,  # not the binary_kmeans experiments (rule kmeans_scores)
    log:
        "results/logs/aggregate/{exp}/k{k}_d{d}.log",
    params:
        experiment=lambda wc: json.dumps(experiment(wc)),
    shell:
        "{PYTHON} -m poisoncert aggregate --dataset-file {input.data} --partitions {input.partitions} "
        "--out {output} --experiment '{params.experiment}' {input.shards} > {log} 2>&1"
