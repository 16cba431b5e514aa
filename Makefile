# scmulan developer and user commands. `make demo` and `make test` set everything up on a fresh clone.
#
# torch is always installed pinned: an unpinned torch pulls a multi-GB CUDA build on machines that only have the
# CPU wheel. GPU users: `make demo TORCH_INDEX=https://download.pytorch.org/whl/cu126` (any index pip understands).
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
TORCH_PIP_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple,)

.PHONY: demo test lint-imports docs lint benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# One stamp per extra: the demo needs the package only, tests add the `test` extra, docs the `doc` extra.
$(VENV)/.stamp-base: pyproject.toml | $(BIN)/python
	$(PIP) install $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)"
	$(PIP) install "torch==$(TORCH_VERSION)" -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install "torch==$(TORCH_VERSION)" -e ".[test]"
	touch $@

$(VENV)/.stamp-doc: $(VENV)/.stamp-test
	$(PIP) install "torch==$(TORCH_VERSION)" -e ".[test,doc]"
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base
	$(PIP) install "torch==$(TORCH_VERSION)" -e ".[dev]"
	touch $@

## demo: train a small model on PBMCs, annotate held-out cells, embed, plot and generate (offline, CPU)
demo: $(VENV)/.stamp-base
	$(BIN)/python -m scmulan.demo --outdir scmulan_demo_output

## test: run the test suite
test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint-imports: check the package layers of docs/architecture.md ([tool.importlinter] in pyproject.toml)
lint-imports: $(VENV)/.stamp-test
	$(BIN)/lint-imports --no-cache

## docs: build the documentation site (tutorials executed) with warnings as errors; the executed tutorials are
## stored in docs/tutorials/_executed/ (what Read the Docs publishes): commit them
docs: $(VENV)/.stamp-doc
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

## benchmarks: run every benchmark script with its CPU defaults, one after the other (hours on 2 cores; see
## benchmarks/README.md for each command on its own and the GPU settings)
benchmarks: $(VENV)/.stamp-test
	$(BIN)/python benchmarks/sentence_throughput.py
	$(BIN)/python benchmarks/annotation_throughput.py --preset tiny small --n-cells 256 --threads 1
	$(BIN)/python benchmarks/training_throughput.py --threads 1 --steps 10
	$(BIN)/python benchmarks/learning.py --only atlas --marker-strength 2 --epochs 20
	$(BIN)/python benchmarks/learning.py --only pbmc
	PYTHON=$(BIN)/python bash benchmarks/run_compare.sh --seeds 0 1 2 3 4

clean:
	rm -rf $(VENV) docs/_build docs/generated scmulan_demo_output
