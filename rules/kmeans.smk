rule kmeans_scores:
    """DPA App. B: 2-means on the unlabeled images, k = m one-sample base classifiers, written as the scores file (no training)."""
    input:
        dataset_file,
    output:
        "results/{exp}/k{k}_d{d}/scores.npz",
    log:
        "results/logs/kmeans_scores/{exp}/k{k}_d{d}.log",
    benchmark:
        "results/benchmarks/kmeans_scores/{exp}/k{k}_d{d}.tsv"
    wildcard_constraints:
        exp=KMEANS_EXP,  # only the binary_kmeans experiments (the others: rule aggregate)
    conda:
        ENV
    params:
        experiment=experiment_json,
    shell:
        "poisoncert kmeans-scores --dataset-file {input:q} --out {output:q} "
        "--experiment {params.experiment:q} > {log:q} 2>&1"
