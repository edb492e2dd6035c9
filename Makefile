# Everything runs from a virtual environment that `make` creates on first use.
# torch is installed first and pinned: on this project's machines `torch==2.13.0` resolves to a
# local CPU wheel, while any other spec would download gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PYTEST_ARGS ?= -n 2
MNIST ?= ../shared/datasets/mnist/t10k-images-idx3-ubyte.gz
RUN ?= runs/mnist

.PHONY: help venv test lint format train train-mnist clean

help:
	@echo "make train   train a model (MNIST from ../shared if present, else generated shapes)"
	@echo "make test    lint and run the whole test suite"
	@echo "make format  apply ruff's formatting and fixes"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[train,serve,dev]"
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The main job until the service lands: train a model and write its pictures.
train: venv
	@if [ -f "$(MNIST)" ]; then \
		$(MAKE) --no-print-directory train-mnist; \
	else \
		echo "no $(MNIST): training on generated shapes instead"; \
		$(BIN)/python -c "from pathlib import Path; from vaeserve.training.synthetic import write_shapes_npz; write_shapes_npz(Path('runs/shapes.npz'), n=5000)"; \
		$(BIN)/vaeserve train --data runs/shapes.npz --out runs/shapes --epochs 10; \
	fi

# The documented MNIST run (docs/training.md): 9,000 train / 1,000 validation, seed 0, latent 2.
train-mnist: venv
	$(BIN)/vaeserve train --data $(MNIST) --out $(RUN) --latent-dim 2 --seed 0 \
		--val-fraction 0.1 --epochs 50 --batch-size 32
	$(BIN)/vaeserve evaluate --checkpoint $(RUN)/checkpoint.pt --split val --iw-samples 100

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
