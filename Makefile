# The two commands of the README: `make demo` and `make test`. Both set up what
# they need first (a virtual environment in .venv with the package and its
# dependencies), so they work on a fresh machine.

VENV ?= .venv
PYTHON ?= python3
# A CPU machine gets torch from the local wheel / PyPI; on a GPU machine PyPI's
# Linux wheel is the CUDA build. Override e.g. TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
CORES ?= 2
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[all,test]"
	touch $@

demo: setup
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --report results/report.html
	@echo "Report: $(CURDIR)/results/report.html"

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/snakemake --lint

clean:
	rm -rf results resources .snakemake
