# Everything a fresh clone needs: `make demo` (set up and run the demo) or `make test`.
#
# `make test` (what CI runs) installs the newest releases pyproject.toml allows, as a user's
# `pip install` would today, then lints, runs the suite and installs the package a second
# time exactly as a user does (`pip install .`, no extras) to run every command end to end.
# `make dev` installs the pinned versions of requirements-dev.lock instead (reproducible
# development); `make lock` refreshes that file to today's newest releases.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-dev.lock

.PHONY: demo test lint user-check install dev lock clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/funnelsim demo

test: $(STAMP) lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q
	PYTHON=$(PYTHON) bash .ci/user_install.sh

lint: $(STAMP)
	$(BIN)/ruff check .

user-check:
	PYTHON=$(PYTHON) bash .ci/user_install.sh

dev:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.12 --upgrade --quiet \
		--custom-compile-command "make lock" -o $(LOCK)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_simulate.py
