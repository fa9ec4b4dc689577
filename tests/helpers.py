"""Helpers more than one test module uses (instead of tests importing each other's privates)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mentor.errors import MentorError
from mentor.serve import TeacherServer


def one_clear_line(capsys, *patterns: str) -> str:
    """The CLI's promise for bad input: no traceback, one ``mentor: error:`` line on stderr, matching each pattern."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mentor: error: ")
    for pattern in patterns:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- runs in their own process, stopped at an exact point (tests/test_resume.py and the resume tests elsewhere) ---
DRIVER = r"""
import os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
flag = Path(os.environ["PAUSE_FLAG"]) if os.environ.get("PAUSE_FLAG") else None
before_step = int(os.environ.get("PAUSE_BEFORE_STEP", "-1"))
in_save = int(os.environ.get("PAUSE_IN_SAVE_OF_STEP", "-1"))
seconds = float(os.environ.get("PAUSE_SECONDS", "600"))

def pause():
    flag.write_text(str(os.getpid()))
    time.sleep(seconds)

from mentor.train.trainer import Trainer
real_step = Trainer.train_step
def train_step(self, algorithm):
    if self.step == before_step:
        pause()
    return real_step(self, algorithm)
Trainer.train_step = train_step

real_save = torch.save
def save(obj, f, *args, **kwargs):  # the trainer state is written after the weights: stop between the two
    if isinstance(obj, dict) and obj.get("step") == in_save:
        pause()
    return real_save(obj, f, *args, **kwargs)
torch.save = save

from mentor.cli import main
sys.exit(main(sys.argv[1:]))
"""

# a guard against a hang, not a timing assertion: a loaded CI machine may take many times the usual time
HANG_GUARD_S = 1200
VOLATILE = ("time_", "tokens_per_second")  # wall-clock measurements differ between any two runs


def start_driven(args: list[str], **pause) -> subprocess.Popen:
    env = {**os.environ, **{k: str(v) for k, v in pause.items()}, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, timeout: float = HANG_GUARD_S) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def succeeds(process: subprocess.Popen) -> None:
    code, err = finish(process)
    assert code == 0, err


def wait_until_paused(process: subprocess.Popen, flag: Path, timeout: float = HANG_GUARD_S) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert process.poll() is None, f"run ended before the kill point: {process.communicate()[1]}"
        assert time.monotonic() < deadline, "run never reached the kill point"
        time.sleep(0.02)


def kill_when_paused(process: subprocess.Popen, flag: Path) -> None:
    wait_until_paused(process, flag)
    process.send_signal(signal.SIGKILL)
    process.wait()
    flag.unlink()


def run_metrics(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in records]


def assert_same_run(resumed: Path, reference: Path) -> None:
    assert run_metrics(resumed) == run_metrics(reference)
    weights, expected = (
        load_file(resumed / "final" / "model.safetensors"),
        load_file(reference / "final" / "model.safetensors"),
    )
    assert weights.keys() == expected.keys()
    for name in expected:
        assert torch.equal(weights[name], expected[name]), name


def train_teacher(init_dir, run_dir, steps: int) -> str:
    """A tiny model trained a little on arithmetic (a peaked distribution, as a teacher's); its final directory."""
    from mentor.config import SFTConfig
    from mentor.recipes.sft import run_sft

    run_sft(
        SFTConfig(
            model=str(init_dir),
            task="arithmetic",
            output_dir=str(run_dir),
            steps=steps,
            batch_size=32,
            group_size=1,
            learning_rate=3e-3,
            adam_beta2=0.99,
            eval_size=8,
            max_new_tokens=24,
            train_size=2000,
            quiet=True,
        )
    )
    return str(Path(run_dir) / "final")


# --- a teacher server whose answers are edited: a broken or foreign server (test_http_teacher, test_remote_top_k) ---
@contextlib.contextmanager
def editing_server(target: TeacherServer, edit):
    """A server that forwards to the real one and edits its answer: what a broken or foreign server sends."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            data = json.dumps(edit(target.completions(body), body["prompt"][0])).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def first_choice(edit):
    """An edit of the first choice's fields."""

    def apply(answer, sequence):
        edit(answer["choices"][0], sequence)
        return answer

    return apply


def refused_once(server: TeacherServer, edit, message: str, ask) -> list[dict]:
    """``ask(url)`` against ``server`` with its answers broken by ``edit``: one ``MentorError`` line matching
    ``message`` after one request (a protocol error: retrying cannot help). Returns the requests sent."""
    with editing_server(server, edit) as (url, seen):
        with pytest.raises(MentorError, match=message) as info:
            ask(url)
    assert "\n" not in str(info.value)
    assert len(seen) == 1
    return seen
