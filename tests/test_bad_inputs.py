"""Bad input gets one clear line: the corpus in tests/data/bad/, each case through the real CLI.

Every case must exit with code 2, print exactly one line that names the problem and the fix, show no
traceback, and write nothing (no run directory) that could be mistaken for a result.
"""

from __future__ import annotations

import errno
import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mentor.cli import main
from mentor.config import DistillConfig
from mentor.train.run_dir import RunDirectory
from tests.conftest import make_model_dir
from tests.helpers import one_clear_line as _one_clear_line

BAD = Path(__file__).parent / "data" / "bad"
GOOD_PROMPTS = BAD.parent / "good_prompts.jsonl"  # valid prompts, for the cases about something else


@pytest.fixture(scope="module")
def models(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-models")
    no_template = root / "no_template"
    shutil.copytree(tiny_dirs["student"], no_template)
    (no_template / "chat_template.jinja").unlink()
    other_vocab = make_model_dir(root / "other_vocab", alphabet="0123456789+*=abc")
    return {**tiny_dirs, "no_template": str(no_template), "other_vocab": other_vocab}


def _distill(models, out, prompts=None, *extra, student=None, teacher=None):
    return [
        "distill",
        "--student",
        student or models["student"],
        "--teacher",
        teacher or models["teacher"],
        "--prompts",
        str(prompts or GOOD_PROMPTS),
        "--output-dir",
        str(out),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--quiet",
        *extra,
    ]


def _sft(models, out, data, *extra):
    return [
        "sft",
        "--model",
        models["student"],
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--quiet",
        *extra,
    ]


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# (case, argv builder, the problem, the fix): regexes the one line must match
CASES = [
    (
        "malformed JSONL",
        lambda m, o: _distill(m, o, BAD / "malformed.jsonl"),
        r"malformed\.jsonl:2: not valid JSON",
        r"each line must be one JSON object",
    ),
    (
        "empty JSONL",
        lambda m, o: _distill(m, o, BAD / "empty.jsonl"),
        r"empty\.jsonl holds no records",
        r"write one JSON object per line",
    ),
    (
        "a line that is not an object",
        lambda m, o: _distill(m, o, BAD / "not_an_object.jsonl"),
        r":1: expected a JSON object",
        r"got list",
    ),
    (
        "missing prompt field",
        lambda m, o: _distill(m, o, BAD / "missing_prompt.jsonl"),
        r"missing_prompt\.jsonl:1: a record needs",
        r"'prompt' \(text\) or 'messages' \(chat\) field",
    ),
    (
        "empty prompt",
        lambda m, o: _distill(m, o, BAD / "empty_prompt.jsonl"),
        r"empty_prompt\.jsonl:1: 'prompt'",
        r"must be a non-empty string",
    ),
    (
        "prompt that is not text",
        lambda m, o: _distill(m, o, BAD / "prompt_not_text.jsonl"),
        r"prompt_not_text\.jsonl:1: 'prompt'",
        r"must be a non-empty string",
    ),
    (
        "chat message without content",
        lambda m, o: _distill(m, o, BAD / "message_without_content.jsonl"),
        r"message_without_content\.jsonl:1:",
        r"needs string 'role' and 'content'",
    ),
    (
        "not UTF-8",
        lambda m, o: _distill(m, o, BAD / "invalid_utf8.jsonl"),
        r"invalid_utf8\.jsonl:1: not UTF-8",
        r"save the file as UTF-8",
    ),
    (
        "SFT record without completion",
        lambda m, o: _sft(m, o, BAD / "sft_without_completion.jsonl"),
        r"sft_without_completion\.jsonl:1: SFT needs",
        r"'completion' field or a final assistant message",
    ),
    (
        "data file missing",
        lambda m, o: _sft(m, o, BAD / "no_such_file.jsonl"),
        r"no_such_file\.jsonl' does not exist",
        r"check the path",
    ),
    ("data path is a directory", lambda m, o: _sft(m, o, BAD), r"is not a file", r"pass a \.jsonl file"),
    (
        "prompt longer than the context, --long-prompts fail",
        lambda m, o: _distill(m, o, BAD / "too_long.jsonl", "--long-prompts", "fail"),
        r"prompt has 161 tokens, over the limit of 60",
        r"shorten it or pass --long-prompts skip",
    ),
    (
        "every prompt longer than the context",
        lambda m, o: _distill(m, o, BAD / "too_long.jsonl"),
        r"all 1 prompts are longer than 60 tokens",
        r"raise --max-prompt-tokens or use a model with a longer",
    ),
    (
        "unknown model path",
        lambda m, o: _distill(m, o, student=str(BAD / "no-such-model")),
        r"student '.*no-such-model' does not exist",
        r"pass a model directory.* or a hub id",
    ),
    (
        "teacher endpoint that is down (after its retries)",
        lambda m, o: _distill(m, o, teacher=f"http://127.0.0.1:{_closed_port()}/v1"),
        r"teacher server http://127\.0\.0\.1:\d+/\S+ failed 5 times \(last: .*Connection refused",
        r"check that it is running and reachable",
    ),
    (
        "teacher/student vocabulary mismatch",
        lambda m, o: _distill(m, o, teacher=m["other_vocab"]),
        r"teacher and student tokenizers differ",
        r"pick a teacher from the student's model family",
    ),
    (
        "chat data, tokenizer without a chat template",
        lambda m, o: _distill(m, o, BAD / "chat_messages.jsonl", student=m["no_template"], teacher=m["no_template"]),
        r"needs a chat template but the tokenizer has none",
        r"use plain 'prompt' records or a tokenizer with",
    ),
    (
        "negative learning rate",
        lambda m, o: _distill(m, o, None, "--config", str(BAD / "negative_lr.yaml")),
        r"--learning-rate must be positive",
        r"\(got -0\.001\)",
    ),
    (
        "group size 0",
        lambda m, o: _sft(m, o, GOOD_PROMPTS, "--config", str(BAD / "group_size_zero.yaml")),
        r"--group-size",
        r"must be at least 1 \(got 0\)",
    ),
    (
        "unknown loss",
        lambda m, o: _distill(m, o, None, "--config", str(BAD / "unknown_loss.yaml")),
        r"--loss 'kl_magic' is unknown",
        r"use importance_sampling or ppo",
    ),
    (
        "a number that is not a number",
        lambda m, o: _distill(m, o, None, "--config", str(BAD / "lr_not_a_number.yaml")),
        r"learning_rate must be a number",
        r"got 'fast'",
    ),
    (
        "unknown YAML key",
        lambda m, o: _distill(m, o, None, "--config", str(BAD / "unknown_key.yaml")),
        r"unknown config field\(s\) learnin_rate",
        r"did you mean learning_rate\?",
    ),
    (
        "bad YAML",
        lambda m, o: _distill(m, o, None, "--config", str(BAD / "bad_yaml.yaml")),
        r"bad_yaml\.yaml' is not valid YAML \(line 3",
        r"fix the syntax there",
    ),
    (
        "YAML that is not a mapping",
        lambda m, o: _distill(m, o, None, "--config", str(BAD / "not_a_mapping.yaml")),
        r"not_a_mapping\.yaml' must hold",
        r"a mapping of field: value",
    ),
    (
        "missing config file",
        lambda m, o: _distill(m, o, None, "--config", str(BAD / "nope.yaml")),
        r"nope\.yaml' does not exist",
        r"check the --config path",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, models, tmp_path, capsys):
    _, argv, problem, fix = case
    out = tmp_path / "run"
    assert main(argv(models, out)) == 2
    _one_clear_line(capsys, problem, fix)
    assert not out.exists()


def test_the_corpus_is_covered():
    used = {
        Path(a).name
        for _, build, *_ in CASES
        for a in build({"student": "s", "teacher": "t", "other_vocab": "o", "no_template": "n"}, "o")
    }
    assert {p.name for p in BAD.iterdir()} <= used


def test_exit_code_2_from_a_real_process(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mentor",
            "sft",
            "--model",
            "m",
            "--data",
            str(BAD / "malformed.jsonl"),
            "--output-dir",
            str(out),
            "--learning-rate",
            "-1",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        timeout=900,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "mentor: error: --learning-rate must be positive (got -1.0)"
    assert not out.exists()


def test_run_directory_of_another_config_is_refused_unless_overwrite(models, tmp_path, capsys):
    out = tmp_path / "run"
    RunDirectory(out).claim(DistillConfig(student="other", teacher="other", task="arithmetic", output_dir=str(out)))
    before = (out / "config.yaml").read_text()
    assert main(_distill(models, out)) == 2
    _one_clear_line(
        capsys,
        r"belongs to a different config \(differs in [a-z_, ]+\)",
        r"choose another --output-dir or pass --overwrite",
    )
    assert (out / "config.yaml").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == [".mentor-files", "config.yaml"]
    assert main(_distill(models, out, None, "--overwrite")) == 0
    assert (out / "final" / "model.safetensors").exists()


def test_long_prompts_are_skipped_and_counted(models, tmp_path, capsys):
    prompts = tmp_path / "mixed.jsonl"
    prompts.write_text(GOOD_PROMPTS.read_text() + (BAD / "too_long.jsonl").read_text())
    assert main(_distill(models, tmp_path / "run", prompts)) == 0
    assert "skipped 1 prompts longer than the context" in capsys.readouterr().err


def _fail_at_step(monkeypatch, step: int, write_failure):
    """Let checkpoint ``step`` fail inside its file writes; the earlier ones succeed."""
    real = RunDirectory.save_checkpoint

    def save_checkpoint(self, at_step, *args, **kwargs):
        if at_step != step:
            return real(self, at_step, *args, **kwargs)
        with write_failure():
            return real(self, at_step, *args, **kwargs)

    monkeypatch.setattr(RunDirectory, "save_checkpoint", save_checkpoint)


class _DiskFull:
    """torch.save writes part of the file, then the device is full (ENOSPC)."""

    def __init__(self):
        self.real = torch.save

    def __enter__(self):
        def save(obj, f, *args, **kwargs):
            Path(f).write_bytes(b"\0" * 1024)
            raise OSError(errno.ENOSPC, "No space left on device")

        torch.save = save

    def __exit__(self, *exc):
        torch.save = self.real


class _FileSizeLimit:
    """A real failure at the system-call level: writes past 4 KiB fail with EFBIG (RLIMIT_FSIZE)."""

    def __enter__(self):
        self.previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        self.previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, self.previous_limit[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self.previous_limit)
        signal.signal(signal.SIGXFSZ, self.previous_handler)


@pytest.mark.parametrize("failure", [_DiskFull, _FileSizeLimit], ids=["ENOSPC", "EFBIG"])
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_one(
    failure, models, tmp_path, capsys, monkeypatch
):
    _fail_at_step(monkeypatch, 2, failure)
    out = tmp_path / "run"
    assert (
        main(_distill(models, out, None, "--steps", "3", "--save-every", "1", "--no-check")) == 2
    )  # no start-up warnings: stderr is the one line
    line = _one_clear_line(
        capsys,
        r"could not write checkpoint .*step_00000002 \((No space left on device|"
        r".*([Ff]ile too large|EFBIG|error code: 27).*)\)",
        r"free disk space and run the same command again to resume",
    )
    assert "intact" in line
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_00000001"]  # no partial directory left behind
    assert not (out / "final").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2  # and resuming truncates the log back to step 1
    monkeypatch.undo()
    assert main(_distill(models, out, None, "--steps", "3", "--save-every", "1")) == 0
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
