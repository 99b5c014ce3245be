# Setup and the two jobs a newcomer runs:
#   make sweep   the headline sweep on the embedded digits (tvae-sweep launch search_spaces/capsules.yaml)
#   make test    the test suite
# Both create .venv with the pinned versions of constraints.txt first (about 2 minutes, once).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup sweep smoke test test-fast lint benchmark gpu-kit clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

sweep: setup
	$(BIN)/tvae-sweep launch search_spaces/capsules.yaml

smoke: setup
	$(BIN)/tvae-sweep launch search_spaces/smoke.yaml --overwrite

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# the tests that start no Ray cluster and no sweep: under a minute, for iteration
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# ruff's rules and no function graded D or worse by radon (CONTRIBUTING.md)
lint: setup
	$(BIN)/ruff check .
	@complex="$$($(BIN)/radon cc -s -n D tvae_sweep benchmarks tests results)"; \
	if [ -n "$$complex" ]; then echo "radon: functions graded D or worse:"; echo "$$complex"; exit 1; fi

benchmark: setup
	$(BIN)/python -m benchmarks.bench_core
	$(BIN)/python -m benchmarks.bench_sweep

# what a lent GPU machine needs for benchmarks/gpu_session.sh, into .gpu/ (benchmarks/README.md)
gpu-kit: setup
	$(BIN)/python -m benchmarks.gpu_kit prepare

clean:
	rm -rf $(VENV) .pytest_cache
