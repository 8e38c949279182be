# The two commands of the README. Both set up .venv on first use.
#   make reproduce   runs `alignlab reproduce --preset quick` into runs/reproduce/
#   make test        runs the test suite
# TORCH picks the torch build; the default is the CPU build this project's machines carry.
# Elsewhere, e.g.: make test TORCH="torch>=2.1"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= test,ray,hf,llm,mujoco,t2i,lang
PY := $(VENV)/bin/python

.PHONY: setup reproduce test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

reproduce: setup
	$(VENV)/bin/alignlab reproduce --preset quick --out runs/reproduce

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: setup
	$(PY) benchmarks/drmdp_solvers.py
