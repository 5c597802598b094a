# One venv per checkout; `make test` and `make demo` set it up from scratch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.e2lmc-installed
# CPU build where it is on disk or the default index serves CPU; override for CUDA images.
TORCH_SPEC ?= torch==2.13.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: install test test-fast test-profiles demo bundle benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest

test-fast: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -m "not slow and not docker"

# Only the tests that run under every platform profile (root, user, worker; tests/profiles.py)
test-profiles: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -m profiles

demo: $(STAMP)
	$(OFFLINE) $(BIN)/e2lmc demo

# QUEUE=<your GPU queue's vhost> (bundle check refuses competition.yaml's placeholder)
bundle: $(STAMP)
	$(BIN)/e2lmc bundle build --output dist/e2lmc_bundle.zip $(if $(QUEUE),--queue $(QUEUE))

benchmark: $(STAMP)
	$(OFFLINE) $(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache
