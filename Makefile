# vae: train, sample, reconstruct and evaluate variational autoencoders.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint format docs train bench bench-anomaly bench-disentangle bench-cache bench-evaluate tensorboard clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python ## Create .venv and install vae (editable) with the dev extras
	$(BIN)/python -m pip install -e '.[dev]'

# pytest-xdist: a worker per core; --dist loadfile keeps each test file in one worker, so that a module's
# fixture (a model trained once, a table of commands run once) runs once. `$(BIN)/python -m pytest ...`
# alone runs serially.
test: ## Run the test suite (on every core)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: ## Lint with ruff
	$(BIN)/ruff check vae_cli tests benchmarks
	$(BIN)/ruff format --check vae_cli tests benchmarks

format: ## Format the code with ruff
	$(BIN)/ruff format vae_cli tests benchmarks
	$(BIN)/ruff check --fix vae_cli tests benchmarks

docs: ## Regenerate docs/configuration.md from the config schemas
	$(BIN)/python -m vae_cli.config.reference --write

train: ## Train with the default config; pass overrides as ARGS='model=conv dataset=synthetic'
	$(BIN)/vae train $(ARGS)

bench: ## Time vae's training against the textbook PyTorch loop (benchmarks/bench.py)
	$(BIN)/python benchmarks/bench.py $(ARGS)

bench-anomaly: ## Anomaly detection: vae against PyOD's VAE and AutoEncoder and IsolationForest (needs '.[bench]')
	$(BIN)/python benchmarks/anomaly.py $(ARGS)

bench-disentangle: ## Disentanglement on synthetic: β-VAE, β-TCVAE, FactorVAE, DIP, capacity, InfoVAE (MIG, DCI)
	$(BIN)/python benchmarks/disentangle.py $(ARGS)

bench-cache: ## The decoded-image cache against decoding JPEGs in a DataLoader (benchmarks/cache.py)
	$(BIN)/python benchmarks/cache.py $(ARGS)

bench-evaluate: ## vae evaluate iwae_k=5000 on MNIST against its matrix products alone (benchmarks/evaluate.py)
	$(BIN)/python benchmarks/evaluate.py $(ARGS)

tensorboard: ## Open TensorBoard on outputs/
	$(BIN)/tensorboard --logdir outputs

clean: ## Remove caches and build files (keeps outputs/ and data/)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
