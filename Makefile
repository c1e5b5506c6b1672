# Tally — `make help` lists the targets.
SHELL := /bin/bash
UV ?= uv
PY := $(UV) run
# Servers to use; when one does not answer, `tally.devservers` starts a real one
# (Docker if an engine answers, else the PyPI wheel servers) and exports its URL.
ENSURE := eval "$$($(PY) python -m tally.devservers ensure)"

.PHONY: help setup run up down test test-unit lint format typecheck bench bench-tracker bench-quota bench-assign bench-estimate bench-report bench-route bench-chain bench-scale chaos load-jobs console test-cluster clean

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

setup: ## Install Tally and its tools into .venv (uv, from the lock file)
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-extras

run: setup ## Run Tally: servers, migrations, streams, and the six services (Ctrl-C stops)
	$(ENSURE) && $(PY) tally db upgrade && $(PY) tally streams provision && $(PY) tally up --no-migrate

up: run ## Same as `make run`

down: ## Stop servers that `make run`/`make test` started themselves
	$(PY) python -m tally.devservers stop

test: setup ## Run every test: unit, integration and end-to-end (real servers)
	$(ENSURE) && $(PY) pytest -q

test-cluster: setup ## The cluster tests alone: a 3-node NATS cluster (kill -9 mid-ingest), Redis Cluster (also in `make test`)
	$(ENSURE) && $(PY) pytest -q -m cluster

test-unit: setup ## Run the unit tests only (no servers)
	$(PY) pytest -q tests/unit

lint: ## ruff check and format check
	$(PY) ruff check .
	$(PY) ruff format --check .

format: ## Format the code
	$(PY) ruff format .
	$(PY) ruff check --fix .

typecheck: ## mypy --strict on libs/ and services/
	$(PY) mypy libs/tally services

bench: bench-tracker bench-quota bench-assign bench-estimate ## Run the benchmarks (bench-route separately: minutes)

bench-tracker: setup ## Tracker events/s against a raw nats-py + COPY baseline
	$(ENSURE) && $(PY) python benchmarks/tracker.py

bench-quota: setup ## Reservations/s through the quota service against raw EVALSHA
	$(ENSURE) && $(PY) python benchmarks/quota.py

bench-assign: setup ## task.estimated -> task.assigned latency p50/p95/p99
	$(ENSURE) && $(PY) python benchmarks/assign_latency.py

bench-estimate: setup ## Points and hours against history baselines (public data); import, build, estimate rates
	$(PY) python benchmarks/estimate.py
	$(ENSURE) && $(PY) python benchmarks/estimate_service.py
	$(PY) python -m benchmarks.estimate_scale

bench-report: setup ## Reporter p50/p95 per endpoint at concurrency 1 and 16 over 1M run events (/healthz as baseline)
	$(ENSURE) && $(PY) python -m benchmarks.report

bench-route: setup ## Routing frontier vs best single, cheapest, oracle, fixed pairs, a bandit (DATA=x.csv; BUS=1: live replay)
	$(ENSURE) && $(PY) python benchmarks/route.py $(if $(DATA),--data $(DATA)) $(if $(MODELS),--models $(MODELS)) $(if $(BUS),--bus)

bench-chain: setup ## The six services under task.created at 100-2,000/s: assigned/s, latency, CPU/task vs a raw relay (QUICK=1: short)
	$(ENSURE) && $(PY) python benchmarks/chain.py $(if $(QUICK),--quick)

bench-scale: setup ## 1 vs 2 replicas: tasks/s, tracker events/s; every reporter read p50/p95 at 100k vs 10M run_events (EVENTS=N PARTS=reporter LAYOUT=history)
	$(ENSURE) && $(PY) python -m benchmarks.scale $(if $(EVENTS),--events $(EVENTS)) $(if $(PARTS),--parts $(PARTS)) $(if $(LAYOUT),--layout $(LAYOUT))

chaos: setup ## Fault drills: kill -9, NATS/Postgres/Redis faults, fuzzing; prints the table (~10 min; DRILLS="a e")
	$(ENSURE) && $(PY) python -m tests.chaos $(DRILLS)

load-jobs: setup ## 100 concurrent learning jobs finish, P0 first; a learner killed with kill -9 mid-job resumes
	$(ENSURE) && $(PY) pytest -q tests/integration/test_learning_jobs.py::test_a_hundred_jobs_all_finish_p0_first tests/integration/test_learning_jobs_resume.py

clean: ## Remove caches and local server data
	rm -rf .pytest_cache .ruff_cache .mypy_cache .tally

console: ## Rebuild the web console's committed assets from console/ (needs Node.js and npm)
	cd console && npm ci --no-audit --no-fund && npm run build
