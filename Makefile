# Entry points for a fresh machine with python3 and make:
#   make demo   - everything in one process: broker, bridge, simulated Go2Clock and terminal
#   make test   - the whole test suite against a real mosquitto broker
#   make lint   - ruff (lint and format) and mypy --strict; .ci/run runs it before the tests
VENV    ?= .venv
PYTHON  ?= python3
# The suite mostly waits (brokers, fakes, subprocesses): two workers halve its time.
TEST_WORKERS ?= 2
PY      := $(VENV)/bin/python

.PHONY: demo test lint venv clean

$(VENV)/.installed-%: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-demo
	$(PY) -m bridge demo

test: $(VENV)/.installed-test
	bash scripts/ensure-test-tools.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist load $(PYTEST_ARGS)

# The same venv as `make test` (its stamp names both extras), so .ci/run builds one.
lint: $(VENV)/.installed-test,lint
	$(PY) -m ruff check bridge tests bench
	$(PY) -m ruff format --check bridge tests bench
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
