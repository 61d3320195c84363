# Each target sets up what it needs (.venv/, and the host in .comfyui/ unless COMFYUI_PATH names one).
SHELL := /bin/bash
PY := .venv/bin/python
export COMFYUI_PATH ?=

.PHONY: setup test test-fast demo serve bench bench-families bench-quality toyworld toyworld-eval lint format clean

setup:
	@bash scripts/setup_env.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	@bash scripts/setup_browser.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

serve: setup
	$(PY) scripts/serve.py

bench: setup
	$(PY) benchmarks/run.py

bench-families: setup
	$(PY) -m benchmarks.families $(BENCH_ARGS)

bench-quality: setup
	$(PY) benchmarks/quality.py $(BENCH_ARGS)

# Retrains the toy world's UNet (~1 hour on 2 CPU cores; resumable) into toyworld/weights/.
toyworld: setup
	$(PY) -m toyworld.build $(TOYWORLD_ARGS)

toyworld-eval: setup
	$(PY) -m toyworld.evaluate

clean:
	rm -rf tests/.cache output .pytest_cache .ruff_cache
