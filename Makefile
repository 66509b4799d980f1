# Local development. `make` lists the targets.
.DEFAULT_GOAL := help
.NOTPARALLEL:
.PHONY: help bootstrap test-bootstrap up down status run lint test mutation

VENV := .venv/bin

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

bootstrap:  ## .venv, dev tools, Kafka jars and redis-server (quick when done before)
	@deploy/bootstrap.sh

test-bootstrap:
	@deploy/bootstrap.sh --tests

up: bootstrap  ## start Kafka (127.0.0.1:9092) and Redis (127.0.0.1:6379) in the background
	@$(VENV)/klantreis up

down:  ## stop what `make up` started
	@$(VENV)/klantreis down

status:  ## is Kafka / Redis running?
	@$(VENV)/klantreis status

run: bootstrap  ## start the local runtime and the services
	@$(VENV)/klantreis run

lint: test-bootstrap  ## ruff check, ruff format --check, mypy --strict
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

# The suite mostly waits on Kafka, Redis and timers, so workers beyond the cores still shorten it; they share one
# Kafka and one Redis (tests/conftest.py). TEST_JOBS=0 runs it in one process.
TEST_JOBS ?= 4
test: lint  ## bootstrap, lint, the web tracker's Vitest tests, then the whole test suite in TEST_JOBS workers (its own Kafka and Redis; chromium for the browser tests)
	cd clients/web && npm test --silent
	$(VENV)/pytest -n $(TEST_JOBS) --dist worksteal

JOBS ?= 2
mutation: test-bootstrap  ## mutation testing of the pure domain modules against their unit tests (about an hour of CPU; MODULES=… for some)
	$(VENV)/python tools/mutation.py -j $(JOBS) $(MODULES)
