# automl-nn: `make demo` and `make test` work on a fresh machine; everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test soak lint clean system-deps

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

# System packages the tests use, installed once when missing (CI runs `make test` as root on Debian):
# PostgreSQL for the storage tests (they start a private cluster on loopback), and Debian's chromium
# for the report and dashboard tests (driven through Playwright, never `playwright install`, which
# downloads a browser of its own; kaleido uses it for PNG images). Without root the tests that need
# them are skipped with the reason.
system-deps:
	@missing=""; \
	ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (for the tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing$$missing and not root: the tests that need them will be skipped"; fi; \
	fi

test: venv system-deps
	$(BIN)/python -m pytest -q -m "not slow"

soak: venv system-deps
	$(BIN)/python -m pytest -q -m slow

lint: venv
	$(BIN)/ruff check automl_nn tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info demo.db
