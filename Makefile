# `make test` on a fresh clone: creates .venv, installs the package with its test
# dependencies, and runs pytest once per Keras backend; fails if any run fails.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=
export TF_CPP_MIN_LOG_LEVEL := 3

DEMO := runs/demo
DEMO_BACKEND ?= jax

.PHONY: install test test-keras-floor demo models clean $(addprefix test-,$(BACKENDS))

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	@out=$$($(PY) -c "import keras, tensorflow, jax, torch, keras_vitmix" 2>&1) || { echo "$$out"; echo "the install check failed: $(PY) -c 'import keras, tensorflow, jax, torch, keras_vitmix'"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

# One pytest run per backend, one backend after another; each spreads its tests over
# JOBS worker processes (pytest-xdist; default: one per CPU, at most 4). tests/conftest.py
# pins each worker to its own share of the CPUs, so that the frameworks' thread pools do
# not oversubscribe the machine. JOBS=0 runs in one process. Every backend runs even if
# one fails, and `make test` fails if any did.
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: $(STAMP)
	@status=0; for backend in $(BACKENDS); do \
	  $(MAKE) --no-print-directory test-$$backend || status=1; \
	done; exit $$status

$(addprefix test-,$(BACKENDS)): test-%: $(STAMP)
	@echo "=== pytest, KERAS_BACKEND=$*"
	@KERAS_BACKEND=$* $(PY) -m pytest -p no:cacheprovider -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

# The Keras floor: the lowest Keras that pyproject.toml allows, pinned in
# requirements/keras-floor.txt, installed (without dependencies: the venv has Keras's) in
# a folder of its own that PYTHONPATH puts before the venv's newer Keras. tests/layers and
# tests/applications run on it under jax and torch (FLOOR_BACKENDS), with PYTEST_ARGS;
# .ci/run runs a fast subset. The stamp names the version, so a new pin reinstalls.
KERAS_FLOOR := $(shell sed -n 's/^keras==\([0-9][0-9.]*\).*/\1/p' requirements/keras-floor.txt)
FLOOR_DIR := $(VENV)/keras-floor
FLOOR_STAMP := $(FLOOR_DIR)/.installed-$(KERAS_FLOOR)
FLOOR_BACKENDS ?= jax torch
FLOOR_TESTS ?= tests/layers tests/applications
FLOOR_ENV = PYTHONPATH=$(abspath $(FLOOR_DIR))

$(FLOOR_STAMP): requirements/keras-floor.txt | $(STAMP)
	rm -rf $(FLOOR_DIR)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --target $(FLOOR_DIR) -r requirements/keras-floor.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(FLOOR_ENV) $(PY) -c "import keras, sys; sys.exit(None if keras.__version__ == '$(KERAS_FLOOR)' else 'not the floor: keras ' + keras.__version__ + ' from ' + keras.__file__)"
	touch $@

test-keras-floor: $(STAMP) $(FLOOR_STAMP)
	@status=0; for backend in $(FLOOR_BACKENDS); do \
	  echo "=== pytest on the Keras floor $(KERAS_FLOOR), KERAS_BACKEND=$$backend"; \
	  $(FLOOR_ENV) KERAS_BACKEND=$$backend $(PY) -m pytest -p no:cacheprovider -n $(JOBS) --dist worksteal \
	    $(FLOOR_TESTS) $(PYTEST_ARGS) || status=1; \
	done; exit $$status

# The main job: train HybridMixerViT on the embedded digits (no network) with train's
# defaults (the "small" recipe, the device pipeline), then write its attention maps and
# export it (SavedModel, ONNX). Leaves everything in runs/demo/.
demo: $(STAMP)
	$(VENV)/bin/keras-vitmix --backend $(DEMO_BACKEND) train --model hybrid_mixer_vit_cifar_patch4_32 \
	  --dataset digits --output $(DEMO)
	$(VENV)/bin/keras-vitmix --backend $(DEMO_BACKEND) visualize --model $(DEMO)/model.keras \
	  --output $(DEMO)/attention --animate
	$(VENV)/bin/keras-vitmix --backend $(DEMO_BACKEND) export --model $(DEMO)/model.keras \
	  --output $(DEMO)/saved_model --overwrite
	$(VENV)/bin/keras-vitmix --backend $(DEMO_BACKEND) export --model $(DEMO)/model.keras \
	  --output $(DEMO)/model.onnx --format onnx --overwrite
	@echo "Demo outputs in $(DEMO)/:"; ls $(DEMO) $(DEMO)/attention

models: $(STAMP)
	$(VENV)/bin/keras-vitmix models

clean:
	rm -rf $(VENV) .pytest_cache
