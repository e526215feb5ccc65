# The two commands of the README: `make demo` (main job on the bundled demo) and `make test`.
# Both do their own set-up on a fresh Debian machine with Python 3.11.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test venv venv-dev system-deps rootfs image bench lint clean

$(BIN)/.base: pyproject.toml
	$(PY) -m venv $(VENV) || { rm -rf $(VENV); bash ci/install-system-deps.sh venv && $(PY) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.dev: $(BIN)/.base
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev,finetune,farm]"
	touch $@

venv: $(BIN)/.base
venv-dev: $(BIN)/.dev

demo: venv
	bash ci/demo.sh "$(BIN)" "$(OUT)"

system-deps:
	bash ci/install-system-deps.sh

rootfs: system-deps
	bash ci/build-rootfs.sh

image: system-deps
	bash ci/build-image.sh

test: venv-dev system-deps rootfs image
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: venv-dev
	$(BIN)/python bench/quant.py

lint: venv-dev
	$(BIN)/ruff check host device tests bench

clean:
	rm -rf $(VENV) out build *.egg-info host/*.egg-info
