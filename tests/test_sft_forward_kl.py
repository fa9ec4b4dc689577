"""``mentor sft --from-teacher T --sft-loss forward_kl``: logit distillation on the teacher's samples."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from mentor.algorithms.sft import SupervisedFineTuning
from mentor.config import SFTConfig
from mentor.data.prompts import EncodedExample
from mentor.errors import MentorError
from mentor.evaluation.flops import MatmulParams
from mentor.update.logprobs import PolicyLogprobs


def _sft_args(tiny_dirs, out, *extra):
    return [
        "sft",
        "--model",
        tiny_dirs["student"],
        "--from-teacher",
        tiny_dirs["teacher"],
        "--task",
        "arithmetic",
        "--teacher-prompts",
        "6",
        "--max-new-tokens",
        "10",
        "--output-dir",
        str(out),
        "--batch-size",
        "3",
        "--group-size",
        "1",
        "--eval-size",
        "2",
        "--quiet",
        *extra,
    ]


def test_forward_kl_loss_is_the_teachers_kl_over_the_completion(tiny_dirs):
    """The loss equals mean over completion tokens of KL(p_teacher || q_student), summed over the whole
    vocabulary from two plain forward passes; its gradient matches that reference's."""
    student = AutoModelForCausalLM.from_pretrained(tiny_dirs["student"]).float()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs["teacher"]).float().eval()
    examples = [EncodedExample([3, 4, 5], [6, 7, 8, 9], "a"), EncodedExample([3, 9], [4, 5, 6], "b")]
    algorithm = SupervisedFineTuning(pad_id=0, logit_teacher=teacher)
    batch, metrics = algorithm.collect(examples)
    assert metrics["teacher_tokens"] == float(batch.attention_mask.sum())
    num_tokens = int(batch.loss_mask.sum())
    student.train(False)
    output = PolicyLogprobs(student)(batch.input_ids, batch.attention_mask, **algorithm.forward_options(batch))
    loss, loss_metrics = algorithm.loss(output, batch, num_tokens)
    loss.backward()
    ours = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()

    logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    q, p = torch.log_softmax(logits.float(), -1), torch.log_softmax(teacher_logits.float(), -1)
    kl = (p.exp() * (p - q)).sum(-1)  # predicts token t+1 from the prefix up to t
    reference = (kl * batch.loss_mask[:, 1:]).sum() / num_tokens
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert loss_metrics["forward_kl"] == pytest.approx(reference.item(), rel=1e-5)
    for got, want in zip(ours, (p.grad for p in student.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_forward_kl_without_a_teacher_is_one_line():
    with pytest.raises(MentorError, match=r"--sft-loss forward_kl .* add --from-teacher"):
        SFTConfig(model="m", task="arithmetic", sft_loss="forward_kl")
    with pytest.raises(MentorError, match=r"--sft-loss 'reverse': choose nll or forward_kl"):
        SFTConfig(model="m", task="arithmetic", from_teacher="t", sft_loss="reverse")


def test_forward_kl_run_trains_on_the_cached_samples_and_counts_the_teacher(tiny_dirs, tmp_path):
    from mentor.cli import main

    out = tmp_path / "fkl"
    assert main(_sft_args(tiny_dirs, out, "--sft-loss", "forward_kl", "--steps", "2")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "forward_kl" in r]
    assert len(steps) == 2 and all(r["forward_kl"] > 0 for r in steps)
    teacher_n = MatmulParams.of(AutoModelForCausalLM.from_pretrained(tiny_dirs["teacher"])).total
    # the teacher's forward over every trained sequence, besides the samples it wrote once
    last = steps[-1]
    assert last["flops_teacher_score"] > 0
    assert last["flops_teacher_score"] % (2 * teacher_n) == 0
    assert last["flops_teacher_sample"] > 0
