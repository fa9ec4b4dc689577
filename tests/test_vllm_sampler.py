"""The colocated vLLM sampler where no engine runs (the main virtualenv; the real engine's tests are tests/vllm).

What a CPU engine cannot show is kept here with a stand-in ``vllm`` module: the arguments the sampler gives the
CUDA build (``gpu_memory_utilization``, no CPU KV-cache size). Also: without vLLM, ``--sampler vllm`` is one line.
"""

import sys
import types

import pytest

from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.sample.vllm import VLLMSampler, cpu_kv_cache_bytes


class _LLM:  # records what vllm.LLM was asked for (vllm/entrypoints/llm.py: keyword arguments to EngineArgs)
    made: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _LLM.made.append(self)


class _SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _stand_in(monkeypatch, on_cpu: bool):
    vllm, platforms = types.ModuleType("vllm"), types.ModuleType("vllm.platforms")
    vllm.LLM, vllm.SamplingParams = _LLM, _SamplingParams
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: on_cpu)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the sampler must override a user's setting
    _LLM.made = []


def test_the_cuda_build_gets_a_gpu_share_and_the_trainers_dtype(monkeypatch, tiny_dirs):
    _stand_in(monkeypatch, on_cpu=False)
    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    VLLMSampler(model, tokenizer, tiny_dirs["teacher"], 8, dtype="float32", gpu_memory_utilization=0.25)
    (llm,) = _LLM.made
    assert llm.kwargs["gpu_memory_utilization"] == 0.25 and "kv_cache_memory_bytes" not in llm.kwargs
    assert llm.kwargs["dtype"] == "float32"  # "auto" would load a float32 checkpoint as bfloat16
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs"  # log-probs after temperature
    import os

    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the engine shares the trainer's tensors


def test_the_cpu_build_gets_a_kv_cache_sized_to_the_model(monkeypatch, tiny_dirs):
    _stand_in(monkeypatch, on_cpu=True)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    VLLMSampler(model, tokenizer, tiny_dirs["teacher"], 8, dtype="float32", max_model_len=100)
    (llm,) = _LLM.made
    assert "gpu_memory_utilization" not in llm.kwargs
    config = model.config  # two sequences of 100 tokens, K and V, every layer, float32: far below the floor
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4
    assert llm.kwargs["kv_cache_memory_bytes"] == max(256 << 20, 2 * 100 * per_token)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # vLLM's own setting, in GiB, wins
    assert cpu_kv_cache_bytes(model, 100) == 3 << 30


def test_without_vllm_the_sampler_is_one_line_that_says_how_to_install_it(monkeypatch, tiny_dirs):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    with pytest.raises(MentorError, match=r"--sampler vllm needs vLLM.*make vllm"):
        VLLMSampler(model, tokenizer, tiny_dirs["teacher"], 8)
