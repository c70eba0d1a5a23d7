# The Makefile only calls commands; the logic lives in Python.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.echobench-installed

.PHONY: test bench bench-loadgen venv clean

venv: $(STAMP)

# (Re)install when pyproject.toml changes; reuse the venv otherwise.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	@echo "make bench: the benchmark matrix is not built yet (issue 4); nothing was measured." >&2
	@exit 1

# Load generator vs the C reference client, side by side (builds build/echo_client with cc).
bench-loadgen: $(STAMP)
	$(PY) -m loadgen.calibrate $(CALIBRATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build
