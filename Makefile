# The two commands of the README:
#   make run    install poisoncert and its dependencies, then run the default workflow (digits, CPU)
#   make test   install poisoncert with its test dependencies, then run the test suite
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install run test bench

install:
	$(PIP_INSTALL) -e '.[dev,slurm]'

run: install
	$(PYTHON) -m snakemake --cores all

test: install
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) benchmarks/run_all.py
