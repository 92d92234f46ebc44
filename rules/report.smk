localrules:
    report,
    compare,
    paper_table,
    improvement,
    delta_figure,
    fa_gain,
    selection_sizes,
    running_time,
    roe_methods,


rule report:
    """Certified-accuracy table (DPA Table 1 columns, training time included) and figure for one experiment."""
    input:
        summaries=experiment_summaries,
        benchmarks=experiment_train_benchmarks,
    output:
        csv="results/{exp}/report/table.csv",
        md="results/{exp}/report/table.md",
        html=report(
            "results/{exp}/report/table.html",
            caption="../workflow/report/table.rst",
            category="{exp}",
            labels={"result": "certified accuracy (table)"},
        ),
        png=report(
            "results/{exp}/report/certified_accuracy.png",
            caption="../workflow/report/certified_accuracy.rst",
            category="{exp}",
            labels={"result": "certified accuracy (figure)"},
        ),
        pdf="results/{exp}/report/certified_accuracy.pdf",
    log:
        "results/logs/report/{exp}.log",
    conda:
        ENV
    params:
        radii=radii_arg(),
        title=report_title,
    shell:
        "poisoncert report {input.summaries:q} --benchmarks {input.benchmarks:q} --radii {params.radii} --title {params.title:q} "
        "--out-csv {output.csv:q} --out-md {output.md:q} --out-html {output.html:q} --out-png {output.png:q} --out-pdf {output.pdf:q} > {log:q} 2>&1"


rule compare:
    """All methods run on one dataset side by side: one table, one figure with a panel per unit."""
    input:
        summaries=dataset_summaries,
        benchmarks=dataset_train_benchmarks,
    output:
        csv="results/compare/{dataset}/table.csv",
        md="results/compare/{dataset}/table.md",
        html=report(
            "results/compare/{dataset}/table.html",
            caption="../workflow/report/compare_table.rst",
            category="comparison",
            subcategory="{dataset}",
            labels={"result": "certified accuracy (table)"},
        ),
        png=report(
            "results/compare/{dataset}/certified_accuracy.png",
            caption="../workflow/report/compare.rst",
            category="comparison",
            subcategory="{dataset}",
            labels={"result": "certified accuracy (figure)"},
        ),
        pdf="results/compare/{dataset}/certified_accuracy.pdf",
    log:
        "results/logs/compare/{dataset}.log",
    conda:
        ENV
    params:
        radii=radii_arg(),
    shell:
        "poisoncert report {input.summaries:q} --benchmarks {input.benchmarks:q} --radii {params.radii} --title 'all methods on {wildcards.dataset}' "
        "--out-csv {output.csv:q} --out-md {output.md:q} --out-html {output.html:q} --out-png {output.png:q} --out-pdf {output.pdf:q} > {log:q} 2>&1"


rule paper_table:
    """A paper's published table beside this run's numbers, cell by cell ("not yet run" where we have none)."""
    input:
        summaries=all_summaries,
        published=os.path.join(PAPER_RESULTS, "{table}.csv"),
    output:
        csv="results/paper_tables/{table}.csv",
        md="results/paper_tables/{table}.md",
        html=report(
            "results/paper_tables/{table}.html",
            caption="../workflow/report/paper_table.rst",
            category="paper tables",
            labels={"table": "{table}"},
        ),
    log:
        "results/logs/paper_table/{table}.log",
    conda:
        ENV
    shell:
        "poisoncert paper-table {wildcards.table} {input.summaries:q} --out-csv {output.csv:q} --out-md {output.md:q} --out-html {output.html:q} > {log:q} 2>&1"


rule improvement:
    """Certified accuracy of FA / ROE minus plain DPA on the same partitions (FA Fig. 3 right, ROE Fig. 2 bottom)."""
    input:
        experiment_summaries,
    output:
        png=report(
            "results/{exp}/report/improvement_over_dpa.png",
            caption="../workflow/report/improvement.rst",
            category="{exp}",
            labels={"result": "improvement over DPA (figure)"},
        ),
        pdf="results/{exp}/report/improvement_over_dpa.pdf",
    log:
        "results/logs/improvement/{exp}.log",
    conda:
        ENV
    shell:
        "poisoncert improvement {input:q} --title '{wildcards.exp}: improvement over DPA' "
        "--out-png {output.png:q} --out-pdf {output.pdf:q} > {log:q} 2>&1"


rule delta_figure:
    """Chen et al. Fig. 2: delta(rho) of bagging with/without replacement and binomial selection (analytic)."""
    output:
        png=report(
            "results/figures/chen_fig2_delta.png",
            caption="../workflow/report/delta.rst",
            category="analytic",
            labels={"result": "Chen et al. Fig. 2, delta(rho) (figure)"},
        ),
        pdf="results/figures/chen_fig2_delta.pdf",
        csv="results/figures/chen_fig2_delta.csv",
    log:
        "results/logs/delta_figure.log",
    conda:
        ENV
    shell:
        "poisoncert delta-figure --out-png {output.png:q} --out-pdf {output.pdf:q} --out-csv {output.csv:q} > {log:q} 2>&1"


rule fa_gain:
    """FA Fig. 4: certified accuracy of FA Theorem 2 minus the DPA-style bound on the same k*d base models."""
    input:
        fa_gain_summaries,
    output:
        png=report(
            "results/{exp}/report/fa_theorem2_vs_dpa.png",
            caption="../workflow/report/fa_gain.rst",
            category="{exp}",
            labels={"result": "Theorem 2 vs the DPA-style bound (FA Fig. 4)"},
        ),
        pdf="results/{exp}/report/fa_theorem2_vs_dpa.pdf",
    log:
        "results/logs/fa_gain/{exp}.log",
    conda:
        ENV
    shell:
        "poisoncert fa-gain {input:q} --title '{wildcards.exp}: Theorem 2 vs the DPA-style bound (FA Fig. 4)' "
        "--out-png {output.png:q} --out-pdf {output.pdf:q} > {log:q} 2>&1"


rule selection_sizes:
    """Chen et al. Fig. 5: sizes of the random selections and the base classifiers' accuracy by size."""
    input:
        partitions=rules.partition.output[0],
        scores="results/{exp}/k{k}_d{d}/scores.npz",
    output:
        png=report(
            "results/{exp}/report/selection_sizes_k{k}_d{d}.png",
            caption="../workflow/report/selection_sizes.rst",
            category="{exp}",
            labels={"result": "selection sizes, n_s = {k} (Chen Fig. 5)"},
        ),
        pdf="results/{exp}/report/selection_sizes_k{k}_d{d}.pdf",
        csv="results/{exp}/report/selection_sizes_k{k}_d{d}.csv",
    log:
        "results/logs/selection_sizes/{exp}/k{k}_d{d}.log",
    conda:
        ENV
    shell:
        "poisoncert selection-sizes --partitions {input.partitions:q} --scores {input.scores:q} "
        "--title '{wildcards.exp}, n_s = {wildcards.k} (Chen et al. Fig. 5)' "
        "--out-png {output.png:q} --out-pdf {output.pdf:q} --out-csv {output.csv:q} > {log:q} 2>&1"


rule running_time:
    """Jia et al. Fig. 3(c): running time of training and certification, summed from the jobs' benchmark files."""
    input:
        summaries=experiment_summaries,
        benchmarks=experiment_benchmarks,
    output:
        png=report(
            "results/{exp}/report/running_time.png",
            caption="../workflow/report/running_time.rst",
            category="{exp}",
            labels={"result": "running time (Jia Fig. 3c)"},
        ),
        pdf="results/{exp}/report/running_time.pdf",
        csv="results/{exp}/report/running_time.csv",
    log:
        "results/logs/running_time/{exp}.log",
    conda:
        ENV
    shell:
        "poisoncert running-time {input.summaries:q} --benchmarks {input.benchmarks:q} "
        "--title '{wildcards.exp}: running time (Jia et al. Fig. 3c)' "
        "--out-png {output.png:q} --out-pdf {output.pdf:q} --out-csv {output.csv:q} > {log:q} 2>&1"


rule roe_methods:
    """ROE Figs. 2-3: DPA, DPA+ROE, FA, FA+ROE, DPA*, DPA*+ROE at one k on one dataset, and their improvement over DPA."""
    input:
        roe_methods_summaries,
    output:
        png=report(
            "results/compare/{dataset}/roe_methods_k{k}.png",
            caption="../workflow/report/roe_methods.rst",
            category="comparison",
            subcategory="{dataset}",
            labels={"result": "six methods, k = {k} (ROE Figs. 2-3)"},
        ),
        pdf="results/compare/{dataset}/roe_methods_k{k}.pdf",
    log:
        "results/logs/roe_methods/{dataset}_k{k}.log",
    conda:
        ENV
    shell:
        "poisoncert roe-methods {input:q} --k {wildcards.k} --title '{wildcards.dataset}, k = {wildcards.k} (ROE Figs. 2-3)' "
        "--out-png {output.png:q} --out-pdf {output.pdf:q} > {log:q} 2>&1"
