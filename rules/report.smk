localrules:
    report,
    compare,


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
