# One command each: `make dev` runs the whole stack, `make test` installs and checks everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test lint typecheck unit install clean bench model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/media-api dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# Rebuild workers/models/efficientnet_lite0.onnx in a venv of its own (torch stays out of
# .venv) and check it is bit-for-bit the committed file.
model:
	$(PYTHON) -m venv .venv-export
	.venv-export/bin/pip install --quiet -r scripts/requirements-export.txt
	.venv-export/bin/python scripts/export_model.py

clean:
	rm -rf $(VENV) .media-data .pytest_cache .mypy_cache .ruff_cache
