# `make dev` runs the product locally on the embedded defaults; `make test` runs the whole suite.
# Both create .venv and install what they need first, so they work on a fresh clone.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: dev test lint format bench clean docs-screenshot

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

dev: $(INSTALLED)
	$(BIN)/integrations-pipeline dev $(DEV_ARGS)

# pytest exits 5 when it collected no test: that is a broken suite here, never a pass.
test: $(INSTALLED)
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$status

# Refresh the UI screenshot in the docs (needs /usr/bin/chromium); `make test` writes it to a temporary path only.
docs-screenshot: $(INSTALLED)
	UI_SCREENSHOT=$(CURDIR)/docs/dagster-ui.png $(BIN)/pytest integrations_pipeline_tests/test_dagster_ui.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(INSTALLED)
	$(BIN)/python benchmarks/sync_throughput.py
	$(BIN)/python benchmarks/incremental_merge.py
	$(BIN)/python benchmarks/webhook_ack.py

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache
