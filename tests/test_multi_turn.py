"""Multi-turn rollouts (--env): environments, the calculator, the template's own tool turns, which tokens are
trained and graded, and RL/OPD runs, on Qwen3's real tokenizer and template with a tiny model from its config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mentor.data.prompts import EncodedExample
from mentor.envs import ENVIRONMENTS, EnvReply, EnvSpec, get_env
from mentor.envs.calculator import Calculator, calculate
from mentor.errors import MentorError
from mentor.sample.base import SampledBatch, sample_groups
from mentor.sample.hf import HFSampler
from mentor.sample.multi_turn import MultiTurnSampler, render
from mentor.score.base import score_with_teacher
from mentor.score.local import LocalTeacher

QWEN3 = Path(__file__).resolve().parents[1] / ".." / "shared" / "real" / "tokenizers" / "qwen3"
needs_qwen3 = pytest.mark.skipif(not QWEN3.exists(), reason="Qwen3's tokenizer is not in ../shared/real")


@pytest.fixture(scope="module")
def qwen3_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN3))


def tiny_qwen3(tokenizer, seed: int, chatty: list[int]):
    """A Qwen3 model from its config at the tokenizer's vocabulary, whose head (given a bias) all but forbids
    every token outside ``chatty``: its turns end at <|im_end|> after a few tokens instead of running to
    --max-new-tokens, so conversations really take several turns. Log-probs stay the model's own."""
    from mentor.models.tiny import build_tiny_model, tiny_config

    config = tiny_config("qwen3", len(tokenizer), 16, 1, 2, max_positions=512)
    config.tie_word_embeddings = False
    config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.pad_token_id = tokenizer.pad_token_id
    model = build_tiny_model(config, seed=seed)
    head = torch.nn.Linear(16, len(tokenizer), bias=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        head.weight.normal_(0, 0.5)
        head.bias.fill_(-40.0)
        head.bias[chatty] = 0.0
    model.lm_head = head
    model.generation_config.eos_token_id = config.eos_token_id
    return model.eval()


def chatty_ids(tokenizer) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return ids + [tokenizer.encode(t)[0] for t in ("1", "2", "3", "+", " ")]


class Scripted:
    """A deterministic environment: a tool result, then a user turn, then done."""

    tools = None

    def __init__(self, tokenizer):
        self.replies = [EnvReply("tool_result", "7"), EnvReply("user", "and then?"), EnvReply("done", reward=1.0)]

    def reset(self, example):
        return [{"role": "user", "content": example.text}]

    def step(self, turn):
        return self.replies.pop(0)


@pytest.fixture()
def scripted(monkeypatch):
    monkeypatch.setitem(ENVIRONMENTS, "scripted", EnvSpec("scripted", Scripted, "test"))
    return ENVIRONMENTS["scripted"]


class ScriptedSampler:
    """Writes fixed turns (token ids of each text, then <|im_end|>), log-prob -1 each: the template checks."""

    def __init__(self, tokenizer, turns: list[str]):
        self.tokenizer, self.turns, self.calls = tokenizer, list(turns), 0
        self.stop_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]

    def sample(self, prompt_ids, greedy=False):
        ids = self.tokenizer.encode(self.turns[self.calls]) + self.stop_ids
        self.calls += 1
        return SampledBatch(
            [list(p) for p in prompt_ids],
            [list(ids) for _ in prompt_ids],
            [[-1.0] * len(ids) for _ in prompt_ids],
            [False] * len(prompt_ids),
        )


def example(text="What is 17*23+4?", answer="395"):
    return EncodedExample(prompt_ids=[0], text=text, reference=answer)


# --- the calculator ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "expression, value",
    [("3*(4+5)/2", "13.5"), ("2**10", "1024"), ("7//2", "3"), ("-(1.5+2.5)", "-4"), ("2^3", "8"), ("10 % 4", "2")],
)
def test_calculator_evaluates_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        '__import__("os").system("ls")',
        "open('x')",
        "x + 1",
        "[1, 2]",
        "(1).__class__",
        "lambda: 1",
        "10**10**10",
        "1/0",
        "'a' * 3",
        "True + 1",
        "9" * 40 + "*" + "9" * 40,
        "1;2",
        "",
    ],
)
def test_calculator_refuses_anything_but_arithmetic_in_one_line(expression):
    reply = calculate(expression)
    assert reply.startswith("error: ") and "\n" not in reply


def test_calculator_env_answers_tool_calls_and_grades_the_final_answer(qwen3_tokenizer):
    env = Calculator(qwen3_tokenizer)
    assert env.format == "hermes" and env.tools[0]["function"]["name"] == "calculator"
    env.reset(example())
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17*23+4"}}\n</tool_call>'
    assert env.step(call) == EnvReply("tool_result", "395")
    assert env.step('<tool_call>{"name": "python", "arguments": {}}</tool_call>').content.startswith("error")
    assert env.step("<tool_call>not json</tool_call>").content.startswith("error")
    assert env.step("The answer is 395.") == EnvReply("done", reward=1.0)
    assert env.step("The answer is 394.").reward == 0.0


def test_calculator_plain_format_for_templates_without_tools():
    from mentor.models.tiny import build_char_tokenizer

    env = Calculator(build_char_tokenizer())
    env.reset(example())
    assert env.format == "plain" and env.tools is None
    assert env.step("calc: 17*23+4") == EnvReply("tool_result", "395")
    assert env.step("answer: 395").kind == "done"


def test_unknown_env_is_one_line():
    with pytest.raises(MentorError, match="--env 'nope' is unknown: choose one of calculator"):
        get_env("nope")


# --- the template's own tool turns ------------------------------------------------------------------------------
@needs_qwen3
def test_tool_turns_are_the_templates_own_rendering_and_only_student_tokens_are_trained(qwen3_tokenizer):
    tok = qwen3_tokenizer
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17*23+4"}}\n</tool_call>'
    final = "<think>\n\n</think>\n\nThe answer is 395."  # the template writes the last turn's empty think block
    sampler = MultiTurnSampler(
        ScriptedSampler(tok, [call, final]), tok, get_env("calculator"), max_turns=4, max_new_tokens=64
    )
    out = sampler.sample_examples([example()])
    tools = Calculator(tok).tools
    messages = [
        {"role": "user", "content": example().text},
        {"role": "assistant", "content": call},
        {"role": "tool", "content": "395"},
        {"role": "assistant", "content": final},
    ]
    assert out.prompt_ids[0] == render(tok, messages[:1], tools, True)
    ids = out.prompt_ids[0] + out.completion_ids[0]
    # the whole conversation is what Qwen3's template renders (tool result inside <tool_response>)
    assert ids == render(tok, messages, tools, False)[: len(ids)]
    assert "<tool_response>\n395\n</tool_response>" in tok.decode(out.completion_ids[0])
    # the mask is 1 on exactly the student's sampled tokens, in order
    student = [t for t, m in zip(out.completion_ids[0], out.completion_mask[0]) if m == 1.0]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert student == tok.encode(call) + [im_end] + tok.encode(final) + [im_end]
    assert all((lp == -1.0) == (m == 1.0) for lp, m in zip(out.completion_logprobs[0], out.completion_mask[0]))
    assert out.answers == [final] and out.turns == [2] and out.env_rewards == [1.0]
    assert out.truncated == [False]


@needs_qwen3
def test_max_turns_ends_on_the_students_turn(qwen3_tokenizer, scripted):
    tok = qwen3_tokenizer
    sampler = MultiTurnSampler(ScriptedSampler(tok, ["1+2", "3"]), tok, scripted, max_turns=2, max_new_tokens=8)
    out = sampler.sample_examples([example()])
    assert out.turns == [2] and out.completion_mask[0][-1] == 1.0 and out.answers == ["3"]
    assert tok.decode(out.completion_ids[0]).count("<tool_response>") == 1


# --- teacher, importance ratio: forward passes over the whole conversation --------------------------------------
def forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    out = torch.zeros(len(ids))
    out[1:] = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
    return out


@needs_qwen3
def test_teacher_and_sampler_logprobs_are_forward_passes_over_the_whole_conversation(qwen3_tokenizer, scripted):
    tok = qwen3_tokenizer
    student, teacher = tiny_qwen3(tok, 0, chatty_ids(tok)), tiny_qwen3(tok, 1, chatty_ids(tok))
    sampler = MultiTurnSampler(
        HFSampler(student, tok, max_new_tokens=12),
        tok,
        scripted,
        max_turns=3,
        max_new_tokens=12,
        max_length=512,
        model=student,
    )
    torch.manual_seed(0)
    batch, _ = sample_groups(sampler, tok, [example(), example("What is 2+2?", "4")], group_size=2)
    assert (batch.loss_mask.sum(1) > 0).all()
    assert int((batch.loss_mask[:, :] * (1 - batch.attention_mask)).sum()) == 0
    env_tokens = ((batch.attention_mask == 1) & (batch.loss_mask == 0)).sum(1) - batch.prompt_lengths
    assert (env_tokens > 0).any(), "no conversation took a second turn"
    assert (batch.sampler_logprobs[batch.loss_mask == 0] == 0).all()
    teacher_logprobs = score_with_teacher(LocalTeacher(teacher, tok.pad_token_id), batch)
    for i in range(len(batch)):
        n = int(batch.attention_mask[i].sum())
        ids = batch.input_ids[i, :n].tolist()
        mask = batch.loss_mask[i, :n].bool()
        # the teacher grades each student token with everything before it (tool results included) in context
        torch.testing.assert_close(
            teacher_logprobs[i, :n][mask], forward_logprobs(teacher, ids)[mask], atol=1e-4, rtol=0
        )
        # importance ratio 1 with one substep: the sampler's log-probs are the trainer's forward pass
        torch.testing.assert_close(
            batch.sampler_logprobs[i, :n][mask], forward_logprobs(student, ids)[mask], atol=1e-4, rtol=0
        )


# --- RL and OPD run on it ---------------------------------------------------------------------------------------
@needs_qwen3
@pytest.mark.parametrize("env", ["scripted", "calculator"])
def test_opd_and_rl_run_multi_turn(qwen3_tokenizer, scripted, tmp_path, env):
    from mentor.config import DistillConfig, RLConfig
    from mentor.recipes.distill import run_distill
    from mentor.recipes.rl import run_rl

    tok = qwen3_tokenizer
    examples = [example(), example("What is 2+2?", "4"), example("What is 3+1?", "4")]
    common = dict(
        batch_size=2,
        group_size=2,
        max_new_tokens=10,
        steps=2,
        learning_rate=1e-2,
        quiet=True,
        seed=3,
        env=env,
        max_turns=3,
        prompts="given-from-python.jsonl",
    )
    config = DistillConfig(student="student", teacher="teacher", output_dir=str(tmp_path / "opd"), **common)
    _, history = run_distill(
        config,
        student=tiny_qwen3(tok, 0, chatty_ids(tok)),
        tokenizer=tok,
        teacher=tiny_qwen3(tok, 1, chatty_ids(tok)),
        teacher_tokenizer=tok,
        examples=examples,
    )
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history if "loss" in h)
    config = RLConfig(model="student", grader="numeric", output_dir=str(tmp_path / "rl"), **common)
    _, history = run_rl(config, model=tiny_qwen3(tok, 0, chatty_ids(tok)), tokenizer=tok, examples=examples)
    assert len(history) == 2


def test_env_flags_are_validated():
    from mentor.config import DistillConfig

    with pytest.raises(MentorError, match="--env 'abacus' is unknown"):
        DistillConfig(student="s", teacher="t", prompts="p.jsonl", env="abacus").validate()
    with pytest.raises(MentorError, match="--max-turns must be at least 1"):
        DistillConfig(student="s", teacher="t", prompts="p.jsonl", env="calculator", max_turns=0).validate()


@needs_qwen3
def test_a_stopped_and_resumed_multi_turn_run_is_bitwise_identical(qwen3_tokenizer, scripted, tmp_path):
    """In-process (not the SIGKILL driver of test_resume.py, whose CLI cannot load this biased-head model): a run
    stopped after its step-2 checkpoint and resumed equals an uninterrupted one, weights and metrics."""
    from mentor.config import DistillConfig
    from mentor.recipes.distill import run_distill

    tok = qwen3_tokenizer
    examples = [example(), example("What is 2+2?", "4"), example("What is 3+1?", "4")]

    def run(out, steps, resume=False):
        config = DistillConfig(
            student="student",
            teacher="teacher",
            output_dir=str(out),
            batch_size=2,
            group_size=2,
            max_new_tokens=10,
            steps=steps,
            save_every=2,
            learning_rate=1e-2,
            quiet=True,
            seed=5,
            env="scripted",
            max_turns=3,
            prompts="given-from-python.jsonl",
            resume=resume,
        )
        student = tiny_qwen3(tok, 0, chatty_ids(tok))
        trainer, history = run_distill(
            config,
            student=student,
            tokenizer=tok,
            teacher=tiny_qwen3(tok, 1, chatty_ids(tok)),
            teacher_tokenizer=tok,
            examples=examples,
        )
        return student.state_dict(), history

    expected, full = run(tmp_path / "full", 4)
    run(tmp_path / "stopped", 2)
    restored, resumed = run(tmp_path / "stopped", 4, resume=True)
    initial = tiny_qwen3(tok, 0, chatty_ids(tok)).state_dict()
    assert any(not torch.equal(initial[k], expected[k]) for k in expected)  # training moved the weights
    assert all(torch.equal(restored[k], expected[k]) for k in expected)
    assert len(resumed) >= 2 and [h.get("step") for h in resumed[-2:]] == [h.get("step") for h in full[-2:]]
    volatile = ("time_", "tokens_per_second")
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith(volatile)}  # noqa: E731
    assert [strip(h) for h in resumed[-2:]] == [strip(h) for h in full[-2:]]
