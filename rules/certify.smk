rule certify:
    """Per-sample prediction and certificate, and a summary (clean/base accuracy, median radius, curve)."""
    input:
        "results/{exp}/k{k}_d{d}/scores.npz",
    output:
        csv="results/{exp}/k{k}_d{d}/certificates/{cert}.csv",
        json="results/{exp}/k{k}_d{d}/certificates/{cert}.json",
    log:
        "results/logs/certify/{exp}/k{k}_d{d}/{cert}.log",
    benchmark:
        "results/benchmarks/certify/{exp}/k{k}_d{d}/{cert}.tsv"
    params:
        radii=radii_arg(),
    shell:
        "{PYTHON} -m poisoncert certify {input} --certificate {wildcards.cert} --out-csv {output.csv} "
        "--out-json {output.json} --radii {params.radii} > {log} 2>&1"


rule poison_check:
    """Attack certified samples with as many poisons as their certificate allows, retrain the affected models, check."""
    input:
        data=dataset_file,
        scores="results/{exp}/k{k}_d{d}/scores.npz",
    output:
        csv="results/{exp}/k{k}_d{d}/poison_check.csv",
        json="results/{exp}/k{k}_d{d}/poison_check.json",
    log:
        "results/logs/poison_check/{exp}/k{k}_d{d}.log",
    benchmark:
        "results/benchmarks/poison_check/{exp}/k{k}_d{d}.tsv"
    threads: config["train_threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        targets=lambda wc: experiment(wc)["poison_check"],
        certificates=lambda wc: ",".join(experiment(wc)["certificates"]),
    shell:
        "{PYTHON} -m poisoncert poison-check --dataset-file {input.data} {input.scores} --targets {params.targets} "
        "--certificates {params.certificates} --out-csv {output.csv} --out-json {output.json} > {log} 2>&1"
