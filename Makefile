# automl-nn: `make demo` and `make test` work on a fresh machine; everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast soak lint clean system-deps

venv: $(STAMP)

# torch==2.14.1 + torchvision==0.29.1 (pinned in pyproject.toml) take ~5 minutes the first time.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: venv
	cd $(CURDIR) && $(BIN)/automl-nn search studies/digits-quick.yaml --study-name demo \
		--storage sqlite:///demo.db
	$(BIN)/automl-nn pareto demo --storage sqlite:///demo.db

# PostgreSQL for the storage tests (they start a private cluster on loopback). Installed once when
# missing; needs root (CI runs as root). Without it those tests are skipped with the reason.
system-deps:
	@if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing postgresql (for the storage tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "postgresql missing and not root: PostgreSQL tests will be skipped"; fi; \
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
