"""SmolLM2-135M-Instruct (its GGUF, as a user passes it) sampled by vLLM during OPD: the engine loads a
safetensors copy mentor writes (vLLM reads no GGUF without a plugin), then holds the trainer's weights."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from mentor.config import DistillConfig
from mentor.recipes.distill import run_distill
from tests.real_assets import Unavailable, smollm2_gguf

CHAT_PROMPTS = ["Name a color.", "Say hello in French.", "What is 2+3?", "Give me a fruit."]


@pytest.fixture(scope="module")
def gguf():
    try:
        return str(smollm2_gguf())
    except Unavailable as exc:
        pytest.skip(str(exc))


def test_opd_on_smollm2_with_the_vllm_sampler(gguf, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in CHAT_PROMPTS))
    config = DistillConfig(
        student=gguf,
        teacher="self",
        prompts=str(prompts),
        sampler="vllm",
        steps=2,
        batch_size=2,
        group_size=2,
        max_new_tokens=16,
        max_prompt_tokens=64,
        learning_rate=1e-5,
        seed=0,
        vllm_enforce_eager=True,
        output_dir=str(tmp_path / "run"),
        quiet=True,
    )
    copies_before = set(Path(tempfile.gettempdir()).glob("mentor-vllm-*"))
    trainer, history = run_distill(config)
    assert set(Path(tempfile.gettempdir()).glob("mentor-vllm-*")) == copies_before  # the engine's copy is gone
    steps = [row for row in history if "loss" in row]
    assert len(steps) == 2
    for row in steps:
        assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-3) and row["ratio_max"] < 1 + 1e-3, row
    assert steps[0]["reverse_kl"] == pytest.approx(0.0, abs=1e-4)  # the student starts as its teacher
