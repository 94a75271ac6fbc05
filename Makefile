# Two commands for a fresh machine: `make demo` and `make test`.
# Both go through `make setup`, which is idempotent (a stamp file records it).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-done

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned, so nothing later can pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps parlai==1.7.2
	$(PIP) install -q -e '.[test]'
	$(PY) -c "import torch, parlai, parlai_hash; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) -m parlai_hash.demo

bench: setup
	$(PY) -m benchmarks.dispatch
	$(PY) -m benchmarks.model
	$(PY) -m benchmarks.expert_parallel

clean:
	rm -rf $(VENV)
