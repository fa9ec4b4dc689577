"""The colocated vLLM sampler.

Where a CUDA GPU and vLLM are present, the real engine runs (the last two tests). Everywhere else a stand-in
``vllm`` module that keeps vLLM 0.33.0's signatures and checks (commit 4ba787ec9: ``LLM.__init__`` with its
``**kwargs`` going to ``EngineArgs``, ``SamplingParams`` validation and greedy reset, ``generate``,
``apply_model``, ``reset_prefix_cache``, ``TokensPrompt``, ``CompletionOutput``, ``Logprob``) and samples with the
transformers model it loaded, so what the sampler asks of vLLM is checked without a GPU.
"""

import copy
import os
import sys
import time
import types

import pytest
import torch

from mentor.models.loading import apply_lora, load_model, load_tokenizer
from mentor.sample.base import to_rollout_batch
from mentor.sample.hf import HFSampler
from mentor.sample.vllm import VLLMSampler
from mentor.update.logprobs import token_logprobs

PROMPTS = ["12+34*5=", "7*8+9=", "45+6+7=", "81*3-20="]


# --- a stand-in vLLM with the real signatures ----------------------------------------------------------------
class Logprob:  # vllm/logprobs.py
    def __init__(self, logprob: float, rank: int | None = None, decoded_token: str | None = None):
        self.logprob, self.rank, self.decoded_token = logprob, rank, decoded_token


class SamplingParams:  # vllm/sampling_params.py: the fields the sampler uses, vLLM's checks on them
    def __init__(self, *, n: int = 1, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 max_tokens: int | None = 16, logprobs: int | None = None, stop_token_ids: list[int] | None = None,
                 seed: int | None = None):
        if top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {top_k}.")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError("temperature must be non-negative and top_p in (0, 1]")
        self.n, self.temperature, self.top_p, self.top_k = n, temperature, top_p, top_k
        self.max_tokens, self.logprobs, self.stop_token_ids, self.seed = max_tokens, logprobs, stop_token_ids, seed
        if temperature < 1e-5:  # __post_init__: zero temperature means greedy sampling
            self.top_p, self.top_k = 1.0, 0
        self.sampling_type = "greedy" if temperature < 1e-5 else "random"  # a cached_property in vLLM

    def clone(self) -> "SamplingParams":
        return copy.deepcopy(self)


DTYPES = ("auto", "half", "float16", "float", "float32", "bfloat16")  # vllm/config/model.py
ENGINE_KWARGS = {"max_model_len", "enable_prefix_caching", "logprobs_mode"}  # the EngineArgs fields passed
LOGPROBS_MODES = ("raw_logits", "raw_logprobs", "processed_logits", "processed_logprobs")


class _EngineModel:
    """vLLM's model: ``load_weights`` takes (HF name, tensor) pairs and refuses names it does not have (a tied
    ``lm_head.weight`` loads into the shared embedding, as vLLM's tied ``ParallelLMHead`` does)."""

    def __init__(self, path: str):
        self.model = load_model(path)

    def load_weights(self, weights) -> set[str]:
        params = dict(self.model.named_parameters(remove_duplicate=False))
        loaded = set()
        for name, tensor in weights:
            if name not in params or params[name].shape != tensor.shape:
                raise KeyError(f"vLLM's model has no weight {name} of shape {tuple(tensor.shape)}")
            params[name].data.copy_(tensor)
            loaded.add(name)
        return loaded


class LLM:  # vllm/entrypoints/llm.py
    instances: list = []

    def __init__(self, model: str, *, tokenizer: str | None = None, dtype: str = "auto", seed: int = 0,
                 gpu_memory_utilization: float = 0.92, **kwargs):
        unknown = set(kwargs) - ENGINE_KWARGS
        if unknown:
            raise TypeError(f"EngineArgs got unexpected keyword arguments {unknown}")
        if dtype not in DTYPES or kwargs.get("logprobs_mode", "raw_logprobs") not in LOGPROBS_MODES:
            raise ValueError(f"Unknown dtype or logprobs_mode: {dtype!r}, {kwargs.get('logprobs_mode')!r}")
        self.args = dict(model=model, tokenizer=tokenizer, dtype=dtype, seed=seed, **kwargs)
        self.in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        self.engine_model, self.prefix_cache_resets = _EngineModel(model), 0
        self.generator = torch.Generator().manual_seed(seed)
        LLM.instances.append(self)

    def apply_model(self, func):
        if not self.in_process:  # the callable would go to another process through pickle
            raise RuntimeError("apply_model needs VLLM_ENABLE_V1_MULTIPROCESSING=0 for a closure over tensors")
        return [func(self.engine_model)]

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self.prefix_cache_resets += 1
        return True

    @torch.no_grad()
    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None):
        return [self._one(prompt["prompt_token_ids"], sampling_params) for prompt in prompts]

    def _one(self, prompt: list[int], params: SamplingParams):
        tokens, logprobs, finish = [], [], "length"
        for _ in range(params.max_tokens):
            logits = self.engine_model.model(input_ids=torch.tensor([prompt + tokens])).logits[0, -1].float()
            greedy = params.sampling_type == "greedy"
            # logprobs_mode processed_logprobs: the log-softmax after temperature
            processed = torch.log_softmax(logits / (1.0 if greedy else params.temperature), -1)
            token = int(processed.argmax()) if greedy else int(torch.multinomial(processed.exp(), 1, generator=self.generator))
            tokens.append(token)
            logprobs.append({token: Logprob(float(processed[token]), int((processed >= processed[token]).sum()))})
            if token in (params.stop_token_ids or []):
                finish = "stop"
                break
        output = types.SimpleNamespace(index=0, text="", token_ids=tokens, cumulative_logprob=None,
                                       logprobs=logprobs if params.logprobs is not None else None, finish_reason=finish)
        return types.SimpleNamespace(prompt_token_ids=prompt, outputs=[output])


@pytest.fixture()
def fake_vllm(monkeypatch):
    module, inputs = types.ModuleType("vllm"), types.ModuleType("vllm.inputs")
    module.LLM, module.SamplingParams, module.inputs = LLM, SamplingParams, inputs
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}  # a TypedDict
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the sampler refuses to start without one
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the sampler must override a user's setting
    LLM.instances = []
    return module


def _sampler(tiny_dirs, model=None, **kwargs):
    tokenizer = load_tokenizer(tiny_dirs["teacher"])
    model = model if model is not None else load_model(tiny_dirs["teacher"])
    defaults = dict(max_new_tokens=10, temperature=0.9, dtype="float32", seed=1)
    return VLLMSampler(model, tokenizer, tiny_dirs["teacher"], **{**defaults, **kwargs}), model, tokenizer


def test_the_sampler_asks_vllm_for_what_the_trainer_needs(fake_vllm, tiny_dirs):
    sampler, model, tokenizer = _sampler(tiny_dirs, top_k=0)
    (llm,) = LLM.instances
    assert llm.args["dtype"] == "float32"  # "auto" would load a float32 checkpoint as bfloat16
    assert llm.args["logprobs_mode"] == "processed_logprobs" and llm.in_process
    assert sampler.params.logprobs == 0 and sampler.params.top_k == 0 and sampler.params.temperature == 0.9
    assert sampler.greedy_params.sampling_type == "greedy" and sampler.greedy_params.top_k == 0
    assert sampler.params.sampling_type == "random"  # the greedy copy did not change the sampling one
    greedy = sampler.sample([tokenizer(PROMPTS[0])["input_ids"]], greedy=True)
    assert greedy.completion_logprobs[0] == [0.0] * len(greedy.completion_ids[0])


def test_sampled_logprobs_follow_the_trainer_weights(fake_vllm, tiny_dirs):
    sampler, model, tokenizer = _sampler(tiny_dirs)
    (llm,) = LLM.instances
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS for _ in range(2)]
    with torch.no_grad():  # an "update": the next sample must see it
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    batch = to_rollout_batch(sampler.sample(prompt_ids), list(range(len(prompt_ids))), tokenizer.pad_token_id)
    engine = dict(llm.engine_model.model.named_parameters())
    assert all(torch.equal(engine[name], p) for name, p in model.named_parameters())
    with torch.no_grad():
        fresh, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=0.9)
    mask = batch.loss_mask.bool()
    assert mask.sum() > 0 and torch.allclose(batch.sampler_logprobs[mask], fresh[mask], atol=1e-5)
    assert llm.prefix_cache_resets == 1
    sampler.sample(prompt_ids[:1])  # no optimizer step since: no second sync
    assert llm.prefix_cache_resets == 1


def test_a_lora_students_merged_weights_reach_the_engine_under_its_names(fake_vllm, tiny_dirs):
    base = load_model(tiny_dirs["teacher"])
    model = apply_lora(base, rank=4, alpha=8, target_modules="all-linear")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.05)  # a trained adapter: merging changes the weights
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sampler, _, tokenizer = _sampler(tiny_dirs, model=model)
    sampler.sample([tokenizer(PROMPTS[1])["input_ids"]])
    (llm,) = LLM.instances
    merged = copy.deepcopy(model).merge_and_unload()
    engine = dict(llm.engine_model.model.named_parameters())
    for name, p in merged.named_parameters():
        assert torch.allclose(engine[name], p, atol=1e-6), name
    for name, p in model.named_parameters():  # the trainer's model is unmerged again: it trains the adapter
        assert torch.allclose(p, before[name], atol=1e-6), name


# --- the real engine (a CUDA GPU with vLLM installed) ----------------------------------------------------------
@pytest.fixture()
def real_vllm():
    if not torch.cuda.is_available():
        pytest.skip("vLLM sampling needs a CUDA GPU")
    return pytest.importorskip("vllm")


def test_vllm_logprobs_follow_the_trainer_weights_and_match_a_forward_pass(real_vllm, tiny_dirs):
    tokenizer = load_tokenizer(tiny_dirs["teacher"])
    model = load_model(tiny_dirs["teacher"], device="cuda")
    sampler = VLLMSampler(model, tokenizer, tiny_dirs["teacher"], max_new_tokens=16, temperature=0.9,
                          dtype="float32", gpu_memory_utilization=0.2)
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS for _ in range(4)]
    with torch.no_grad():  # an "update": the next sample must see it
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    batch = to_rollout_batch(sampler.sample(prompt_ids), list(range(len(prompt_ids))), tokenizer.pad_token_id)
    with torch.no_grad():
        fresh, _ = token_logprobs(model, batch.input_ids.cuda(), batch.attention_mask.cuda(), temperature=0.9)
    mask = batch.loss_mask.bool()
    assert torch.allclose(batch.sampler_logprobs[mask], fresh.cpu()[mask], atol=2e-3)


def test_vllm_tokens_per_second_vs_transformers_generate(real_vllm, tiny_dirs):
    tokenizer = load_tokenizer(tiny_dirs["teacher"])
    model = load_model(tiny_dirs["teacher"], device="cuda")
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS for _ in range(64)]
    rates = {}
    for name, sampler in (("hf", HFSampler(model, tokenizer, 32, batch_size=256)),
                          ("vllm", VLLMSampler(model, tokenizer, tiny_dirs["teacher"], 32, dtype="float32",
                                               gpu_memory_utilization=0.2))):
        sampler.sample(prompt_ids[:8])  # warm-up (and the first weight sync)
        start = time.perf_counter()
        out = sampler.sample(prompt_ids)
        rates[name] = sum(len(c) for c in out.completion_ids) / (time.perf_counter() - start)
    print(f"tokens/s: vLLM {rates['vllm']:.0f}, transformers generate {rates['hf']:.0f} "
          f"({rates['vllm'] / rates['hf']:.1f}x)")
