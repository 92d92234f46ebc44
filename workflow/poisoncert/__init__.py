"""poisoncert: certified defenses against training-data poisoning by aggregation.

The maths lives in :mod:`poisoncert.certify` (pure numpy, no I/O); data preparation,
partitioning, training, aggregation and reporting live in the sibling modules and are driven
by the Snakemake workflow through ``python -m poisoncert <verb>``.
"""

__version__ = "0.1.0"
