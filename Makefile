# The two Quickstart commands: `make run` (the main job) and `make test` (the suite).
# Both set everything up on a fresh machine: .venv, the project with its dev extras, and
# Debian's Fashion-MNIST package.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := False
export DISABLE_PANDERA_IMPORT_WARNING := True

.PHONY: setup run test smoke benchmark
setup: $(VENV)/.installed $(FASHION_MNIST)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV) || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq python3-venv && python3 -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

run: setup
	dvc repro

# Two parts: the unit tests on two workers (torch runs one thread in each), then the `serial`
# ones alone (tests/conftest.py marks them): pipelines, several processes, real timings.
test: setup
	$(PY) -m pytest -q --durations=10 -n 2 --dist loadfile -m "not serial"
	$(PY) -m pytest -q --durations=15 -m serial

benchmark: setup
	ofa-cli benchmark
