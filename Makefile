# Relay: `make dev` runs the stack, `make test` runs the suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck bench-webhooks bench-billing bench-payments bench-files bench-notifications bench-credentials bench-publishing migrate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Relay needs Python 3.11 or newer"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,test]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/relay dev

migrate: $(STAMP)
	$(BIN)/relay migrate

test: $(STAMP)
	$(BIN)/ruff check relay api workflows activities worker.py tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check relay api workflows activities worker.py tests bench
	$(BIN)/ruff format --check relay api workflows activities worker.py tests bench
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

bench-webhooks: $(STAMP)
	$(BIN)/python -m bench.webhooks

bench-billing: $(STAMP)
	$(BIN)/python -m bench.billing

bench-files: $(STAMP)
	$(BIN)/python -m bench.files

bench-payments: $(STAMP)
	$(BIN)/python -m bench.payments

bench-notifications: $(STAMP)
	$(BIN)/python -m bench.notifications

bench-publishing: $(STAMP)
	$(BIN)/python -m bench.publishing

bench-credentials: $(STAMP)
	$(BIN)/python -m bench.credentials

clean:
	rm -rf $(VENV) .data .pytest_cache
