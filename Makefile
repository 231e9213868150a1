# sessionhub — `make run` starts a server on SQLite; `make test` installs the dev extras and
# runs the suite. Both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test test-slow check format bench clean cluster cluster-stop

$(BIN)/python:
	@echo "creating the virtualenv in $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "installing sessionhub and its dependencies into $(VENV) (the first time: about a minute) ..."
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo "installing sessionhub with its test tools into $(VENV) (the first time: a minute or two) ..."
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

# Node test tools (the official centrifuge JS SDK); skipped where Node/npm are absent.
node_modules/.installed: package.json
	@if command -v npm >/dev/null 2>&1; then npm install --no-audit --no-fund --silent && touch $@; \
	else echo "npm not found: the Node SDK tests will be skipped"; fi

run: $(VENV)/.installed
	$(BIN)/sessionhub migrate
	$(BIN)/sessionhub serve --port $(PORT)

# The default suite: fast (under two minutes on two cores), one worker per core. Slower
# suites are marked, and run one test at a time (they measure latency under load).
test: $(VENV)/.installed-dev node_modules/.installed
	$(BIN)/python -m pytest -q -m "not slow" -n auto

# Real server processes, browsers, clusters and longer scenarios (CI runs these too).
test-slow: $(VENV)/.installed-dev node_modules/.installed
	$(BIN)/python -m pytest -q -m slow

check: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(VENV)/.installed-dev node_modules/.installed
	$(BIN)/python bench/rest.py
	$(BIN)/python bench/fanout.py

# Three local nodes behind nginx on PostgreSQL and Redis (docs/cluster.md): the machine's
# services by default, or SESSIONHUB_DATABASE_URL / SESSIONHUB_BROKER_URL. Needs nginx.
$(VENV)/.installed-cluster: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[postgres,redis]'
	touch $@

cluster: $(VENV)/.installed-cluster
	deploy/cluster.sh start

cluster-stop:
	deploy/cluster.sh stop

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
