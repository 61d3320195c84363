# Each target sets up what it needs (.venv/, and the host in .comfyui/ unless COMFYUI_PATH names one).
SHELL := /bin/bash
PY := .venv/bin/python
export COMFYUI_PATH ?=
# The ComfyUI hosts `make test-hosts` runs the compatibility subset (pytest -m hosts) on.
HOSTS ?= 0.33.0 0.16.4 0.3.75 2024-12

.PHONY: setup test test-fast test-hosts demo serve bench bench-families bench-quality bench-choose-bias workflows device-kit toyworld toyworld-eval lint format clean

setup:
	@bash scripts/setup_env.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The full suite on the default host, then the compatibility subset on the three older hosts.
test: lint
	@bash scripts/setup_browser.sh
	$(PY) -m pytest $(PYTEST_ARGS)
	@bash scripts/test_hosts.sh 0.16.4 0.3.75 2024-12

test-hosts: setup
	@bash scripts/test_hosts.sh $(HOSTS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m scripts.demo $(DEMO_ARGS)

serve: setup
	$(PY) -m scripts.serve

bench: setup
	$(PY) -m benchmarks.run

bench-families: setup
	$(PY) -m benchmarks.families $(BENCH_ARGS)

bench-quality: setup
	$(PY) -m benchmarks.quality $(BENCH_ARGS)

# The bias chooser against the toy world's scorer, 6 concepts (~50 min on 2 CPU cores)
bench-choose-bias: setup
	$(PY) -m benchmarks.choose_bias $(BENCH_ARGS)

# Rewrites the shipped workflows (workflows/*.json, their API twins and thumbnails) from
# workflows/build_workflows.py; WORKFLOW_ARGS="--check" only lists the files that are out of date.
workflows: setup
	$(PY) -m workflows.build_workflows $(WORKFLOW_ARGS)

# The device kit for a lent GPU machine: .kit/ (wheels + host), its checks, and the call to make.
device-kit: setup
	@bash scripts/device_check.sh prepare

# Retrains the toy world (UNet + CLIP's last attention; ~112 min on 2 idle CPU cores, resumable) into toyworld/weights/
toyworld: setup
	$(PY) -m toyworld.build $(TOYWORLD_ARGS)

toyworld-eval: setup
	$(PY) -m toyworld.evaluate

clean:
	rm -rf tests/.cache output .pytest_cache .ruff_cache
