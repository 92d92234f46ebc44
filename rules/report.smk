localrules:
    report,


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
