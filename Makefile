# `make test` on a fresh clone: creates .venv, installs the package with its test
# dependencies, and runs pytest once per Keras backend; fails if any run fails.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: install test models clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import keras, tensorflow, jax, torch, keras_vitmix"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	@status=0; \
	for backend in $(BACKENDS); do \
	  echo "=== pytest, KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(PY) -m pytest $(PYTEST_ARGS) || status=1; \
	done; \
	exit $$status

models: $(STAMP)
	$(VENV)/bin/keras-vitmix models

clean:
	rm -rf $(VENV) .pytest_cache
