"""A CoE output (Mixtral and Qwen3-MoE layouts) is a model vLLM loads and runs: greedy answers equal transformers'.

Head size 32 here (the CPU engine refuses 16, the size of the bench's tiny base)."""

from __future__ import annotations

import pytest
import torch

from mentor.coe.assemble import assemble_moe, save_moe
from mentor.models.loading import load_model, load_tokenizer
from mentor.models.tiny import build_char_tokenizer, build_tiny_model, tiny_config
from mentor.sample.hf import HFSampler
from mentor.sample.vllm import VLLMSampler

PROMPTS = ["12+34*5=", "7*8+9=", "45+6+7=", "81*3-20=", "5+5*5="]


def _base_and_experts(arch: str, tokenizer, num_experts: int = 3):
    """A random base and experts that differ from it only in their MLPs, as FFN-only training leaves them."""
    config = tiny_config(arch, len(tokenizer), 64, 2, 2, tokenizer=tokenizer, max_positions=128)
    base, experts = build_tiny_model(config, seed=0), []
    for i in range(num_experts):
        expert = build_tiny_model(base.config)
        expert.load_state_dict(base.state_dict())
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, param in expert.named_parameters():
                if ".mlp." in name:
                    param.add_(0.5 * torch.randn_like(param))
        experts.append(expert)
    return base, experts


@pytest.mark.parametrize("arch", ["qwen3", "llama"])  # Qwen3-MoE and Mixtral outputs
def test_a_coe_moe_generates_in_vllm_as_in_transformers(arch, tmp_path):
    tokenizer = build_char_tokenizer()
    base, experts = _base_and_experts(arch, tokenizer)
    path = save_moe(assemble_moe(base, experts, top_k=2), tokenizer, tmp_path / "moe")
    model, tokenizer = load_model(str(path)), load_tokenizer(str(path))  # as a user's model, from disk
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    engine = VLLMSampler(model, tokenizer, str(path), max_new_tokens=12, dtype="float32", max_model_len=128)
    try:
        for update in range(2):  # as loaded, then after the experts changed (a weight sync into the MoE kernel)
            if update:
                with torch.no_grad():
                    for name, param in model.named_parameters():
                        if "experts" in name:
                            param.add_(0.3 * torch.randn_like(param))
            ours = engine.sample(prompt_ids, greedy=True)
            theirs = HFSampler(model, tokenizer, 12).sample(prompt_ids, greedy=True)
            assert ours.completion_ids == theirs.completion_ids, update
    finally:
        engine.close()
