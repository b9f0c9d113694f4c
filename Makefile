# tidings: set-up, run, test, benchmark. `make install && make run`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lock run run-router run-worker test lint bench bench-instructions soak clean

NODE_EXAMPLES := docs/examples/node

install: $(BIN)/tidings web/node_modules $(NODE_EXAMPLES)/node_modules

# The exact versions tested (requirements.lock), then tidings itself on top.
$(BIN)/tidings: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# crossbar's dependencies need a recent pip to resolve.
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Refresh requirements.lock from the ranges in pyproject.toml (newest that fit),
# then install it: run the tests before committing the new lock.
lock:
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip pip-tools
	$(BIN)/pip-compile --quiet --upgrade --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra test --extra bench --output-file requirements.lock pyproject.toml
	rm -f $(BIN)/tidings
	$(MAKE) install

web/node_modules: web/package.json
	cd web && npm install --no-audit --no-fund --loglevel=error
	touch $@

# autobahn-js for Node: the docs' Node examples, run by the tests.
$(NODE_EXAMPLES)/node_modules: $(NODE_EXAMPLES)/package.json
	cd $(NODE_EXAMPLES) && npm install --no-audit --no-fund --loglevel=error
	touch $@

# `make run` is development: built-in secrets and the demo ticket endpoint
# (TIDINGS_DEV=1 unless set). Everything else runs as in production and
# needs TIDINGS_SECRET and TIDINGS_BACKEND_SECRET.
# Each declares the broker's exchanges and queues first (`tidings setup`):
# raw events sent before the first worker ever ran are kept, not dropped.
run: export TIDINGS_DEV ?= 1
run: install
	@$(BIN)/tidings setup --quiet
	@$(BIN)/tidings run

run-router: install
	$(BIN)/tidings setup --quiet
	$(BIN)/tidings router

run-worker: install
	$(BIN)/tidings setup --quiet
	$(BIN)/tidings worker

test: lint
	$(BIN)/pytest -m "not soak" $(PYTEST_ARGS)

# Style, types, and the layers of the code (pyproject.toml [tool.importlinter]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# The worker's instructions per event under callgrind: a figure that does not
# move with the machine's speed, for comparing changes (docs/performance.md).
bench-instructions: install
	$(BIN)/python -m bench.instructions $(BENCH_ARGS)

soak: install
	$(BIN)/pytest -m soak $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) web/node_modules $(NODE_EXAMPLES)/node_modules .pytest_cache
	rm -f bench/results.json bench/results.png bench/instructions.json
