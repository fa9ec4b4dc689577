"""vLLM's OpenAI server as the teacher (and as RL's reference): the same numbers as the in-process model.

The server is vLLM's own (``python -m vllm.entrypoints.openai.api_server``, as docs/vllm.md serves a teacher with
the CPU build) in a subprocess; mentor's client asks it for ``prompt_logprobs`` as it would ask a GPU server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from mentor.config import DistillConfig, RLConfig
from mentor.recipes.distill import run_distill
from mentor.recipes.rl import run_rl
from tests.helpers import free_port

START_GUARD_S = 600  # a hang guard, not a timing assertion: the engine compiles on first start
COMPARED = ("teacher_logprob", "reverse_kl", "loss", "student_logprob")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/models", timeout=5) as answer:
            return bool(json.load(answer).get("data"))
    except OSError:
        return False


@pytest.fixture(scope="module")
def served_teacher(engine_dirs, tmp_path_factory):
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        engine_dirs["teacher"],
        "--dtype",
        "float32",
        "--max-logprobs",
        "20",
        "--max-model-len",
        "128",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("w") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url, deadline = f"http://127.0.0.1:{port}/v1", time.monotonic() + START_GUARD_S
    try:
        while not _ready(url):
            assert server.poll() is None, f"vLLM's server exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"vLLM's server did not answer: {log.read_text()[-3000:]}"
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def _steps(history: list[dict]) -> list[dict]:
    return [row for row in history if "loss" in row]


def _assert_same_steps(served: list[dict], local: list[dict], keys=COMPARED) -> None:
    assert len(_steps(served)) == len(_steps(local)) == 2
    for served_step, local_step in zip(_steps(served), _steps(local)):
        for key in keys:
            assert served_step[key] == pytest.approx(local_step[key], abs=1e-5), key


@pytest.mark.parametrize("divergence", ["sampled", "top_k"])
def test_vllms_server_as_teacher_gives_the_in_process_numbers(
    served_teacher, engine_dirs, prompts_file, tmp_path, divergence
):
    common = dict(
        student=engine_dirs["student"],
        prompts=prompts_file,
        steps=2,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        learning_rate=1e-3,
        quiet=True,
        seed=3,
        divergence=divergence,
        kl_top_k=5,
    )
    _, local = run_distill(DistillConfig(teacher=engine_dirs["teacher"], output_dir=str(tmp_path / "local"), **common))
    _, served = run_distill(DistillConfig(teacher=served_teacher, output_dir=str(tmp_path / "served"), **common))
    keys = COMPARED + (("full_reverse_kl",) if divergence == "top_k" else ())
    _assert_same_steps(served, local, keys)


def test_rl_with_vllms_server_as_the_reference(served_teacher, engine_dirs, tmp_path):
    common = dict(
        model=engine_dirs["student"],
        task="arithmetic",
        kl_coef=1.0,
        steps=2,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        learning_rate=1e-3,
        eval_size=2,
        quiet=True,
        seed=4,
    )
    _, local = run_rl(RLConfig(reference=engine_dirs["teacher"], output_dir=str(tmp_path / "local"), **common))
    _, served = run_rl(RLConfig(reference=served_teacher, output_dir=str(tmp_path / "served"), **common))
    _assert_same_steps(served, local, ("kl_to_reference", "loss"))
