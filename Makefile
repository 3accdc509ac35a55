# CityGrid: `make run` serves the demo district, `make test` runs the tests.
# Both install what is missing first (deploy/setup.sh).

VENV ?= .venv
BIN := $(VENV)/bin
export CITYGRID_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/citygrid
export CITYGRID_DATA_DIR ?= ./var
DEMO_AREA_KM2 ?= 4
BIND ?= 127.0.0.1:8443

.PHONY: setup run test lint bench clean

setup:
	@bash deploy/setup.sh

run: setup
	@$(BIN)/citygrid config check
	@$(BIN)/citygrid db upgrade
	@bash deploy/run.sh $(BIN)/citygrid $(DEMO_AREA_KM2) $(BIND)

test: setup
	@$(BIN)/ruff check .
	@$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy mapserver tiles auth audit

bench: setup
	$(BIN)/python bench/demo_build.py
	$(BIN)/python bench/tiles.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/app_cost.py
	$(BIN)/python bench/cases.py
	$(BIN)/python bench/evaluation.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/audit_writers.py
	$(BIN)/python bench/devices.py
	$(BIN)/python bench/zones.py
	$(BIN)/python bench/seed_queue.py
	$(BIN)/python bench/object_cache.py
	$(BIN)/python bench/street_stats.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
