rule extractor:
    """SS-DPA: a label-free RotNet-style feature extractor, trained once per experiment on all unlabeled images."""
    input:
        lambda wc: f"results/data/{experiment(wc)['dataset']}.npz",
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
        device=config["device"],
    shell:
        "{PYTHON} -m poisoncert extractor --dataset-file {input} --out {output} --config '{params.cfg}' "
        "--device {params.device} > {log} 2>&1"


rule train:
    """Train one shard of base models (vectorised, deterministic) and write their test-set logits."""
    input:
        unpack(train_extra_inputs),
        data=lambda wc: f"results/data/{experiment(wc)['dataset']}.npz",
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
        train=lambda wc: json.dumps(experiment(wc)["train"]),
        shard_size=config["shard_size"],
        device=config["device"],
        extractor=lambda wc, input: f"--extractor {input.extractor}" if "extractor" in input.keys() else "",
    shell:
        "{PYTHON} -m poisoncert train --dataset-file {input.data} --partitions {input.partitions} --out {output} "
        "--shard {wildcards.shard} --shard-size {params.shard_size} --train-config '{params.train}' "
        "--device {params.device} --threads {threads} {params.extractor} > {log} 2>&1"


rule aggregate:
    """Gather the per-shard logits into the scores file (n_test, n_models, n_classes)."""
    input:
        data=lambda wc: f"results/data/{experiment(wc)['dataset']}.npz",
        partitions="results/{exp}/k{k}_d{d}/partitions.npz",
        shards=shard_files,
    output:
        "results/{exp}/k{k}_d{d}/scores.npz",
    log:
        "results/logs/aggregate/{exp}/k{k}_d{d}.log",
    params:
        experiment=lambda wc: json.dumps(experiment(wc)),
    shell:
        "{PYTHON} -m poisoncert aggregate --dataset-file {input.data} --partitions {input.partitions} "
        "--out {output} --experiment '{params.experiment}' {input.shards} > {log} 2>&1"
