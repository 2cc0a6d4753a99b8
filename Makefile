# The two commands of the README. Each sets up the venv first (seconds when it is current).
VENV ?= .venv
PY := $(VENV)/bin/python
export SLIMDET_VENV := $(abspath $(VENV))

.PHONY: setup demo test bench clean-venv

setup:
	bash scripts/setup_env.sh

# `make demo DEMO_ARGS=--overwrite` runs it again into the same folder (--resume continues it).
DEMO_ARGS ?=
demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q -x tests

bench: setup
	$(PY) benchmarks/step_cost.py

clean-venv:
	rm -rf $(VENV)
