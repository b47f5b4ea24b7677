# querylog: the README's two commands. Each bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000
DEMO   ?= 200

.PHONY: run test lint typecheck unit bench clean help

help:
	@echo "make run    - set up .venv, start the chat API on 127.0.0.1:8000 with 200 demo queries (PORT=8010 for another port, DEMO=0 for no demo)"
	@echo "make test   - set up .venv, run ruff, mypy and pytest on every core, at most 4 (installs Prometheus, Chromium and wrk when apt allows)"
	@echo "make bench  - run the benchmarks (querylog bench)"

$(STAMP): pyproject.toml
	@echo "querylog: installing into $(VENV) (once, or when pyproject.toml changes: about a minute) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

# Exit 3 from serve: the port is taken (another make run, or any server); say how to pick another.
run: $(STAMP)
	$(BIN)/querylog serve --host 127.0.0.1 --port $(PORT) --demo $(DEMO) || { rc=$$?; \
	  [ $$rc -ne 3 ] || { free=$$($(BIN)/python -c \
	    'from querylog.commands import next_free_port as f; print(f("127.0.0.1", $(PORT)) or "<another>")'); \
	    echo "querylog: port $(PORT) is taken: make run PORT=$$free serves on another" >&2; }; exit $$rc; }

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: $(STAMP)
	@bash scripts/ensure-prometheus.sh || true
	@sh scripts/ensure-chromium.sh || true
	@sh scripts/ensure-wrk.sh || true
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(BIN)/querylog bench

clean:
	rm -rf $(VENV) .querylog .mypy_cache .ruff_cache .pytest_cache build *.egg-info
