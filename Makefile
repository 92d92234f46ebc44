# The two commands of the README:
#   make run    install poisoncert and its dependencies, then run the default workflow (digits, CPU)
#   make test   install poisoncert with its test dependencies, then run the test suite
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check
FASHION_MNIST = /usr/share/datasets/fashion-mnist

.PHONY: install data browser run test test-fast bench

install: data
	$(PIP_INSTALL) -e '.[dev,slurm,art]'

# Real, full-size data for every machine: Debian's dataset-fashion-mnist (30 MB, 60,000/10,000 images).
# Installed when this runs as root with apt-get; otherwise the line says how.
data:
	@if [ -d $(FASHION_MNIST) ]; then \
	  echo "Fashion-MNIST: $(FASHION_MNIST) (Debian's dataset-fashion-mnist)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's dataset-fashion-mnist (real Fashion-MNIST, 30 MB) for dataset fashion_mnist"; \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; \
	else \
	  echo "note: dataset fashion_mnist needs Debian's package: sudo apt-get install dataset-fashion-mnist"; \
	fi

# Debian's chromium, headless, for the test that opens the Snakemake HTML report in a real browser
# (tests/test_report_browser.py). Installed when this runs as root with apt-get; otherwise the line says how.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium: $$(command -v chromium) (the report's browser test)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium (headless browser for the report's browser test)"; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null; }; \
	else \
	  echo "note: the report's browser test needs Debian's chromium: sudo apt-get install chromium"; \
	fi

run: install
	$(PYTHON) -m snakemake --cores all

test: install browser
	$(PYTHON) -m pytest

test-fast: install
	$(PYTHON) -m pytest -m "not slow and not slurm"

bench: install
	$(PYTHON) benchmarks/run_all.py
