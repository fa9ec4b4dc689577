"""Where turns start and end, what the sampler draws from, and what the update sees: the defects that only
real models' configs (dropout, generation configs, EOS lists, chat templates, missing pad) expose."""

from __future__ import annotations

import json

import pytest
import torch
from real_assets import SHARED_REAL

from mentor.config import DistillConfig, build_config
from mentor.data.prompts import Example, encode_examples
from mentor.errors import MentorError
from mentor.models.chat import assistant_turn_ids, describe_differences, stop_token_ids
from mentor.models.loading import load_model, load_tokenizer, save_pretrained
from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config
from mentor.sample.hf import HFSampler
from mentor.update.logprobs import token_logprobs

QWEN3_TOKENIZER = SHARED_REAL / "tokenizers" / "qwen3"


def _tiny_dir(path, generation: dict | None = None, seed: int = 0):
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(
        tiny_config("qwen3", len(tokenizer), 32, 2, 4, tokenizer=tokenizer, max_positions=64), seed=seed
    )
    for key, value in (generation or {}).items():
        setattr(model.generation_config, key, value)
    save_tiny(model, tokenizer, path)
    return str(path)


@torch.no_grad()
def _recorded_vs_forward(model, tokenizer, sampled) -> float:
    """Largest gap between the sampler's recorded log-probs and a fresh forward pass over the same tokens."""
    worst = 0.0
    for prompt, completion, recorded in zip(sampled.prompt_ids, sampled.completion_ids, sampled.completion_logprobs):
        ids = torch.tensor([prompt + completion])
        fresh = token_logprobs(model, ids, torch.ones_like(ids))[0][0, len(prompt) :]
        worst = max(worst, float((fresh - torch.tensor(recorded)).abs().max()))
    return worst


def test_sampler_ignores_the_models_generation_config(tmp_path):
    """A checkpoint's repetition penalty, min length and suppressed tokens must not bend the recorded draw."""
    tokenizer = build_char_tokenizer()
    suppressed = [tokenizer.convert_tokens_to_ids(c) for c in "0123"]
    path = _tiny_dir(
        tmp_path / "m",
        {"repetition_penalty": 1.8, "min_new_tokens": 6, "suppress_tokens": suppressed, "no_repeat_ngram_size": 2},
    )
    model, tokenizer = load_model(path), load_tokenizer(path)
    assert model.generation_config.repetition_penalty == 1.8  # the config is really there
    torch.manual_seed(0)
    sampled = HFSampler(model, tokenizer, max_new_tokens=12).sample([tokenizer("12+3=")["input_ids"]] * 8)
    assert _recorded_vs_forward(model, tokenizer, sampled) < 1e-4
    drawn = {t for c in sampled.completion_ids for t in c}
    assert drawn & set(suppressed), "suppress_tokens from the model's config leaked into sampling"
    assert model.generation_config.repetition_penalty == 1.8  # and it is restored afterwards


def test_sampling_stops_at_every_id_of_the_eos_list(tmp_path):
    tokenizer = build_char_tokenizer()
    digits = [tokenizer.convert_tokens_to_ids(c) for c in "0123456789"]
    path = _tiny_dir(tmp_path / "m", {"eos_token_id": [tokenizer.eos_token_id] + digits})
    model, tokenizer = load_model(path), load_tokenizer(path)
    assert stop_token_ids(tokenizer, model) == [tokenizer.eos_token_id] + digits
    torch.manual_seed(0)
    sampled = HFSampler(model, tokenizer, max_new_tokens=40).sample([tokenizer("7*8=")["input_ids"]] * 16)
    stops = set(stop_token_ids(tokenizer, model))
    ended_by_list = 0
    for completion, cut in zip(sampled.completion_ids, sampled.truncated):
        assert not stops & set(completion[:-1]), "a completion ran past an end-of-turn token"
        assert cut == (completion[-1] not in stops)
        ended_by_list += completion[-1] in digits
    assert ended_by_list >= 8  # most rows stopped at a generation-config EOS that is not tokenizer.eos_token


def test_dropout_is_off_for_on_policy_log_probs(tmp_path, prompts_file):
    """GPT-2 (dropout 0.1): on fresh samples the first substep's importance ratio must be exactly 1."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from mentor.recipes.distill import run_distill

    tokenizer = build_char_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = save_tiny(GPT2LMHeadModel(config), tokenizer, tmp_path / "gpt2")
    config = DistillConfig(
        student=str(path),
        teacher=str(path),
        prompts=prompts_file,
        steps=2,
        batch_size=3,
        group_size=2,
        max_new_tokens=8,
        output_dir=str(tmp_path / "run"),
        quiet=True,
    )
    _, history = run_distill(config)
    for record in history:
        assert abs(record["ratio_mean"] - 1) < 1e-5 and abs(record["ratio_max"] - 1) < 1e-5, record


def test_sft_on_messages_ends_the_turn_as_the_template_does():
    """Qwen3's template: the target is `<think>...</think>` + content + `<|im_end|>`, not content + EOS."""
    if not QWEN3_TOKENIZER.exists():
        pytest.skip(f"real tokenizer not found at {QWEN3_TOKENIZER}")
    tokenizer = load_tokenizer(str(QWEN3_TOKENIZER))
    tokenizer.eos_token = "<|endoftext|>"  # as in Qwen3's base tokenizer: EOS is not the turn end
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stops = [im_end, tokenizer.eos_token_id]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    [encoded], _ = encode_examples(
        tokenizer, [Example(messages=messages[:-1], completion="4")], need_completion=True, stop_ids=stops
    )
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(encoded.prompt_ids + encoded.completion_ids) + "\n" == rendered
    assert encoded.completion_ids[-1] == im_end
    assert encoded.prompt_ids == tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True)["input_ids"]


def test_assistant_turn_without_a_stop_token_is_one_line():
    tokenizer = build_char_tokenizer()
    with pytest.raises(MentorError, match="end-of-turn"):
        assistant_turn_ids(tokenizer, [{"role": "user", "content": "1+1="}], "2", stop_ids=[3])


def test_task_prompts_and_eval_use_the_chat_template(tiny_dirs, monkeypatch):
    from mentor.evaluation.accuracy import evaluate
    from mentor.recipes.common import task_examples
    from mentor.tasks.registry import get_task

    tokenizer = load_tokenizer(tiny_dirs["student"])
    task = get_task("arithmetic")
    user, assistant = tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])
    [plain] = task_examples(task, tokenizer, 1, seed=0)
    [chat] = task_examples(task, tokenizer, 1, seed=0, chat_template=True)
    assert user not in plain.prompt_ids
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": plain.text}], add_generation_prompt=True)
    assert chat.prompt_ids == rendered["input_ids"]
    assert chat.completion_ids[-1] == tokenizer.eos_token_id and assistant in chat.prompt_ids
    seen = []
    monkeypatch.setattr(
        HFSampler,
        "sample",
        lambda self, ids, greedy=False: seen.extend(ids) or type("S", (), {"completion_ids": [[]] * len(ids)})(),
    )
    evaluate(None, tokenizer, task, task.test_problems(2), 4, chat_template=True)
    assert all(ids[:2] == [tokenizer.bos_token_id, user] and ids[-1] == assistant for ids in seen)


def test_mismatched_turns_are_reported():
    a = build_char_tokenizer()
    b = build_char_tokenizer(chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert describe_differences(a, a, [2], [2]) == []
    problems = describe_differences(a, b, [2], [2, 5])
    assert len(problems) == 2 and "chat templates differ" in problems[0] and "[2, 5]" in problems[1]


def test_borrowed_pad_token_is_not_saved(tmp_path, tiny_dirs):
    tokenizer = build_char_tokenizer()
    tokenizer.pad_token = None
    source = tmp_path / "nopad"
    save_tiny(load_model(tiny_dirs["student"]), tokenizer, source)
    loaded = load_tokenizer(str(source))
    assert loaded.pad_token_id == loaded.eos_token_id  # usable for batching
    save_pretrained(load_model(str(source)), loaded, tmp_path / "final")
    saved = json.loads((tmp_path / "final" / "tokenizer_config.json").read_text())
    assert saved.get("pad_token") is None
    assert loaded.pad_token_id == loaded.eos_token_id  # still usable after saving


def test_truncated_sampling_is_refused_for_training():
    for flags in ({"top_k": 5}, {"top_p": 0.9}):
        with pytest.raises(MentorError, match="top-k/--top-p"):
            build_config(DistillConfig, student="s", teacher="t", task="arithmetic", **flags)


def test_a_folder_of_gguf_files_names_the_file_to_pass(tmp_path):
    (tmp_path / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    with pytest.raises(MentorError, match=r"holds GGUF files.*pass the file itself.*model\.Q4_K_M\.gguf"):
        load_tokenizer(str(tmp_path), "student")
