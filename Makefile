# automl-nn: `make demo` and `make test` work on a fresh machine; everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast soak lint clean chromium

venv: $(STAMP)

# torch==2.14.1 + torchvision==0.29.1 (pinned in pyproject.toml) take ~5 minutes the first time.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# A real 20-trial search on the embedded digits; it ends by printing the Pareto front.
demo: venv
	$(BIN)/automl-nn search studies/digits-quick.yaml --study-name demo --storage sqlite:///demo.db

test: venv chromium
	$(BIN)/python -m pytest -q -m "not slow"

# The report and dashboard tests drive Debian's chromium through Playwright (never
# `playwright install`, which downloads its own); kaleido uses it for PNG images. Idempotent.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else echo "chromium is missing and this is not root: browser tests will be skipped (sudo make chromium)"; fi; \
	fi

soak: venv
	$(BIN)/python -m pytest -q -m slow

lint: venv
	$(BIN)/ruff check automl_nn tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info demo.db
