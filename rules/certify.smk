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
