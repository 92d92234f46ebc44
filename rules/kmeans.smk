rule kmeans_scores:
    """DPA App. B: 2-means on the unlabeled images, k = m one-sample base classifiers, written as the scores file (no training)."""
    input:
        dataset_file,
    output:
        "results/{exp}/k{k}_d{d}/scores.npz",
    wildcard_constraints:
        exp=KMEANS_EXP,  # only the binary_kmeans experiments (the others: rule aggregate)
    log:
        "results/logs/kmeans_scores/{exp}/k{k}_d{d}.log",
    benchmark:
        "results/benchmarks/kmeans_scores/{exp}/k{k}_d{d}.tsv"
    params:
        experiment=lambda wc: json.dumps(experiment(wc)),
    shell:
        "{PYTHON} -m poisoncert kmeans-scores --dataset-file {input} --out {output} "
        "--experiment '{params.experiment}' > {log} 2>&1"
