"""Numerical faults injected for real: NaN teacher log-probs (a hook on the teacher's forward pass) and an
infinite gradient (a hook on a student parameter). A bad step is skipped and counted, the weights stay
finite, and after ``max_bad_steps`` in a row the run stops with one line, its last checkpoint intact."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from mentor.config import DistillConfig
from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.distill import run_distill
from mentor.train.run_dir import RunDirectory


def _config(tiny_dirs, prompts_file, out, **overrides) -> DistillConfig:
    values = dict(
        student=tiny_dirs["student"],
        teacher=tiny_dirs["teacher"],
        prompts=prompts_file,
        output_dir=str(out),
        steps=4,
        batch_size=2,
        group_size=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        quiet=True,
        sample_log_every=0,
    )  # the poison counts teacher passes; sample logging would add one
    return DistillConfig(**{**values, **overrides})


def _poison_teacher(teacher, bad_calls) -> None:
    """The teacher's hidden states become NaN on the listed forward calls of its decoder (0-based), so the
    log-probs it returns are NaN (scoring runs the decoder once per step here, then the head in chunks)."""
    calls = {"n": 0}

    def hook(module, args, output):
        poisoned = calls["n"] in bad_calls
        calls["n"] += 1
        if poisoned:
            output.last_hidden_state = torch.full_like(output.last_hidden_state, math.nan)
        return output

    teacher.get_decoder().register_forward_hook(hook)


def _run(config, tiny_dirs, poison_teacher_calls=(), inf_grad_backward=None):
    tokenizer = load_tokenizer(tiny_dirs["student"])
    student, teacher = load_model(tiny_dirs["student"]), load_model(tiny_dirs["teacher"])
    _poison_teacher(teacher, set(poison_teacher_calls))
    if inf_grad_backward is not None:
        backwards = {"n": 0}

        def poison_grad(grad):
            backwards["n"] += 1
            return grad * math.inf if backwards["n"] - 1 == inf_grad_backward else grad

        student.get_input_embeddings().weight.register_hook(poison_grad)
    return run_distill(
        config,
        student=student,
        tokenizer=tokenizer,
        teacher=teacher,
        teacher_tokenizer=load_tokenizer(tiny_dirs["teacher"]),
    )


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_nan_loss_and_inf_gradient_steps_are_skipped_counted_and_logged(tiny_dirs, prompts_file, tmp_path):
    out = tmp_path / "run"
    # step 2: NaN teacher log-probs -> NaN advantages and loss; step 4: an infinite gradient, finite loss
    trainer, history = _run(
        _config(tiny_dirs, prompts_file, out), tiny_dirs, poison_teacher_calls={1}, inf_grad_backward=3
    )
    assert [r["skipped_steps"] for r in _metrics(out)] == [0, 1, 1, 2]
    assert not math.isfinite(history[1]["reverse_kl"])  # the NaN really reached the step
    assert trainer.scheduler.last_epoch == 2  # only the two good steps moved the optimizer
    weights = load_file(out / "final" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_too_many_bad_steps_in_a_row_stop_with_one_line_and_the_checkpoint_intact(tiny_dirs, prompts_file, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_dirs, prompts_file, out, steps=6, save_every=1, max_bad_steps=2)
    with pytest.raises(
        MentorError,
        match=r"^2 steps in a row had a non-finite loss or gradient; stopped "
        r"\(the last checkpoint is intact\): lower --learning-rate",
    ):
        _run(config, tiny_dirs, poison_teacher_calls={2, 3, 4, 5})
    run = RunDirectory(out)
    checkpoint = run.latest_checkpoint()
    assert checkpoint.name == "step_00000003"  # step 3 was skipped but the run went on; step 4 tripped it
    weights = load_file(checkpoint / "model" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (out / "final").exists()
    assert [r["skipped_steps"] for r in _metrics(out)] == [0, 0, 1]  # the fatal step is not logged as done
