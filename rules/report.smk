localrules:
    report,
    compare,
    paper_table,


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


# One rule per figure record (poisoncert.figures.FIGURES): its inputs by role, its outputs by
# format (the first shown in `snakemake --report`), one `poisoncert figure` command.
for _figure in FIGURES.values():

    rule:
        name:
            _figure.name
        input:
            unpack(figure_inputs(_figure)),
        output:
            **figure_outputs(_figure),
        log:
            _figure.log,
        localrule: True
        conda:
            ENV
        params:
            args=figure_args(_figure),
        shell:
            "poisoncert figure {params.args} > {log:q} 2>&1"
