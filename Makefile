# LoRKD Studio. `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test demo bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned in the same pip command as everything else (CPU build from the local wheel).
	$(BIN)/pip install --disable-pip-version-check -q "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/lorkd-studio

demo: setup
	$(BIN)/lorkd demo

test: setup
	$(BIN)/lint-imports
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

bench: setup
	$(BIN)/lorkd bench
	$(BIN)/python -m benchmarks.ddp
	$(BIN)/python -m benchmarks.compiled

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
