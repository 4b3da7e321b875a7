# The two commands the README opens with:
#   make demo   set up (virtualenv, torch 2.13.0 CPU first, medseg) and run the main job on the sample
#   make test   set up and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medseg-installed
RESULTS ?= results/demo

.PHONY: demo test venv bench clean-venv sample

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: otherwise pip resolves the newest CUDA build (several GB).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e ".[dev,napari,dask]"
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh "$(BIN)" "$(RESULTS)"

test: $(STAMP)
	bash scripts/ensure_display_deps.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests

sample: $(STAMP)
	$(BIN)/python -m medseg.phantom sample_data --replace

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
