localrules:
    report,
    compare,
    paper_table,
    improvement,
    delta_figure,


rule report:
    """Certified-accuracy table (DPA Table 1 columns) and figure for one experiment."""
    input:
        experiment_summaries,
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
        "poisoncert report {input:q} --radii {params.radii} --title {params.title:q} "
        "--out-csv {output.csv:q} --out-md {output.md:q} --out-html {output.html:q} --out-png {output.png:q} --out-pdf {output.pdf:q} > {log:q} 2>&1"


rule compare:
    """All methods run on one dataset side by side: one table, one figure with a panel per unit."""
    input:
        dataset_summaries,
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
        "poisoncert report {input:q} --radii {params.radii} --title 'all methods on {wildcards.dataset}' "
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
