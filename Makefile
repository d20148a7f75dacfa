# The one test command is `make test` (README). It needs only python3 and make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit demo image-test clean mosquitto chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Integration tests talk to a real mosquitto; install it when missing (root only).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null); \
	  else \
	    echo "mosquitto is missing: run 'sudo apt-get install mosquitto mosquitto-clients' and retry"; exit 1; \
	  fi; }

lint: $(STAMP)
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests

typecheck: $(STAMP)
	$(BIN)/mypy gateway

# The dashboard's browser tests need headless Chromium; install it when missing (root only),
# otherwise those two tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	      echo "chromium could not be installed: the browser tests will skip"; \
	  else \
	    echo "chromium is missing (sudo apt-get install chromium): the browser tests will skip"; \
	  fi; }

test: $(STAMP) mosquitto chromium lint typecheck
	PATH="$$PATH:/usr/sbin" $(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# `make demo DEMO_ARGS="--broker-port 1884 --duration 60"`: flags of `gateway demo` (docs/demo.md)
# the demo needs only the runtime dependencies: a quicker first start on a fresh clone
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/gateway demo $(DEMO_ARGS)

image-test:
	bash docker/image-test.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
