"""The colocated sampler on a real engine: its log-probs are the trainer's after every update, full and LoRA."""

from __future__ import annotations

import pytest
import torch

from mentor.models.loading import apply_lora, load_model, load_tokenizer
from mentor.sample.base import to_rollout_batch
from mentor.sample.hf import HFSampler
from mentor.sample.vllm import VLLMSampler
from mentor.update.logprobs import token_logprobs

PROMPTS = ["12+34*5=", "7*8+9=", "45+6+7=", "81*3-20="]
TEMPERATURE = 0.9


def _prompt_ids(tokenizer, repeat: int = 4) -> list[list[int]]:
    return [tokenizer(p)["input_ids"] for p in PROMPTS for _ in range(repeat)]


def _max_gap_to_a_forward_pass(sampler: VLLMSampler, model, tokenizer) -> float:
    """Sample a batch, then score it with the trainer's forward pass: the largest per-token log-prob gap."""
    prompt_ids = _prompt_ids(tokenizer)
    batch = to_rollout_batch(sampler.sample(prompt_ids), list(range(len(prompt_ids))), tokenizer.pad_token_id)
    with torch.no_grad():
        fresh, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=TEMPERATURE)
    mask = batch.loss_mask.bool()
    assert mask.sum() > len(prompt_ids)  # real completions, not just an EOS each
    return float((batch.sampler_logprobs[mask] - fresh[mask]).abs().max())


def _adamw_step(model, lr: float = 1e-2) -> None:
    """One real optimizer step on a language-model loss: what the trainer does between two samples."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids = torch.tensor([[1, 10, 11, 12, 13, 14, 15]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.fixture(scope="module")
def engine(engine_dirs):
    """One engine for the module's full-weight tests (start-up is the slow part)."""
    tokenizer, model = load_tokenizer(engine_dirs["teacher"]), load_model(engine_dirs["teacher"])
    sampler = VLLMSampler(
        model,
        tokenizer,
        engine_dirs["teacher"],
        max_new_tokens=16,
        temperature=TEMPERATURE,
        dtype="float32",
        seed=1,
        max_model_len=128,
    )
    yield sampler, model, tokenizer
    sampler.close()


def test_engine_logprobs_equal_a_forward_pass_after_every_update(engine):
    sampler, model, tokenizer = engine
    assert _max_gap_to_a_forward_pass(sampler, model, tokenizer) < 1e-4
    for _ in range(3):
        before = sampler.syncs
        _adamw_step(model)
        assert _max_gap_to_a_forward_pass(sampler, model, tokenizer) < 1e-4
        assert sampler.syncs == before + 1  # one sync per update, not per call
    sampler.sample(_prompt_ids(tokenizer, 1))
    assert sampler.syncs == before + 1  # no update since: no sync


def test_greedy_engine_answers_equal_transformers_generate(engine):
    sampler, model, tokenizer = engine
    prompt_ids = _prompt_ids(tokenizer, 1)
    ours = sampler.sample(prompt_ids, greedy=True)
    theirs = HFSampler(model, tokenizer, 16).sample(prompt_ids, greedy=True)
    assert ours.completion_ids == theirs.completion_ids and ours.truncated == theirs.truncated


def test_a_lora_students_merged_weights_reach_the_engine(engine_dirs):
    tokenizer = load_tokenizer(engine_dirs["student"])
    model = apply_lora(load_model(engine_dirs["student"]), rank=4, alpha=8, target_modules="all-linear")
    sampler = VLLMSampler(
        model,
        tokenizer,
        engine_dirs["student"],
        max_new_tokens=16,
        temperature=TEMPERATURE,
        dtype="float32",
        seed=2,
        max_model_len=128,
    )
    try:
        for _ in range(2):  # lora_B starts at zero: the first step is the first to change the merged weights
            _adamw_step(model, lr=5e-2)
            assert _max_gap_to_a_forward_pass(sampler, model, tokenizer) < 1e-4
        assert any("lora_" in name for name, _ in model.named_parameters())  # the trainer's model is unmerged
    finally:
        sampler.close()


def test_a_llama_model_syncs_too(engine_dirs):
    tokenizer, model = load_tokenizer(engine_dirs["llama"]), load_model(engine_dirs["llama"])
    sampler = VLLMSampler(
        model,
        tokenizer,
        engine_dirs["llama"],
        max_new_tokens=16,
        temperature=TEMPERATURE,
        dtype="float32",
        seed=3,
        max_model_len=128,
    )
    try:
        _adamw_step(model)
        assert _max_gap_to_a_forward_pass(sampler, model, tokenizer) < 1e-4
    finally:
        sampler.close()
