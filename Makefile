# The Makefile only calls commands; the logic lives in Python.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.echobench-installed

.PHONY: test bench bench-full bench-ci bench-compare bench-pytest bench-loadgen report venv clean

venv: $(STAMP)

# (Re)install when pyproject.toml changes; reuse the venv otherwise.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check servers loadgen tests
	$(PY) -m pytest $(PYTEST_ARGS)

# Every model over the default matrix (loadgen/matrices/default.toml): results/<stamp>-<sha>/, results/latest.
bench: $(STAMP)
	$(PY) -m loadgen.bench --matrix default $(BENCH_ARGS)

bench-full: $(STAMP)
	$(PY) -m loadgen.bench --matrix full $(BENCH_ARGS)

# A short suite with enough trials for statistics (loadgen/matrices/ci.toml), then the gate:
# compare it with the committed baseline; exit 1 on a regression. Report: results/compare.md
BASELINE ?= results/baseline
bench-ci: $(STAMP)
	$(PY) -m loadgen.bench --matrix ci $(BENCH_ARGS)

bench-compare: bench-ci
	$(PY) -m loadgen.compare $(BASELINE) results/latest --md results/compare.md --json results/compare.json $(COMPARE_ARGS); \
	  rc=$$?; cat results/compare.md; exit $$rc

# Micro-benchmarks of the hot paths (pytest-benchmark); not part of make test.
bench-pytest: $(STAMP)
	$(PY) -m pytest tests/benchmarks --benchmark-only $(PYTEST_ARGS)

# Regenerate plots and reports of a run from its JSON: make report RUN=results/latest
RUN ?= results/latest
report: $(STAMP)
	$(PY) -m loadgen.report $(RUN)

# Load generator vs the C reference client, side by side (builds build/echo_client with cc).
bench-loadgen: $(STAMP)
	$(PY) -m loadgen.calibrate $(CALIBRATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build
