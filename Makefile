# Everything runs from a virtual environment that `make` creates on first use.
# torch is installed first and pinned: on this project's machines `torch==2.13.0` resolves to a
# local CPU wheel, while any other spec would download gigabytes of CUDA packages. Elsewhere PyPI's
# torch is the CUDA build: `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs
# PyTorch's own CPU wheel from its index instead (a few hundred MB).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
PYTEST_ARGS ?= -n 2
MNIST ?= ../shared/datasets/mnist/t10k-images-idx3-ubyte.gz
RUN ?= runs/mnist

.PHONY: help venv test lint proto-tools clients-venv format train train-mnist default-model serve stubs docs-settings clean

help:
	@echo "make serve   serve the bundled MNIST model over gRPC on :8001 (metrics on :8002)"
	@echo "             from .venv-serve (the serve extra only); SERVE_ARGS=\"--port 9001\" etc."
	@echo "make test    lint and run the whole test suite (in .venv, with every extra)"
	@echo "             TORCH_INDEX=https://download.pytorch.org/whl/cpu: CPU torch off PyPI"
	@echo "make lint    ruff check and ruff format --check"
	@echo "make format  apply ruff's formatting and fixes"
	@echo "make venv    create .venv (torch first, then -e .[train,serve,dev])"
	@echo "make train   train a model (MNIST from ../shared if present, else generated shapes)"
	@echo "make train-mnist    the documented MNIST run (docs/training.md) into RUN=runs/mnist"
	@echo "make default-model  rebuild the bundled model in vaeserve/models (needs MNIST=...)"
	@echo "make stubs   regenerate the gRPC stubs from protos/vaeserve/v1/vae.proto"
	@echo "make docs-settings  rewrite docs/service.md's settings table from Settings"
	@echo "make bench   benchmarks: the service against in-process ONNX Runtime and PyTorch"
	@echo "make bench-peers  the same decoder behind vaeserve, plain grpc.aio, PyTriton, MLServer"
	@echo "make chaos   hostile-load scenarios against a real server (docs/reliability.md)"
	@echo "make bench-training  10 seeds x 5 datasets, 8 epochs: collapses, NELBO spread (~1.5 h)"
	@echo "make deploy-check  lint the Dockerfile and validate the Kubernetes manifests"
	@echo "make clean   remove the virtual environments, runs/ and caches"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install -q -e ".[train,serve,dev]"
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint proto-tools clients-venv
	$(BIN)/pytest $(PYTEST_ARGS)

# tritonclient (NVIDIA's KServe V2 client) for tests/integration/test_kserve_tritonclient.py, in
# its own venv: it needs protobuf 6.
CLIENTS_VENV ?= .venv-clients
$(CLIENTS_VENV)/bin/.installed: tests/clients/requirements.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install -q -r tests/clients/requirements.txt
	touch $@
clients-venv: $(CLIENTS_VENV)/bin/.installed

# The pinned buf CLI (npm: @bufbuild/buf) for the proto lint and breaking-change tests
# (tests/unit/test_proto_contract.py); needs node/npm and the npm registry once.
BUF_STAMP := tools/proto/node_modules/.installed
$(BUF_STAMP): tools/proto/package-lock.json
	npm ci --prefix tools/proto --no-audit --no-fund
	touch $@
proto-tools: $(BUF_STAMP)

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
TRAIN_MNIST = $(BIN)/vaeserve train --data $(MNIST) --latent-dim 2 --seed 0 --val-fraction 0.1 \
	--epochs 50 --batch-size 32 --lr 0.001 --lr-schedule cosine --kl-warmup 5
train-mnist: venv
	$(TRAIN_MNIST) --out $(RUN)
	$(BIN)/vaeserve evaluate --checkpoint $(RUN)/checkpoint.pt --split val --iw-samples 100

# Rebuild the bundled default model (package data) from the MNIST files: train, export, then
# concepts.json (per-label latent statistics for ListConcepts, Edit and Sample's concept).
DEFAULT_MODEL := vaeserve/models
default-model: venv
	$(TRAIN_MNIST) --out runs/default-model --quiet
	$(BIN)/vaeserve export --checkpoint runs/default-model/checkpoint.pt \
		--repository $(DEFAULT_MODEL) --name mnist --version 1 --force \
		--command-note "make default-model"
	$(BIN)/vaeserve concepts --data $(MNIST) --repository $(DEFAULT_MODEL) --name mnist --version 1
	$(BIN)/vaeserve evaluate --checkpoint runs/default-model/checkpoint.pt --split val \
		--iw-samples 100 --quiet > runs/default-model/evaluate.json
	mkdir -p docs/images && cp runs/default-model/*.png docs/images/

# The gRPC service on the bundled model (docs/service.md), from its own environment with only the
# `serve` extra: serving never installs or imports torch. Flags or VAESERVE_* variables change
# its settings, e.g. `make serve SERVE_ARGS="--port 9001 --providers cpu"`.
SERVE_VENV ?= .venv-serve
SERVE_ARGS ?=
$(SERVE_VENV)/bin/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e ".[serve]"
	touch $@

serve: $(SERVE_VENV)/bin/.installed
	$(SERVE_VENV)/bin/vaeserve serve $(SERVE_ARGS)

# Regenerate the checked-in stubs (a test fails when they are stale).
stubs: venv
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) $(SERVE_VENV) runs .pytest_cache .ruff_cache

# Offline deployment checks (no cluster, no Docker engine): lint the Dockerfile, render every
# kustomize overlay and validate each object against the Kubernetes schemas of the oldest
# supported version (1.27, native gRPC probes) and of the newest one kubernetes-validate ships.
.PHONY: deploy-check
deploy-check: venv
	$(BIN)/hadolint deploy/Dockerfile
	@set -e; rendered=$$(mktemp); trap 'rm -f "$$rendered"' EXIT; \
	for overlay in deploy/k8s/overlays/*/ deploy/k8s/training/overlays/*/; do \
		echo "kustomize $$overlay"; \
		$(BIN)/kubectl kustomize $$overlay > "$$rendered"; \
		$(BIN)/kubernetes-validate --strict --quiet -k 1.27.0 "$$rendered"; \
		$(BIN)/kubernetes-validate --strict --quiet "$$rendered"; \
	done
	$(BIN)/pytest -q tests/unit/test_deploy.py

# Benchmarks (docs/performance.md): the service against in-process ONNX Runtime and PyTorch.
BENCH_ARGS ?=
.PHONY: bench
bench: venv
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Peers (docs/performance.md, "Peers"): the same decoder.onnx behind vaeserve, a plain grpc.aio
# server, PyTriton and MLServer, one load generator, paired rounds. PyTriton and MLServer run from
# their own venv (their protobuf/grpcio pins conflict with vaeserve's); the harness, vaeserve and
# the load generator run from $(VENV). e.g. `make bench-peers PEERS_ARGS=--quick`.
PEERS_VENV ?= .venv-peers
PEERS_ARGS ?=
$(PEERS_VENV)/bin/.installed: benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --upgrade pip
	$(PEERS_VENV)/bin/pip install -q -r benchmarks/peers/requirements.txt
	touch $@

.PHONY: bench-peers
bench-peers: venv $(PEERS_VENV)/bin/.installed
	$(BIN)/python -m benchmarks.peers.run --peers-python $(PEERS_VENV)/bin/python $(PEERS_ARGS)

# Hostile-load scenarios (docs/reliability.md, "Round two"): unread-stream floods with big Samples,
# unread-stream memory, unauthenticated 30 MiB bodies. Prints each figure and its verdict and
# writes benchmarks/results/chaos.json; exits 1 if a promise broke. CI runs short versions
# (tests/integration/test_hostile_process.py).
CHAOS_ARGS ?=
.PHONY: chaos
chaos: venv
	$(BIN)/python -m benchmarks.chaos $(CHAOS_ARGS)

# Training robustness (docs/training.md, "Robustness across seeds and datasets"): 10 seeds on each
# of MNIST, inverted and rotated MNIST, shapes and 64x64 RGB scenes, 8 epochs on <= 4,000 images;
# prints a table, writes benchmarks/results/training_robustness.{json,png} and the docs block;
# exits 1 if a run collapsed. e.g. `make bench-training TRAINING_BENCH_ARGS="--seeds 0-1"`.
TRAINING_BENCH_ARGS ?=
.PHONY: bench-training
bench-training: venv
	$(BIN)/python -m benchmarks.training_robustness --mnist $(MNIST) $(TRAINING_BENCH_ARGS)

docs-settings: venv
	$(BIN)/python -m vaeserve.service.settings_doc --write docs/service.md
