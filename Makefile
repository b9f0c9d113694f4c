# tidings: set-up, run, test, benchmark. `make install && make run`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Running from a checkout is development: built-in secrets and the demo ticket
# endpoint. Set TIDINGS_DEV=0 and the secrets for anything else.
export TIDINGS_DEV ?= 1

.PHONY: install run run-router run-worker test lint bench soak clean

install: $(BIN)/tidings web/node_modules

$(BIN)/tidings: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# crossbar's dependencies need a recent pip to resolve.
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

web/node_modules: web/package.json
	cd web && npm install --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/tidings run

run-router: install
	$(BIN)/tidings router

run-worker: install
	$(BIN)/tidings worker

test: lint
	$(BIN)/pytest -m "not soak" $(PYTEST_ARGS)

# Style, types, and the layers of the code (pyproject.toml [tool.importlinter]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: install
	$(BIN)/pytest -m soak $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) web/node_modules .pytest_cache bench/results.json bench/results.png
