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

.PHONY: install test demo models clean $(addprefix test-,$(BACKENDS))

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import keras, tensorflow, jax, torch, keras_vitmix"
	touch $(STAMP)

install: $(STAMP)

# One pytest process per backend, JOBS at a time (2 by default: much of the suite is
# single-threaded Python, so two processes share the 2-core machines well); each run's
# output is printed whole when it ends, and `make test` fails if any run fails.
JOBS ?= 2
test: $(STAMP)
	@$(MAKE) --no-print-directory -k -j$(JOBS) --output-sync=target $(addprefix test-,$(BACKENDS))

$(addprefix test-,$(BACKENDS)): test-%: $(STAMP)
	@echo "=== pytest, KERAS_BACKEND=$*"
	@KERAS_BACKEND=$* $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# The main job: train HybridMixerViT on the embedded digits (no network), then write its
# attention maps and export it (SavedModel, ONNX). Leaves everything in runs/demo/.
demo: $(STAMP)
	$(VENV)/bin/keras-vitmix --backend $(DEMO_BACKEND) train --model hybrid_mixer_vit_cifar_patch4_32 \
	  --dataset digits --epochs 15 --batch-size 64 --learning-rate 2e-3 --output $(DEMO)
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
