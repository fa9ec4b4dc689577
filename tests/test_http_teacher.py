"""The teacher over HTTP: `mentor serve-teacher` on loopback, the client's batching, retries and errors."""

import json
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from mentor.config import DistillConfig
from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.distill import run_distill
from mentor.score.http import HTTPTeacher
from mentor.score.local import LocalTeacher
from mentor.serve import TeacherServer
from tests.conftest import make_model_dir
from tests.helpers import editing_server, first_choice, refused_once

SEQUENCES = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 11, 12, 13, 14, 15, 16, 17], [1, 4, 4, 4]]


@pytest.fixture(scope="module")
def teacher(tiny_dirs):
    return load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])


@pytest.fixture()
def server(teacher):
    model, tokenizer = teacher
    with TeacherServer(model, tokenizer, model_name="tiny-teacher", port=0, api_key="sesame") as running:
        yield running


def _local(teacher, sequences):
    model, tokenizer = teacher
    return LocalTeacher(model, tokenizer.pad_token_id).compute_logprobs(sequences)


def test_served_logprobs_match_the_in_process_teacher(server, teacher):
    client = HTTPTeacher(server.url, api_key="sesame", batch_size=3, max_concurrency=2)
    remote, local = client.compute_logprobs(SEQUENCES), _local(teacher, SEQUENCES)
    for r, l, seq in zip(remote, local, SEQUENCES):
        assert r.shape == (len(seq),) and r[0] == 0
        assert torch.allclose(r, l, atol=1e-5)
    assert client.model == "tiny-teacher"


def test_vllm_style_prompt_logprobs_and_one_generated_token(server, teacher):
    body = {
        "model": "tiny-teacher",
        "prompt": SEQUENCES[:2],
        "max_tokens": 1,
        "echo": True,
        "logprobs": 0,
        "prompt_logprobs": 0,
    }
    request = urllib.request.Request(
        server.url + "/completions",
        json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": "Bearer sesame", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    local = _local(teacher, SEQUENCES[:2])
    for choice, seq, expected in zip(answer["choices"], SEQUENCES, local):
        assert choice["prompt_logprobs"][0] is None
        from_vllm_form = [entry[str(t)]["logprob"] for t, entry in zip(seq[1:], choice["prompt_logprobs"][1:])]
        assert torch.allclose(torch.tensor(from_vllm_form), expected[1:], atol=1e-5)
        assert len(choice["logprobs"]["token_logprobs"]) == len(seq) + 1  # echo + one greedy token
    assert answer["usage"]["completion_tokens"] == 2


def test_opd_through_the_server_matches_the_in_process_teacher(tiny_dirs, teacher, tmp_path, monkeypatch, prompts_file):
    model, tokenizer = teacher
    common = dict(
        student=tiny_dirs["student"],
        prompts=prompts_file,
        steps=2,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        learning_rate=1e-3,
        quiet=True,
        seed=3,
    )
    _, local_history = run_distill(
        DistillConfig(teacher=tiny_dirs["teacher"], output_dir=str(tmp_path / "local"), **common)
    )
    monkeypatch.setenv("MENTOR_TEACHER_API_KEY", "sesame")
    with TeacherServer(model, tokenizer, port=0, api_key="sesame") as running:
        trainer, http_history = run_distill(
            DistillConfig(teacher=running.url, output_dir=str(tmp_path / "http"), **common)
        )
    steps = [(l, h) for l, h in zip(local_history, http_history) if "loss" in l]
    assert len(steps) == 2
    for local_step, http_step in steps:
        for key in ("teacher_logprob", "reverse_kl", "loss", "student_logprob"):
            assert http_step[key] == pytest.approx(local_step[key], abs=1e-4), key
    assert "sesame" not in (trainer.run.path / "config.yaml").read_text()  # secrets stay off disk


def test_a_remote_teacher_with_another_vocabulary_fails_before_training(tiny_dirs, tmp_path):
    other = make_model_dir(tmp_path / "other", alphabet="0123456789+*=abc")
    with TeacherServer(load_model(other), load_tokenizer(other), port=0) as running:
        config = DistillConfig(
            student=tiny_dirs["student"],
            teacher=running.url,
            task="arithmetic",
            output_dir=str(tmp_path / "run"),
            steps=1,
            quiet=True,
        )
        with pytest.raises(MentorError, match="one vocabulary"):
            run_distill(config)
    assert not (tmp_path / "run").exists()


def test_wrong_key_bad_request_and_size_limits_are_clear(server, teacher):
    with pytest.raises(MentorError, match="API key"):
        HTTPTeacher(server.url, api_key="wrong").compute_logprobs(SEQUENCES)
    # a request over the server's token limit is split in halves until it fits, with the same answer
    server.max_request_tokens = 10
    split = HTTPTeacher(server.url, api_key="sesame", batch_size=4).compute_logprobs(SEQUENCES[:2] + SEQUENCES[3:])
    for r, l in zip(split, _local(teacher, SEQUENCES[:2] + SEQUENCES[3:])):
        assert torch.allclose(r, l, atol=1e-5)
    with pytest.raises(MentorError, match="too large"):
        HTTPTeacher(server.url, api_key="sesame").compute_logprobs([list(range(1, 12))])
    server.max_request_tokens = 262_144
    with pytest.raises(MentorError, match="token ids must lie"):
        HTTPTeacher(server.url, api_key="sesame").compute_logprobs([[1, 10_000]])


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503, then a truncated body, then forwards to the real server: the client must get through."""

    protocol_version = "HTTP/1.1"
    failures: list = []
    target: TeacherServer

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        failure = self.failures.pop(0) if self.failures else None
        data = json.dumps(self.target.completions(body)).encode()
        status = 503 if failure == "503" else 200
        if failure == "truncated":
            data = data[: len(data) // 2]
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_retries_with_backoff_then_one_clear_error(server, teacher):
    _Flaky.target, _Flaky.failures = server, ["503", "truncated"]
    flaky = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=flaky.serve_forever, daemon=True).start()
    try:
        client = HTTPTeacher(
            f"http://127.0.0.1:{flaky.server_address[1]}/v1", model="tiny-teacher", max_retries=3, backoff=0.01
        )
        recovered = client.compute_logprobs(SEQUENCES[:1])
        assert torch.allclose(recovered[0], _local(teacher, SEQUENCES[:1])[0], atol=1e-5)
        assert _Flaky.failures == []
        _Flaky.failures = ["503"] * 3
        with pytest.raises(MentorError, match=r"failed 3 times \(last: HTTP 503"):
            HTTPTeacher(client.base_url, model="tiny-teacher", max_retries=2, backoff=0.01).compute_logprobs(
                SEQUENCES[:1]
            )
    finally:
        flaky.shutdown()
        flaky.server_close()
    port = flaky.server_address[1]  # now closed: connection refused, retried, then one line
    with pytest.raises(MentorError, match="failed 2 times .*ConnectionRefused|failed 2 times .*URLError"):
        HTTPTeacher(f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff=0.01).compute_logprobs([[1, 2]])
    # a server that is RL's reference, not a teacher, is named so (the one line says which server is down)
    with pytest.raises(MentorError, match=r"^reference server http://127\.0\.0\.1:\d+/v1/completions failed 2 times"):
        HTTPTeacher(
            f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff=0.01, role="reference"
        ).compute_logprobs([[1, 2]])


def test_serve_teacher_command_prints_its_url_and_serves(tiny_dirs):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mentor",
            "serve-teacher",
            tiny_dirs["teacher"],
            "--port",
            "0",
            "--served-model-name",
            "t",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(60, process.kill)  # a hung server must not hang the suite
    watchdog.start()
    try:
        line = process.stdout.readline()  # bounded: the process prints its URL or dies
        assert "serving t at http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].strip()
        assert HTTPTeacher(url).model == "t"
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(timeout=30)


def test_serving_on_a_public_address_needs_a_key(tiny_dirs):
    from mentor.cli import main

    assert main(["serve-teacher", tiny_dirs["teacher"], "--host", "0.0.0.0"]) == 2


def test_both_response_shapes_parse_to_the_same_logprobs():
    from mentor.score.http import _prompt_logprobs

    sequence = [1, 7, 9]
    openai_echo = {"logprobs": {"token_logprobs": [None, -0.5, -1.25, -0.1]}}  # + the one generated token
    vllm_prompt = {
        "logprobs": None,
        "prompt_logprobs": [
            None,
            {"7": {"logprob": -0.5, "rank": 2}, "3": {"logprob": -0.2, "rank": 1}},
            {"9": {"logprob": -1.25, "rank": 1}},
        ],
    }
    expected = torch.tensor([0.0, -0.5, -1.25])
    assert torch.equal(_prompt_logprobs(openai_echo, sequence), expected)
    assert torch.equal(_prompt_logprobs(vllm_prompt, sequence), expected)
    with pytest.raises(MentorError, match="echo=true"):
        _prompt_logprobs({"logprobs": {"token_logprobs": [None]}}, sequence)


def test_one_teacher_per_data_set_may_be_a_server(tiny_dirs, teacher, tmp_path, monkeypatch):
    """--teacher a=URL,b=DIR: the served teacher grades data set a exactly as the same model in-process."""
    from mentor.cli import main

    model, tokenizer = teacher
    (tmp_path / "a.jsonl").write_text('{"prompt": "12+3="}\n{"prompt": "4*5+1="}\n')
    (tmp_path / "b.jsonl").write_text('{"prompt": "7+8+9="}\n')
    other = make_model_dir(tmp_path / "other_teacher", hidden=16, layers=1, heads=2, seed=9)
    prompts = f"a={tmp_path / 'a.jsonl'},b={tmp_path / 'b.jsonl'}"
    common = [
        "--student",
        tiny_dirs["student"],
        "--prompts",
        prompts,
        "--steps",
        "2",
        "--batch-size",
        "3",
        "--group-size",
        "2",
        "--max-new-tokens",
        "6",
        "--quiet",
        "--seed",
        "5",
    ]
    assert (
        main(
            [
                "distill",
                "--teacher",
                f"a={tiny_dirs['teacher']},b={other}",
                "--output-dir",
                str(tmp_path / "local"),
                *common,
            ]
        )
        == 0
    )
    monkeypatch.setenv("MENTOR_TEACHER_API_KEY", "sesame")
    with TeacherServer(model, tokenizer, port=0, api_key="sesame") as running:
        assert (
            main(
                ["distill", "--teacher", f"a={running.url},b={other}", "--output-dir", str(tmp_path / "mixed"), *common]
            )
            == 0
        )
    local, mixed = (
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("local", "mixed")
    )
    steps = [(l, m) for l, m in zip(local, mixed) if "loss" in l]
    assert len(steps) == 2
    for local_step, mixed_step in steps:
        for key in ("teacher_logprob", "reverse_kl", "loss"):
            assert mixed_step[key] == pytest.approx(local_step[key], abs=1e-4), key


# --- answers that are wrong or foreign: one clear line, never retried, never silently trained on -------------
def _set(path: str, position: int, value):
    def edit(choice, sequence):
        field = choice
        for key in path.split("."):
            field = field[key]
        field[position] = value(sequence) if callable(value) else value

    return edit


def _vllm_prompt_logprobs(choice, sequence):
    """vLLM's extension instead of OpenAI's list: ``[None, {"id": {"logprob": x, "rank": r}}, ...]``."""
    values = choice.pop("logprobs")["token_logprobs"]
    choice["prompt_logprobs"] = [None] + [{str(t): {"logprob": v, "rank": 1}} for t, v in zip(sequence[1:], values[1:])]


def _then(*edits):
    def edit(choice, sequence):
        for one in edits:
            one(choice, sequence)

    return edit


def _text_tokens(choice, sequence):  # what a server without return_token_ids / return_tokens_as_token_ids sends
    choice.pop("prompt_token_ids"), choice.pop("token_ids")
    choice["logprobs"]["tokens"] = ["x"] * len(choice["logprobs"]["tokens"])


BROKEN_ANSWERS = {
    "null inside": (
        first_choice(_set("logprobs.token_logprobs", 2, None)),
        r"null log-prob for token 2 of a 5-token sequence \(only the first token may have none\)",
    ),
    "null inside prompt_logprobs": (
        first_choice(_then(_vllm_prompt_logprobs, _set("prompt_logprobs", 3, None))),
        r"null log-prob for token 3 of a 5-token",
    ),
    "a JSON list": (lambda answer, sequence: [answer], r"answered a JSON list, not an object"),
    "string log-probs": (
        first_choice(_set("logprobs.token_logprobs", 1, "-0.25")),
        r"not an OpenAI completions answer \(log-prob '-0.25' at position 1 is not a number\)",
    ),
    "NaN log-prob": (first_choice(_set("logprobs.token_logprobs", 4, float("nan"))), r"log-prob 'nan' at position 4"),
    "no choices": (
        lambda answer, sequence: {"id": "x", "object": "text_completion"},
        r"not an OpenAI completions answer \(no list of choices",
    ),
    "choices of text": (lambda answer, sequence: {"choices": ["12+3"]}, r"no list of choices"),
    "logprobs of text": (
        first_choice(lambda choice, sequence: choice.update(logprobs="-0.1 -0.2")),
        r"logprobs is a str",
    ),
    "prompt_logprobs entry missing its logprob": (
        first_choice(_then(_vllm_prompt_logprobs, _set("prompt_logprobs", 2, lambda seq: {str(seq[2]): {"rank": 1}}))),
        r"entry has no logprob",
    ),
    "other prompt_token_ids": (
        first_choice(_set("prompt_token_ids", 3, 30)),
        r"at position 3 its answer has token 30 \(prompt_token_ids\) where mentor sent 7",
    ),
    "an added BOS": (
        first_choice(lambda choice, sequence: choice.update(prompt_token_ids=[1, *sequence])),
        r"at position 1 its answer has token 1 \(prompt_token_ids\) where mentor sent 5",
    ),
    "a truncated prompt": (
        first_choice(lambda choice, sequence: choice.update(prompt_token_ids=sequence[:3])),
        r"at position 3 its answer has no token \(prompt_token_ids\) where mentor sent 7",
    ),
    "other token_id tokens": (
        first_choice(_set("logprobs.tokens", 2, "token_id:31")),
        r"at position 2 its answer has token 31 \(logprobs.tokens\) where mentor sent 6",
    ),
    "other prompt_logprobs tokens": (
        first_choice(_then(_vllm_prompt_logprobs, _set("prompt_logprobs", 4, {"30": {"logprob": -0.1}}))),
        r"at position 4 its answer has log-probs for token 30 \(prompt_logprobs\) where mentor sent 8",
    ),
    "one log-prob too many, tokens as text": (
        first_choice(
            _then(_text_tokens, lambda choice, sequence: choice["logprobs"]["token_logprobs"].insert(1, -0.5))
        ),
        r"returned 7 prompt log-probs for a 5-token sequence: it must score exactly the ids sent",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ANSWERS))
def test_a_broken_or_foreign_answer_is_one_line_and_not_retried(server, case):
    edit, message = BROKEN_ANSWERS[case]
    refused_once(
        server,
        edit,
        message,
        lambda url: HTTPTeacher(url, model="tiny-teacher", max_retries=3, backoff=0.01).compute_logprobs(SEQUENCES[:1]),
    )


def test_the_client_asks_for_token_ids_and_checks_them_when_given(server, teacher):
    """The answer as vLLM gives it (ids, token_id:N tokens) or without any ids (text tokens): same log-probs."""
    local = _local(teacher, SEQUENCES)
    for edit in (lambda answer, sequence: answer, first_choice(_text_tokens), first_choice(_vllm_prompt_logprobs)):
        with editing_server(server, edit) as (url, seen):
            remote = HTTPTeacher(url, model="tiny-teacher", batch_size=4).compute_logprobs(SEQUENCES)
        assert seen[0]["return_token_ids"] is True and seen[0]["return_tokens_as_token_ids"] is True
        assert all(torch.allclose(r, l, atol=1e-5) for r, l in zip(remote, local))
    answer = server.completions(seen[0])
    assert [c["prompt_token_ids"] for c in answer["choices"]] == SEQUENCES
    assert answer["choices"][0]["logprobs"]["tokens"][:5] == [f"token_id:{t}" for t in SEQUENCES[0]]
