# LoRKD Studio. `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test demo bench gpu-check lint clean

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

# everything that needs a CUDA GPU, within 8 minutes on one (a one-line note and exit 0 without one);
# results in $(OUT) (default runs/gpu-check): gpu_check.json and gpu_check.md
gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check $(if $(OUT),--out $(OUT),)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
