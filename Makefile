# Two commands do all the set-up: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test check lint typecheck pytest install clean browser bench bench-quick soak

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "job-ledger needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ledger serve

# The whole flow in one command: service, receiver, tenant, endpoint, jobs, webhooks, console.
demo: $(STAMP)
	$(BIN)/ledger demo

test: check pytest

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The console's browser tests drive Debian's chromium (never a Playwright-downloaded browser).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the console's browser tests"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "could not install chromium: the browser tests skip (they fail under CI=true)"; \
	fi

# Two workers: see tests/conftest.py (the multi-process tests still run one at a time).
pytest: $(STAMP) browser
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): figures beside their baselines, docs/performance.md.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	command -v wrk >/dev/null || apt-get install -y --no-install-recommends wrk \
		|| (apt-get update -q && apt-get install -y --no-install-recommends wrk) \
		|| echo "wrk could not be installed: the bench's HTTP load comes from aiohttp instead"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

# Reliability soak (not part of `make test`): tests/reliability at full size, unattended, under
# an hour on 2 cores; then docs/reliability.md is rewritten from the recorded figures and
# outcomes, also when a test failed (the page says which), and the make exit status is pytest's.
soak: $(STAMP)
	LEDGER_RELIABILITY=full $(BIN)/pytest tests/reliability -p no:cacheprovider $(PYTEST_ARGS); \
	status=$$?; $(BIN)/python -m tests.reliability.report; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
