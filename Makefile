# The two commands of the README. Both set up .venv and .venv-mw on first use.
#   make reproduce   runs `alignlab reproduce --preset quick` into runs/reproduce/
#   make test        runs the test suite
# TORCH picks the torch build; the default is the CPU build this project's machines carry.
# Elsewhere, e.g.: make test TORCH="torch>=2.1"
# Meta-World (langfeedback's button-press pools) pins mujoco 3.3.0, while .venv holds MuJoCo 4
# (copac), so it gets a venv of its own, MW_VENV; reproduce and test point
# ALIGNLAB_METAWORLD_PYTHON at its python.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= test,ray,hf,llm,mujoco,t2i,lang
PY := $(VENV)/bin/python
MW_VENV ?= .venv-mw
MW_PY := $(abspath $(MW_VENV))/bin/python

.PHONY: setup reproduce test lint bench

setup: $(VENV)/.installed $(MW_VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# the pins of pyproject.toml's [metaworld] extra (packaging: gymnasium's MuJoCo envs import it)
$(MW_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(MW_VENV)
	$(MW_VENV)/bin/pip install --quiet metaworld==3.1.1 packaging
	touch $@

reproduce: setup
	ALIGNLAB_METAWORLD_PYTHON=$(MW_PY) $(VENV)/bin/alignlab reproduce --preset quick --out runs/reproduce

test: setup
	ALIGNLAB_METAWORLD_PYTHON=$(MW_PY) $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: setup
	$(PY) benchmarks/drmdp_solvers.py
