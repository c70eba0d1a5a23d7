# The Makefile only calls commands; the logic lives in Python.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.echobench-installed

.PHONY: go-build test test-fast bench bench-ab bench-ab-check bench-pythons bench-overload bench-full bench-conns bench-tls bench-ci bench-compare bench-gate-check bench-cost bench-cost-compare bench-pytest bench-loadgen report venv clean

venv: $(STAMP)

# (Re)install when pyproject.toml changes; reuse the venv otherwise.
$(STAMP): pyproject.toml setup.py loadgen/engine/_native.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,models,cluster]'
	touch $(STAMP)

# The Go reference server (build/echo-go), when a Go toolchain is present; otherwise the go models are skipped.
go-build: $(STAMP)
	@if command -v go >/dev/null 2>&1; then $(PY) -c 'from servers.gomodel import build; build()'; \
	 else echo "make: no Go toolchain (Debian's golang-go): the go models will be listed as unavailable and skipped" >&2; fi

test: $(STAMP) go-build
	$(PY) -m ruff check servers loadgen tests
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff and the pure tests only (tests/unit: no process, no socket, no server), for the edit-and-test loop; make test
# (and CI) still runs everything, these included.
test-fast: $(STAMP)
	$(PY) -m ruff check servers loadgen tests
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Every model over the default matrix (loadgen/suite/matrices/default.toml): results/<stamp>-<sha>/, results/latest.
bench: $(STAMP) go-build
	$(PY) -m loadgen.suite.bench --matrix default $(BENCH_ARGS)

bench-full: $(STAMP) go-build
	$(PY) -m loadgen.suite.bench --matrix full $(BENCH_ARGS)

# Connection scale only (loadgen/suite/matrices/connections.toml): memory per idle connection, connects/s, limits.
bench-conns: $(STAMP) go-build
	$(PY) -m loadgen.suite.bench --matrix connections $(BENCH_ARGS)

# TLS 1.3 against plain TCP per model that serves TLS (loadgen/suite/matrices/tls.toml): the server's CPU per message each.
bench-tls: $(STAMP) go-build
	$(PY) -m loadgen.suite.bench --matrix tls $(BENCH_ARGS)

# The regression gate: the change beside its base, measured in the same job (loadgen/suite/ab.py). The base's
# servers run from a temporary git worktree of BASE on this interpreter; cost (instructions per message) and paired
# wall-clock rounds per model; results/<stamp>-ab/ab.md, results/latest-ab. Exit 1 on a regression.
#   make bench-ab BASE=origin/main        AB_ARGS="--models uvloop-protocol --only wall --rounds 30"
BASE ?= HEAD
bench-ab: $(STAMP) go-build
	$(PY) -m loadgen ab --base $(BASE) $(AB_ARGS)

# The same models under several Pythons or package versions, side by side in one job (loadgen/suite/pythons.py):
# instructions per message and paired wall-clock rounds per variant, ratios to the newest interpreter; each
# variant's servers from its own cached environment (.variants/). results/<stamp>-pythons/, results/latest-pythons.
#   make bench-pythons                                        every CPython 3.10 or newer found (PATH, pyenv)
#   make bench-pythons VARIANTS="3.13 3.13+uvloop==0.19.0 3.13+uvloop==0.21.0"     which uvloop release?
bench-pythons: $(STAMP)
	$(PY) -m loadgen pythons $(if $(VARIANTS),--variants "$(VARIANTS)") $(PYTHONS_ARGS)

# Overload and recovery (loadgen/suite/overload.py): per model, its capacity at p99 <= 1 ms, then a profile that
# holds 0.5x, spikes to 2x and 4x and returns to 0.5x; latency peak, backlog, time to recover, memory, per model.
# results/<stamp>-overload/ (overload.md, timelines/), results/latest-overload.
bench-overload: $(STAMP) go-build
	$(PY) -m loadgen overload $(OVERLOAD_ARGS)

# bench-ab's wall-clock verdicts end to end (tests/benchmarks/test_ab_gate.py): A/A runs stay quiet and a known
# extra cost on one side is caught. Asserts what timings conclude, so a benchmark, not a test (~40 min here).
bench-ab-check: $(STAMP) go-build
	$(PY) -m pytest tests/benchmarks/test_ab_gate.py -s $(PYTEST_ARGS)

# History, not the gate: a short suite compared with the committed baseline, measured on another day and
# machine (compare refuses a different Python build or host unless --allow-env-mismatch).
# A short suite with enough trials for statistics (loadgen/suite/matrices/ci.toml), then the gate:
# compare it with the committed baseline; exit 1 on a regression. Report: results/compare.md
BASELINE ?= results/baseline
bench-ci: $(STAMP) go-build
	$(PY) -m loadgen.suite.bench --matrix ci $(BENCH_ARGS)

bench-compare: bench-ci
	$(PY) -m loadgen.suite.compare $(BASELINE) results/latest --md results/compare.md --json results/compare.json $(COMPARE_ARGS); \
	  rc=$$?; cat results/compare.md; exit $$rc

# User-space instructions per message for every Python model, under callgrind (loadgen/suite/cost.py): repeatable to
# well under 0.1%. Writes results/<stamp>-<sha>/cost.json and cost.md; results/latest points at it.
bench-cost: $(STAMP)
	$(PY) -m loadgen.suite.cost $(COST_ARGS)

# The cost gate: bench-cost, then compare with the committed baseline (results/baseline/cost.json); exit 1 when
# a model's count rose more than 1% (COMPARE_ARGS="--threshold 0.005" to tighten). Report: results/cost-compare.md
bench-cost-compare: bench-cost
	$(PY) -m loadgen.suite.compare $(BASELINE)/cost.json results/latest --md results/cost-compare.md --json results/cost-compare.json $(COMPARE_ARGS); \
	  rc=$$?; cat results/cost-compare.md; exit $$rc

# The wall-clock gate end to end on this machine (an injected server cost must be flagged): it asserts ratios
# of timings, so it is a benchmark, not part of make test. Run it on a quiet machine.
bench-gate-check: $(STAMP) go-build
	$(PY) -m pytest tests/benchmarks/test_gate_wallclock.py $(PYTEST_ARGS)

# Micro-benchmarks of the hot paths (pytest-benchmark); not part of make test.
bench-pytest: $(STAMP)
	$(PY) -m pytest tests/benchmarks --benchmark-only $(PYTEST_ARGS)

# Regenerate plots and reports of a run from its JSON: make report RUN=results/latest
RUN ?= results/latest
report: $(STAMP)
	$(PY) -m loadgen.suite.report $(RUN)

# Load generator vs the C reference client, side by side (builds build/echo_client with cc): paired rounds
# against one running server per model, judged on the confidence interval of the median over rounds.
# CALIBRATE_ARGS="--trials 3" gives interleaved trials against a fresh server each instead.
bench-loadgen: $(STAMP)
	$(PY) -m loadgen.suite.calibrate $(CALIBRATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build
