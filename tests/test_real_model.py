"""The real-model tier: SmolLM2-135M-Instruct (Llama, ChatML, EOS ``<|im_end|>``) loaded from its GGUF file,
through the code paths a user takes. Skips with the reason only when the package registry can't be reached.

Kept small for a 2-core CPU: a few prompts, a few new tokens, a few steps.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from real_assets import Unavailable, smollm2_gguf

from mentor.config import DistillConfig, SFTConfig
from mentor.models.chat import stop_token_ids
from mentor.models.loading import load_model, load_tokenizer, save_pretrained
from mentor.recipes.common import file_examples
from mentor.sample.hf import HFSampler
from mentor.update.logprobs import token_logprobs
from tests.helpers import kill_when_paused, start_driven, succeeds

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_PROMPTS = ["Name a color.", "Say hello in French.", "What is 2+3?", "Give me a fruit."]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """The GGUF as mentor loads it, and the same model saved as a safetensors directory (as `final/` is)."""
    try:
        gguf = smollm2_gguf()
    except Unavailable as exc:
        pytest.skip(str(exc))
    tokenizer, model = load_tokenizer(str(gguf)), load_model(str(gguf))
    directory = tmp_path_factory.mktemp("smollm2") / "model"
    save_pretrained(model, tokenizer, directory)
    return {"gguf": str(gguf), "dir": str(directory), "model": model, "tokenizer": tokenizer}


def _chat_ids(tokenizer, messages) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])


def _answer(model, tokenizer, messages=QUESTION, max_new_tokens: int = 16) -> tuple[str, bool]:
    sampled = HFSampler(model, tokenizer, max_new_tokens).sample([_chat_ids(tokenizer, messages)], greedy=True)
    return tokenizer.decode(sampled.completion_ids[0]), sampled.truncated[0]


def test_gguf_brings_its_tokenizer_template_and_eos(smol):
    from transformers import AutoModelForCausalLM

    tokenizer, model = smol["tokenizer"], smol["model"]
    assert len(tokenizer) == 49152 and "<|im_start|>" in tokenizer.chat_template
    assert stop_token_ids(tokenizer, model) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    reloaded = AutoModelForCausalLM.from_pretrained(smol["dir"])  # plain transformers, safetensors
    ids = torch.tensor([_chat_ids(tokenizer, QUESTION)])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)
    answer, truncated = _answer(model, tokenizer)
    assert "Paris" in answer and answer.endswith("<|im_end|>") and not truncated


def test_prompts_are_tokenised_as_the_chat_template(smol, tmp_path):
    tokenizer, model = smol["tokenizer"], smol["model"]
    multi_turn = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Sky color?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Name a color."}) + "\n" + json.dumps({"messages": multi_turn}) + "\n")
    config = DistillConfig(student="s", teacher="t", prompts=str(path), chat_template=True, max_new_tokens=8)
    plain, chat = file_examples(str(path), tokenizer, model, config)
    assert plain.prompt_ids == _chat_ids(tokenizer, [{"role": "user", "content": "Name a color."}])
    assert chat.prompt_ids == _chat_ids(tokenizer, multi_turn)


def test_sampling_stops_at_every_eos_and_records_the_policys_logprobs(smol):
    tokenizer, model = smol["tokenizer"], smol["model"]
    greedy = HFSampler(model, tokenizer, 16).sample([_chat_ids(tokenizer, QUESTION)], greedy=True).completion_ids[0]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [saved, greedy[1]]  # a second end-of-turn id, listed as instruct models do
    try:
        cut = HFSampler(model, tokenizer, 16).sample([_chat_ids(tokenizer, QUESTION)], greedy=True)
    finally:
        model.generation_config.eos_token_id = saved
    assert cut.completion_ids[0] == greedy[:2] and not cut.truncated[0]
    torch.manual_seed(0)
    sampled = HFSampler(model, tokenizer, 10).sample(
        [_chat_ids(tokenizer, [{"role": "user", "content": p}]) for p in CHAT_PROMPTS[:2]]
    )
    with torch.no_grad():
        for prompt, completion, recorded in zip(
            sampled.prompt_ids, sampled.completion_ids, sampled.completion_logprobs
        ):
            ids = torch.tensor([prompt + completion])
            fresh = token_logprobs(model, ids, torch.ones_like(ids))[0][0, len(prompt) :]
            assert (fresh - torch.tensor(recorded)).abs().max() < 1e-4


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sft_on_messages_trains_the_rendered_turn(smol, tmp_path):
    """Into a GGUF model: trained from the .gguf file, saved as safetensors."""
    from transformers import AutoModelForCausalLM

    from mentor.recipes.sft import run_sft

    tokenizer = smol["tokenizer"]
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in [("Name a color.", "Blue."), ("What is 2+3?", "5."), ("Say hi.", "Hi!")]
    ]
    data = _write_jsonl(tmp_path / "sft.jsonl", rows)
    config = SFTConfig(
        model=smol["gguf"],
        data=data,
        steps=2,
        batch_size=2,
        group_size=1,
        lora_rank=8,
        learning_rate=1e-4,
        output_dir=str(tmp_path / "sft"),
        quiet=True,
    )
    trainer, history = run_sft(config)
    example = trainer.stream.examples[0]
    rendered = tokenizer.apply_chat_template(rows[0]["messages"], tokenize=False)
    assert tokenizer.decode(example.prompt_ids + example.completion_ids) + "\n" == rendered
    assert example.completion_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "final")
    assert "Paris" in _answer(final, load_tokenizer(str(tmp_path / "sft" / "final")))[0]


def test_opd_self_distillation_with_lora_survives_a_kill(smol, tmp_path):
    """Teacher: the GGUF model; student: the same model with LoRA. Killed after step 2, resumed, finished."""
    from transformers import AutoModelForCausalLM

    prompts = _write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in CHAT_PROMPTS])
    out, flag = tmp_path / "opd", tmp_path / "paused"
    args = [
        "distill",
        "--student",
        smol["dir"],
        "--teacher",
        smol["gguf"],
        "--prompts",
        prompts,
        "--chat-template",
        "--lora-rank",
        "8",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "8",
        "--save-every",
        "1",
        "--learning-rate",
        "1e-5",
        "--output-dir",
        str(out),
        "--quiet",
    ]
    first = start_driven(args, PAUSE_FLAG=flag, PAUSE_BEFORE_STEP=2)
    kill_when_paused(first, flag)
    assert not (out / "final").exists()
    succeeds(start_driven(args))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:  # fresh samples, one substep: the importance ratio is exactly 1 (fp32)
        assert abs(record["ratio_mean"] - 1) < 1e-4 and record["ratio_max"] < 1 + 1e-3, record
        assert abs(record["reverse_kl"]) < 0.05
    assert abs(records[0]["reverse_kl"]) < 1e-3  # the student starts as the teacher (GGUF vs its safetensors copy)
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    answer, truncated = _answer(final, load_tokenizer(str(out / "final")))
    assert "Paris" in answer and not truncated


def test_bfloat16_model_keeps_float32_logprobs(smol, tmp_path):
    from mentor.recipes.distill import run_distill

    model = load_model(smol["dir"], "bfloat16")
    tokenizer = smol["tokenizer"]
    torch.manual_seed(0)
    sampled = HFSampler(model, tokenizer, 8).sample([_chat_ids(tokenizer, QUESTION)])
    ids = torch.tensor([sampled.prompt_ids[0] + sampled.completion_ids[0]])
    with torch.no_grad():
        fresh = token_logprobs(model, ids, torch.ones_like(ids))[0]
    assert fresh.dtype == torch.float32
    gap = (fresh[0, len(sampled.prompt_ids[0]) :] - torch.tensor(sampled.completion_logprobs[0])).abs()
    assert gap.mean() < 0.1  # bf16 rounding (KV-cache vs full pass), not a different distribution
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in CHAT_PROMPTS[:2]])
    config = DistillConfig(
        student=smol["dir"],
        teacher=smol["dir"],
        prompts=prompts,
        chat_template=True,
        dtype="bfloat16",
        lora_rank=8,
        steps=1,
        batch_size=2,
        group_size=2,
        max_new_tokens=6,
        output_dir=str(tmp_path / "bf16"),
        quiet=True,
    )
    _, history = run_distill(config)
    for record in history:
        assert all(torch.isfinite(torch.tensor(record[k])) for k in ("loss", "reverse_kl", "grad_norm"))
        assert abs(record["ratio_mean"] - 1) < 0.05
    assert os.path.exists(tmp_path / "bf16" / "final" / "model.safetensors")
