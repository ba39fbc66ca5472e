# One command each: `make dev` runs the whole stack, `make test` installs and checks everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The browser tests drive Debian's Chromium (Playwright downloads no browser of its own).
CHROMIUM ?= /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: dev test lint typecheck unit install clean bench model browser pins

# Runtime dependencies at the versions the image pins (docker/requirements.txt), so the tests
# run against exactly what ships; dev and local tools take their newest allowed versions.
PINS   := docker/requirements.txt

$(STAMP): pyproject.toml $(PINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c $(PINS) pip setuptools
	$(BIN)/pip install --quiet -c $(PINS) -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

browser: $(CHROMIUM)

dev: $(STAMP)
	$(BIN)/media-api dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck browser
	$(BIN)/pytest

# docker/requirements.txt, the exact versions the image installs, from those in $(VENV) (the
# ones the tests ran against): after changing a dependency there, and a green `make test`.
pins: $(STAMP)
	$(BIN)/python scripts/pin_requirements.py

# Rebuild media_api/imaging/models/efficientnet_lite0.onnx in a venv of its own (torch stays
# out of .venv) and open_nsfw.int8.onnx in .venv; check both are bit-for-bit the committed files.
model: $(STAMP)
	$(PYTHON) -m venv .venv-export
	.venv-export/bin/pip install --quiet -r scripts/requirements-export.txt
	.venv-export/bin/python scripts/export_model.py
	# The int8 NSFW model: calibrated through the tagger's own preprocessing, so in .venv.
	$(BIN)/pip install --quiet onnx==1.23.2
	$(BIN)/python scripts/quantize_models.py

clean:
	rm -rf $(VENV) .media-data .pytest_cache .mypy_cache .ruff_cache
