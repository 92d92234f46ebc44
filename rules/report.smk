localrules:
    report,
    compare,
    paper_table,


rule report:
    """Certified-accuracy table (DPA Table 1 columns) and figure for one experiment."""
    input:
        lambda wc: certificate_summaries(wc.exp),
    output:
        csv="results/{exp}/report/table.csv",
        md="results/{exp}/report/table.md",
        png=report(
            "results/{exp}/report/certified_accuracy.png",
            caption="../workflow/report/certified_accuracy.rst",
            category="{exp}",
        ),
        pdf="results/{exp}/report/certified_accuracy.pdf",
    log:
        "results/logs/report/{exp}.log",
    params:
        radii=radii_arg(),
        title=lambda wc: f"{wc.exp} ({experiment(wc)['dataset']}, {experiment(wc)['scheme']})",
    shell:
        "{PYTHON} -m poisoncert report {input} --radii {params.radii} --title '{params.title}' "
        "--out-csv {output.csv} --out-md {output.md} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule compare:
    """All methods run on one dataset side by side: one table, one figure with a panel per unit."""
    input:
        lambda wc: [f for name in experiments_on(wc.dataset) for f in certificate_summaries(name)],
    output:
        csv="results/compare/{dataset}/table.csv",
        md="results/compare/{dataset}/table.md",
        png=report(
            "results/compare/{dataset}/certified_accuracy.png",
            caption="../workflow/report/compare.rst",
            category="comparison",
        ),
        pdf="results/compare/{dataset}/certified_accuracy.pdf",
    log:
        "results/logs/compare/{dataset}.log",
    params:
        radii=radii_arg(),
    shell:
        "{PYTHON} -m poisoncert report {input} --radii {params.radii} --title 'all methods on {wildcards.dataset}' "
        "--out-csv {output.csv} --out-md {output.md} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


rule paper_table:
    """A paper's published table beside this run's numbers, cell by cell ("not yet run" where we have none)."""
    input:
        summaries=lambda wc: [f for name in config["experiments"] for f in certificate_summaries(name)],
        published=os.path.join(workflow.basedir, "workflow", "paper_results", "{table}.csv"),
    output:
        csv="results/paper_tables/{table}.csv",
        md=report("results/paper_tables/{table}.md", caption="../workflow/report/paper_table.rst", category="paper tables"),
    log:
        "results/logs/paper_table/{table}.log",
    shell:
        "{PYTHON} -m poisoncert paper-table {wildcards.table} {input.summaries} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
