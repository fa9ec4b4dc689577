"""The colocated vLLM sampler: runs only where a CUDA GPU and vLLM are present (skipped elsewhere)."""

import time

import pytest
import torch

vllm = pytest.importorskip("vllm")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM sampling needs a CUDA GPU")

from mentor.models.loading import load_model, load_tokenizer  # noqa: E402
from mentor.sample.hf import HFSampler  # noqa: E402
from mentor.sample.vllm import VLLMSampler  # noqa: E402
from mentor.update.logprobs import token_logprobs  # noqa: E402
from mentor.sample.base import to_rollout_batch  # noqa: E402

PROMPTS = ["12+34*5=", "7*8+9=", "45+6+7=", "81*3-20="]


def test_vllm_logprobs_follow_the_trainer_weights_and_match_a_forward_pass(tiny_dirs):
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


def test_vllm_tokens_per_second_vs_transformers_generate(tiny_dirs):
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
