rule certify:
    """Per-sample prediction and certificate, and a summary (clean/base accuracy, median radius, curve)."""
    input:
        rules.aggregate.output[0],
    output:
        csv="results/{exp}/k{k}_d{d}/certificates/{cert}.csv",
        json="results/{exp}/k{k}_d{d}/certificates/{cert}.json",
    log:
        "results/logs/certify/{exp}/k{k}_d{d}/{cert}.log",
    benchmark:
        "results/benchmarks/certify/{exp}/k{k}_d{d}/{cert}.tsv"
    conda:
        ENV
    params:
        radii=radii_arg(),
    shell:
        "poisoncert certify {input:q} --certificate {wildcards.cert} --out-csv {output.csv:q} "
        "--out-json {output.json:q} --radii {params.radii} > {log:q} 2>&1"


rule poison_check:
    """Attack certified samples with as many poisons as their certificate allows, retrain the affected models, check."""
    input:
        unpack(extractor_input),
        data=dataset_file,
        scores=rules.aggregate.output[0],
    output:
        csv="results/{exp}/k{k}_d{d}/poison_check.csv",
        json="results/{exp}/k{k}_d{d}/poison_check.json",
    log:
        "results/logs/poison_check/{exp}/k{k}_d{d}.log",
    benchmark:
        "results/benchmarks/poison_check/{exp}/k{k}_d{d}.tsv"
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        gpu=GPUS,
    params:
        targets=lookup(dpath="experiments/{exp}/poison_check", within=config),
        certificates=certificates_arg,
        extractor=extractor_arg,
    shell:
        "poisoncert poison-check --dataset-file {input.data:q} {input.scores:q} --targets {params.targets} "
        "--certificates {params.certificates} {params.extractor} --out-csv {output.csv:q} --out-json {output.json:q} > {log:q} 2>&1"
