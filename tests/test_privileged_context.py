"""Privileged-context distillation: the teacher reads its own prompt (documents, the answer, a system prompt)
before the student's completion. Every check compares against a direct forward pass of the teacher on
``teacher_prompt_ids + completion_ids``."""

import json

import pytest
import torch
import torch.nn.functional as F

from mentor.algorithms.opd import OnPolicyDistillation
from mentor.config import DistillConfig
from mentor.data.prompts import (
    DEFAULT_CONTEXT_TEMPLATE,
    EncodedExample,
    Example,
    TeacherPrompts,
    check_context_template,
    encode_examples,
    fill_context,
    parse_example,
    read_context,
)
from mentor.errors import MentorError
from mentor.models.chat import chat_ids
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.distill import run_distill
from mentor.report.samples import sample_records
from mentor.rollout import add_teacher_prompts
from mentor.sample.base import SampledBatch, to_rollout_batch
from mentor.score.base import score_with_teacher
from mentor.score.http import HTTPTeacher
from mentor.score.local import LocalTeacher
from mentor.serve import TeacherServer
from mentor.update.divergence import TeacherInputs, generalized_jsd, reverse_kl
from mentor.update.logprobs import PolicyLogprobs

STUDENT_PROMPTS = [[1, 5, 6, 7], [1, 9, 10], [1, 11, 12, 13, 14]]
COMPLETIONS = [[20, 21, 22, 2], [23, 24, 25, 26, 27], [28, 2]]
# longer than the student's, shorter, and none (the teacher reads the student's prompt)
TEACHER_PROMPTS = [[1, 30, 31, 32, 33, 34, 35, 5, 6, 7], [1, 10], None]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return (load_model(tiny_dirs["teacher"]), load_model(tiny_dirs["student"]), load_tokenizer(tiny_dirs["teacher"]))


def _batch(teacher_prompts=TEACHER_PROMPTS):
    sampled = SampledBatch(
        STUDENT_PROMPTS,
        COMPLETIONS,
        [[-1.0 - 0.1 * j for j in range(len(c))] for c in COMPLETIONS],
        [False] * len(COMPLETIONS),
    )
    batch = to_rollout_batch(sampled, [0, 1, 2], pad_id=0)
    add_teacher_prompts(batch, teacher_prompts, pad_id=0)
    return batch


def _teacher_prefix(i):
    return TEACHER_PROMPTS[i] if TEACHER_PROMPTS[i] is not None else STUDENT_PROMPTS[i]


@torch.no_grad()
def _direct_logprobs(model, prefix, completion):
    """Log-softmax of ``model`` at each completion token, by one plain forward of prefix + completion."""
    ids = torch.tensor([prefix + completion])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    return F.log_softmax(logits[len(prefix) - 1 : len(prefix) + len(completion) - 1], dim=-1)


def _completion_slice(i):
    return slice(len(STUDENT_PROMPTS[i]), len(STUDENT_PROMPTS[i]) + len(COMPLETIONS[i]))


def _check_sampled(scored, teacher_model, batch):
    for i, completion in enumerate(COMPLETIONS):
        expected = _direct_logprobs(teacher_model, _teacher_prefix(i), completion)
        expected = expected.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(scored[i, _completion_slice(i)], expected, atol=1e-5)
        assert float((scored[i] * (1 - batch.loss_mask[i])).abs().sum()) == 0  # nothing off the completion


# --- data formats ----------------------------------------------------------------------------------------------
def test_records_carry_the_teachers_prompt_and_the_template_fills_a_context(tiny_dirs):
    tokenizer = load_tokenizer(tiny_dirs["teacher"])
    teacher = TeacherPrompts(tokenizer, context="the flag", template="c: {context}; q: {prompt}")

    def ids(record, chat=False):
        return teacher.encode(parse_example(record, "x:1"), chat)

    text = lambda s: list(tokenizer(s)["input_ids"])  # noqa: E731
    assert ids({"prompt": "1+1=", "teacher_prompt": "a is 2. 1+1="}) == text("a is 2. 1+1=")
    assert ids({"prompt": "1+1=", "context": "a is 2"}) == text("c: a is 2; q: 1+1=")
    assert ids({"prompt": "1+1="}) == text("c: the flag; q: 1+1=")  # the flag, for records without their own
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "2?"},
    ]
    teacher_messages = [{"role": "system", "content": "doc"}, {"role": "user", "content": "2?"}]
    assert ids({"messages": chat, "teacher_messages": teacher_messages}) == chat_ids(tokenizer, teacher_messages, True)
    filled = chat[:2] + [{"role": "user", "content": "c: a; q: 2?"}]  # the context goes into the last user turn
    assert ids({"messages": chat, "context": "a"}) == chat_ids(tokenizer, filled, True)
    # teacher_prompt is encoded as the student's prompt is: in the chat template when that one is
    assert ids({"prompt": "1+1=", "teacher_prompt": "2"}, chat=True) == chat_ids(
        tokenizer, [{"role": "user", "content": "2"}], True
    )
    assert TeacherPrompts(tokenizer).encode(parse_example({"prompt": "1+1="}, "x:1")) is None
    # braces in the texts stay as they are; one pass, so a context holding "{prompt}" is not filled again
    assert fill_context(DEFAULT_CONTEXT_TEMPLATE, "{prompt} {x}", "q") == "{prompt} {x}\n\nq"
    assert "context" not in parse_example({"prompt": "p", "context": "c"}, "x:1").meta


@pytest.mark.parametrize(
    "record, words",
    [
        ({"prompt": "p", "context": "c", "teacher_prompt": "t"}, "not 'teacher_prompt' and 'context'"),
        ({"prompt": "p", "teacher_prompt": "  "}, "'teacher_prompt' must be a non-empty string"),
        ({"prompt": "p", "context": 3}, "'context' must be a non-empty string"),
        ({"prompt": "p", "teacher_messages": [{"role": "user"}]}, "every message needs string 'role' and 'content'"),
        (
            {
                "prompt": "p",
                "teacher_messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            },
            "ends with an assistant turn",
        ),
    ],
)
def test_malformed_teacher_fields_are_one_line(record, words):
    with pytest.raises(MentorError, match=words) as error:
        parse_example(record, "f.jsonl:4")
    assert "\n" not in str(error.value) and str(error.value).startswith("f.jsonl:4")


def test_teacher_context_flag_reads_a_file_or_takes_text(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("Policy 7: refunds within 30 days.\n")
    assert read_context(str(path)) == "Policy 7: refunds within 30 days.\n"
    assert read_context("Answer as a pirate.") == "Answer as a pirate."
    with pytest.raises(MentorError, match="looks like a path but no such file exists"):
        read_context(str(tmp_path / "missing.txt"))
    with pytest.raises(MentorError, match=r"needs \{prompt\}"):
        check_context_template("{context} only")
    with pytest.raises(MentorError, match="--teacher-context-template needs"):
        DistillConfig(student="s", teacher="self", prompts="p.jsonl", teacher_context_template="{prompt}")


# --- the teacher's log-probs are those of the completion after the teacher's own prompt -------------------------
def test_sampled_in_process_teacher_scores_the_completion_after_its_own_prompt(models):
    teacher_model, _, tokenizer = models
    batch = _batch()
    assert batch.teacher_input_ids.shape[1] == max(len(_teacher_prefix(i)) + len(c) for i, c in enumerate(COMPLETIONS))
    _check_sampled(score_with_teacher(LocalTeacher(teacher_model, 0, batch_size=2), batch), teacher_model, batch)


def test_sampled_served_teacher_is_sent_its_own_prompt_and_the_completion(models):
    teacher_model, _, tokenizer = models
    batch = _batch()
    with TeacherServer(teacher_model, tokenizer, port=0) as running:
        client = HTTPTeacher(running.url, batch_size=2)
        sent = []
        original = client.compute_logprobs
        client.compute_logprobs = lambda seqs, score_from=None: sent.extend(seqs) or original(seqs, score_from)
        scored = score_with_teacher(client, batch)
    assert sent == [_teacher_prefix(i) + c for i, c in enumerate(COMPLETIONS)]
    _check_sampled(scored, teacher_model, batch)


def _opd(teacher, divergence, k=5):
    return OnPolicyDistillation(None, teacher, None, group_size=1, temperature=1.0, divergence=divergence, kl_top_k=k)


@pytest.mark.parametrize("served", [False, True])
def test_top_k_is_the_teachers_top_k_after_its_own_prompt(models, served):
    teacher_model, _, tokenizer = models
    batch, k = _batch(), 5
    if served:
        with TeacherServer(teacher_model, tokenizer, port=0) as running:
            top = _opd(HTTPTeacher(running.url, batch_size=2), "top_k", k)._teacher_top_k(batch)
    else:
        top = _opd(LocalTeacher(teacher_model, 0, batch_size=2), "top_k", k)._teacher_top_k(batch)
    assert top.ids.shape == (*batch.input_ids.shape, k)
    for i, completion in enumerate(COMPLETIONS):
        expected = _direct_logprobs(teacher_model, _teacher_prefix(i), completion)
        values, ids = expected.topk(k, dim=-1)
        span = _completion_slice(i)
        assert torch.equal(top.ids[i, span], ids)
        assert torch.allclose(top.logprobs[i, span], values, atol=1e-5)
        own = expected.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(top.token_logprobs[i, span], own, atol=1e-5)
        assert float(top.logprobs[i].abs().sum()) == pytest.approx(float(top.logprobs[i, span].abs().sum()))


def test_full_and_jsd_realign_the_teachers_positions_by_the_completions_offset(models):
    teacher_model, student_model, _ = models
    batch = _batch()
    inputs = TeacherInputs.of(batch)
    positions = batch.loss_mask > 0
    kl = reverse_kl(
        student_model,
        teacher_model,
        batch.input_ids,
        batch.attention_mask,
        positions=positions,
        teacher_inputs=inputs,
        chunk_size=3,
    )
    jsd = generalized_jsd(
        student_model,
        teacher_model,
        batch.input_ids,
        batch.attention_mask,
        beta=0.3,
        positions=positions,
        teacher_inputs=inputs,
        chunk_size=3,
    )
    # the algorithm's policy forward (what the trainer runs) computes the same term from a micro-batch
    opd = _opd(LocalTeacher(teacher_model, 0), "full")
    term = PolicyLogprobs(student_model)(
        batch.input_ids, batch.attention_mask, positions=positions, **opd.forward_options(batch)
    ).term
    for i, completion in enumerate(COMPLETIONS):
        p = _direct_logprobs(teacher_model, _teacher_prefix(i), completion)
        with torch.no_grad():
            q = _direct_logprobs(student_model, STUDENT_PROMPTS[i], completion)
        span = _completion_slice(i)
        expected_kl = (q.exp() * (q - p)).sum(-1)
        m = torch.logsumexp(torch.stack([q + torch.log(torch.tensor(0.7)), p + torch.log(torch.tensor(0.3))]), 0)
        expected_jsd = 0.3 * (p.exp() * (p - m)).sum(-1) + 0.7 * (q.exp() * (q - m)).sum(-1)
        assert torch.allclose(kl[i, span], expected_kl, atol=1e-5)
        assert torch.allclose(term[i, span].detach(), expected_kl, atol=1e-5)
        assert torch.allclose(jsd[i, span], expected_jsd, atol=1e-5)
    assert float((kl.detach() * ~positions).abs().sum()) == 0


def test_the_sample_log_asks_the_teacher_on_its_own_prompt(models):
    teacher_model, _, tokenizer = models
    batch = _batch()
    records = sample_records(1, batch, tokenizer, [0, 1, 2], LocalTeacher(teacher_model, 0))
    for i, record in enumerate(records):
        expected = _direct_logprobs(teacher_model, _teacher_prefix(i), COMPLETIONS[i])
        own = expected.gather(-1, torch.tensor(COMPLETIONS[i]).unsqueeze(-1)).squeeze(-1)
        assert record["teacher_logprobs"] == pytest.approx(own.tolist(), abs=1e-3)
        assert record["teacher_top1_ids"] == expected.argmax(-1).tolist()


# --- the student's side is untouched ----------------------------------------------------------------------------
class FixedSampler:
    """Writes COMPLETIONS whatever the prompt, and remembers what it was shown."""

    def __init__(self):
        self.shown = []

    def sample(self, prompt_ids):
        self.shown.append([list(p) for p in prompt_ids])
        completions = [COMPLETIONS[STUDENT_PROMPTS.index(list(p))] for p in prompt_ids]
        return SampledBatch(
            [list(p) for p in prompt_ids],
            completions,
            [[-0.5] * len(c) for c in completions],
            [False] * len(completions),
        )


def test_the_students_batch_and_importance_ratio_ignore_the_teachers_prompt(models, tiny_dirs):
    teacher_model, student_model, tokenizer = models
    batches = []
    for teacher_prompts in (TEACHER_PROMPTS, [None, None, None]):
        sampler = FixedSampler()
        opd = OnPolicyDistillation(
            sampler, LocalTeacher(teacher_model, tokenizer.pad_token_id), tokenizer, group_size=1, temperature=1.0
        )
        examples = [EncodedExample(p, teacher_prompt_ids=t) for p, t in zip(STUDENT_PROMPTS, teacher_prompts)]
        batch, metrics = opd.collect(examples)
        assert sampler.shown == [STUDENT_PROMPTS]  # the sampler never sees the teacher's prompt
        batches.append((batch, metrics))
    (private, private_metrics), (plain, plain_metrics) = batches
    for name in ("input_ids", "attention_mask", "loss_mask", "sampler_logprobs", "prompt_lengths", "group_ids"):
        assert torch.equal(getattr(private, name), getattr(plain, name)), name
    assert plain.teacher_input_ids is None and private.teacher_input_ids is not None
    assert private_metrics["teacher_tokens"] > plain_metrics["teacher_tokens"]
    assert private_metrics["sampled_tokens"] == plain_metrics["sampled_tokens"]
    # the policy forward (log pi, so the ratio pi / q) reads the student's tokens only
    policy = PolicyLogprobs(student_model)
    with torch.no_grad():
        ratios = [
            (policy(b.input_ids, b.attention_mask, positions=b.loss_mask > 0).logprobs - b.sampler_logprobs).exp()
            * b.loss_mask
            for b in (private, plain)
        ]
    assert torch.equal(*ratios)
    assert not torch.equal(private.teacher_logprobs, plain.teacher_logprobs)  # the teacher did read its prompt


# --- too long for the teacher -----------------------------------------------------------------------------------
def test_a_teacher_prompt_too_long_for_the_teachers_context_is_one_line(tiny_dirs, tmp_path, models):
    tokenizer = load_tokenizer(tiny_dirs["student"])
    teacher = TeacherPrompts(tokenizer, context="a long document " * 4, max_tokens=40)
    records = [Example(prompt="1+1="), Example(prompt="2+2=")]
    with pytest.raises(MentorError) as error:
        encode_examples(tokenizer, records, long_prompts="fail", teacher=teacher)
    assert "\n" not in str(error.value) and "example 1: the teacher's prompt has" in str(error.value)
    with pytest.raises(MentorError, match="all 2 prompts are too long, 2 of them the teacher's"):
        encode_examples(tokenizer, records, teacher=teacher)  # skipped, and then none is left: one line

    # from the command line's config: the teacher's context (64 tokens) minus --max-new-tokens
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "1+1=", "context": "x" * 60}) + "\n")
    config = DistillConfig(
        student=tiny_dirs["student"],
        teacher="self",
        prompts=str(prompts),
        long_prompts="fail",
        output_dir=str(tmp_path / "run"),
        steps=1,
        batch_size=1,
        group_size=1,
        max_new_tokens=8,
        quiet=True,
    )
    with pytest.raises(MentorError, match="over the 56 that its context leaves beside --max-new-tokens") as error:
        run_distill(config)
    assert "\n" not in str(error.value)

    # examples built in Python skip the check; the algorithm still stops in one line before the teacher runs
    opd = OnPolicyDistillation(FixedSampler(), LocalTeacher(models[0], 0), tokenizer, group_size=1, temperature=1.0)
    with pytest.raises(MentorError, match="over the teacher's context of 64") as error:
        opd.collect([EncodedExample(STUDENT_PROMPTS[0], teacher_prompt_ids=[1] + [30] * 70)])
    assert "\n" not in str(error.value)


# --- end to end: --teacher self with a context -------------------------------------------------------------------
@pytest.mark.parametrize("divergence", ["sampled", "full"])
def test_self_distillation_with_a_context_runs_and_the_teacher_stays_the_starting_weights(
    tiny_dirs, tmp_path, monkeypatch, divergence
):
    import mentor.recipes.distill as distill

    made = []

    class Recorded(OnPolicyDistillation):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(distill, "OnPolicyDistillation", Recorded)
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "12+34=", "context": "12+34=46"},
        {"prompt": "7*8=", "teacher_prompt": "7*8=56. 7*8="},
        {"prompt": "5+5="},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = DistillConfig(
        student=tiny_dirs["student"],
        teacher="self",
        teacher_context="answer with digits",
        prompts=str(prompts),
        output_dir=str(tmp_path / "run"),
        steps=3,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        learning_rate=1e-2,
        quiet=True,
        seed=1,
        divergence=divergence,
    )
    trainer, history = run_distill(config)
    steps = [r for r in history if "loss" in r]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    assert all(r["teacher_tokens"] > r["sampled_tokens"] for r in steps)  # the teacher read the contexts
    start, final = load_model(tiny_dirs["student"]).state_dict(), load_model(str(tmp_path / "run" / "final"))
    frozen = made[0].teacher.model.state_dict()
    assert all(torch.equal(start[name], frozen[name]) for name in start)  # a frozen copy: the target stays put
    assert any(not torch.equal(start[name], value) for name, value in final.state_dict().items())  # it learnt
