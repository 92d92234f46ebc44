rule collective:
    """Collective certificate of one ensemble: predictions one poisoned training set can change at once."""
    input:
        rules.aggregate.output[0],
    output:
        csv="results/{exp}/k{k}_d{d}/collective/{cert}.csv",
        json="results/{exp}/k{k}_d{d}/collective/{cert}.json",
        png=report(
            "results/{exp}/k{k}_d{d}/collective/{cert}.png",
            caption="../workflow/report/collective.rst",
            category="{exp}",
            labels={"result": "collective {cert}, k={k} d={d} (figure)"},
        ),
        pdf="results/{exp}/k{k}_d{d}/collective/{cert}.pdf",
        html=report(
            "results/{exp}/k{k}_d{d}/collective/{cert}.html",
            caption="../workflow/report/collective_table.rst",
            category="{exp}",
            labels={"result": "collective {cert}, k={k} d={d} (table)"},
        ),
    log:
        "results/logs/collective/{exp}/k{k}_d{d}/{cert}.log",
    benchmark:
        "results/benchmarks/collective/{exp}/k{k}_d{d}/{cert}.tsv"
    conda:
        ENV
    params:
        budgets=collective_budgets,
        mode=collective_setting("mode"),
        time_limit=collective_setting("time_limit"),
        block_size=collective_setting("block_size"),
        title=collective_title,
    shell:
        "poisoncert collective {input:q} --certificate {wildcards.cert} --budgets {params.budgets:q} --mode {params.mode:q} "
        "--time-limit {params.time_limit:q} --block-size {params.block_size:q} --title {params.title:q} --out-csv {output.csv:q} "
        "--out-json {output.json:q} --out-png {output.png:q} --out-pdf {output.pdf:q} --out-html {output.html:q} > {log:q} 2>&1"
