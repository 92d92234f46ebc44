# poisoncert: certified defenses against data poisoning by aggregation.
#   snakemake --cores all                         # the default experiment (config.yaml)
#   snakemake --cores all --configfile config/<paper>.yaml
#   snakemake --profile profiles/slurm            # on a SLURM cluster
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default experiment; a --configfile on the command line replaces it (not merged).
if not workflow.overwrite_configfiles:
    # a syntax error: one line with file, line and column (without poisoncert installed,
    # rules/common.smk stops with one line saying how to install it)
    try:
        from poisoncert.config import check_yaml_or_exit
    except ImportError:
        pass
    else:
        check_yaml_or_exit("config.yaml")

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/kmeans.smk"
include: "rules/certify.smk"
include: "rules/collective.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
        collective_targets(),
