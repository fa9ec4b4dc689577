# Two entry points a newcomer needs: `make demo` and `make test`. Both work from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned here (not in pyproject) so a CPU machine takes the local CPU wheel instead of
# pulling a multi-GB CUDA build; pyproject keeps only a lower bound.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[dev,math,gguf,ifeval]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/mentor demo --out runs/demo

test: install
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) runs
