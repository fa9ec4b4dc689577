"""Inputs a careless user tries (issue 21): each ends in one clear line, not a traceback, a hub lookup of a local
path, a misleading message, a silently wrong run or minutes without a word."""

from __future__ import annotations

import json
import re
import socket

import pytest

from mentor.cli import main
from mentor.coe.recipe import CoEConfig
from mentor.config import DistillConfig
from mentor.errors import MentorError
from mentor.score.http import HTTPTeacher
from tests.helpers import one_clear_line as _one_line


# --- --max-new-tokens 0 ---------------------------------------------------------------------------------------
def test_eval_with_max_new_tokens_0_is_refused_before_the_model_loads(tmp_path, capsys):
    # the model does not exist: the flag is refused before anything is loaded (or looked up)
    assert main(["eval", str(tmp_path / "no-model"), "--max-new-tokens", "0"]) == 2
    _one_line(capsys, r"--max-new-tokens must be at least 1 \(got 0\)")


@pytest.mark.parametrize(
    "argv",
    [
        ["distill", "--student", "s", "--teacher", "t", "--prompts", "p.jsonl"],
        ["sft", "--model", "m", "--data", "d.jsonl"],
        ["rl", "--model", "m", "--task", "arithmetic"],
    ],
    ids=["distill", "sft", "rl"],
)  # coe has no such flag
def test_every_command_with_max_new_tokens_refuses_0(argv, tmp_path, capsys):
    assert main([*argv, "--output-dir", str(tmp_path / "run"), "--max-new-tokens", "0"]) == 2
    _one_line(capsys, r"--max-new-tokens must be at least 1 \(got 0\)")
    assert not (tmp_path / "run").exists()


# --- coe steps out of order -----------------------------------------------------------------------------------
@pytest.fixture()
def no_loading(monkeypatch):
    """A step that would load (or look up on the hub) anything fails the test: the check must come first."""
    import mentor.coe.recipe as recipe

    def refuse(*args, **kwargs):
        raise AssertionError(f"loaded {args[0]!r} before saying which step to run first")

    monkeypatch.setattr(recipe, "load_model", refuse)
    monkeypatch.setattr(recipe, "load_tokenizer", refuse)


@pytest.mark.parametrize(
    "step, missing, first",
    [
        ("train-router", "moe", "assemble"),
        ("assemble", "experts/general/final", "train-experts"),
        ("train-experts", "labels", "label"),
        ("inspect", "stage2/final", "train-router"),
    ],
)
def test_a_coe_step_before_the_one_it_needs_names_that_step(
    step, missing, first, no_loading, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a relative --output-dir that does not exist: OUT/moe looks like a hub id
    assert main(["coe", step, "--base", "b", "--builtin", "--output-dir", "coe-run"]) == 2
    _one_line(
        capsys,
        rf"coe-run/{missing} does not exist: run `mentor coe {first}` first, with the same "
        r"--output-dir",
    )


# --- mentor inspect on a damaged samples.jsonl ---------------------------------------------------------------
def _sample(step: int) -> str:
    return json.dumps({"step": step, "row": 0, "tokens": ["a"], "token_ids": [1], "sampler_logprobs": [-0.1]})


@pytest.mark.parametrize(
    "content, line",
    [
        ("this is not JSON\n", 1),
        (_sample(1) + "\n{torn\n" + _sample(2) + "\n", 2),
        (b"\xff\xfe not UTF-8\n", 1),
    ],
    ids=["not JSON", "a bad line between good ones", "not UTF-8"],
)
def test_inspect_names_the_line_of_a_samples_file_that_is_not_json(content, line, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    path = run / "samples.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["inspect", str(run)]) == 2
    message = _one_line(capsys, rf"samples\.jsonl is not valid JSON at line {line}\b")
    assert "has no samples.jsonl" not in message


def test_inspect_without_samples_still_says_so(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["inspect", str(tmp_path / "run")]) == 2
    _one_line(capsys, r"has no samples\.jsonl: runs log samples every --sample-log-every steps")


# --- --warmup-steps longer than the run -----------------------------------------------------------------------
def test_warmup_longer_than_the_run_is_refused_in_one_line(tmp_path, capsys):
    argv = [
        "distill",
        "--student",
        "s",
        "--teacher",
        "t",
        "--prompts",
        "p.jsonl",
        "--output-dir",
        str(tmp_path / "run"),
        "--steps",
        "10",
        "--warmup-steps",
        "11",
    ]
    assert main(argv) == 2
    _one_line(
        capsys,
        r"--warmup-steps 11 is longer than the run's 10 optimizer steps \(--steps x --num-substeps\), "
        r"so the learning rate would never reach --learning-rate: use at most 10, or -1",
    )
    assert not (tmp_path / "run").exists()


def test_warmup_counts_optimizer_steps_substeps_included():
    options = dict(student="s", teacher="t", prompts="p.jsonl", steps=10)
    assert DistillConfig(**options, warmup_steps=10).warmup_steps == 10  # reaches the rate at the last step
    assert DistillConfig(**options, num_substeps=2, warmup_steps=20).warmup_steps == 20
    with pytest.raises(MentorError, match=r"--warmup-steps 21 is longer than the run's 20 optimizer steps"):
        DistillConfig(**options, num_substeps=2, warmup_steps=21)


def test_coe_warmup_must_fit_each_experts_training():
    options = dict(base="b", builtin=True, steps=100, expert_steps=5, warmup_steps=10)
    with pytest.raises(
        MentorError,
        match=r"--warmup-steps 10 is longer than the run's 5 optimizer steps "
        r"\(--expert-steps x --num-substeps, of each expert\)",
    ):
        CoEConfig(**options)
    assert CoEConfig(**options, expert_init="copies").warmup_steps == 10  # no expert trains


# --- a teacher server that accepts and never answers ----------------------------------------------------------
def test_a_silent_teacher_server_is_named_while_it_is_waited_for(caplog):
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nothing ever reads or answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    # notices every 0.05 s within a 3 s timeout: the assertion is only that one came before the timeout's error
    teacher = HTTPTeacher(url, model="m", timeout=3.0, max_retries=0, notice_after=0.05, notice_every=0.05)
    try:
        with pytest.raises(MentorError, match=r"failed 1 times \(last: connected, but no answer within 3 s"):
            teacher.compute_logprobs([[1, 2, 3]])
    finally:
        teacher.close()
        silent.close()
    # a warning of the library's logger, which the CLI shows on stderr (tests/test_logs.py)
    waiting = [r for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert all(r.levelname == "WARNING" and r.name == "mentor.score.http" for r in waiting)
    notices = [r.getMessage() for r in waiting]
    assert notices, "no line said what was being waited for"
    assert re.fullmatch(
        rf"waiting for the teacher server at {re.escape(url)}/completions to answer \(0\.05 s of "
        r"--teacher-timeout 3 s\)",
        notices[0],
    ), notices[0]
