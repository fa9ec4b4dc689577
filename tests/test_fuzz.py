"""Fuzz: the data loaders and the teacher server's request parsing take anything without crashing.

Loaders: any bytes, any JSON lines, wrong types in every field -> valid examples or one ``MentorError`` line.
Server: any JSON body or raw bytes -> a 4xx JSON error or a valid answer, never a 500 or a dropped
connection. Most examples call the parsing functions directly (fast); a handful go through the real socket.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mentor.data.prompts import Example, load_examples
from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.serve import TeacherServer
from mentor.serve.server import RequestError
from mentor.tasks.loaders import SCHEMAS, load_problems

# derandomized: the same examples on every run, so CI never depends on what a random draw happens to try
FAST = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "prompt",
        "messages",
        "completion",
        "question",
        "answer",
        "solution",
        "problem",
        "role",
        "content",
        "instruction_id_list",
        "kwargs",
        "task_id",
        "test",
        "entry_point",
        "canonical_solution",
    ]
)
records = st.dictionaries(field_names, json_values, max_size=5) | json_values
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", 3]), "content": st.text(max_size=10) | st.integers()}
    ),
    max_size=3,
)


def _one_line_or_valid(call) -> None:
    try:
        call()
    except MentorError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))


@FAST
@given(data=st.binary(max_size=300))
def test_prompt_loader_takes_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "data.jsonl"
    path.write_bytes(data)
    _one_line_or_valid(lambda: load_examples(path))


@FAST
@given(
    rows=st.lists(records | st.fixed_dictionaries({"messages": messages}), min_size=1, max_size=4),
    need_completion=st.booleans(),
)
def test_prompt_loader_takes_any_json_lines(tmp_path_factory, rows, need_completion):
    path = tmp_path_factory.mktemp("rows") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def load():
        examples = load_examples(path, need_completion=need_completion)
        assert all(isinstance(e, Example) for e in examples)

    _one_line_or_valid(load)


@FAST
@given(
    schema=st.sampled_from(sorted(SCHEMAS) + ["nope"]),
    suffix=st.sampled_from([".jsonl", ".json"]),
    content=st.binary(max_size=200)
    | st.lists(records, max_size=3).map(lambda rs: "\n".join(json.dumps(r) for r in rs).encode())
    | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_task_loaders_take_anything(tmp_path_factory, schema, suffix, content):
    path = tmp_path_factory.mktemp("task") / f"data{suffix}"
    path.write_bytes(content)
    _one_line_or_valid(lambda: load_problems(schema, path))


@pytest.fixture(scope="module")
def server(tiny_dirs):
    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    with TeacherServer(model, tokenizer, model_name="t", port=0, max_request_tokens=64) as running:
        yield running


token_ids = st.integers(-3, 300)  # the tiny vocabulary is smaller than 300: some ids are out of range
plausible_bodies = st.fixed_dictionaries(
    {
        "prompt": st.lists(token_ids, min_size=1, max_size=6)
        | st.lists(st.lists(token_ids, max_size=5), max_size=3)
        | st.text(max_size=12),
        "max_tokens": st.sampled_from([0, 1, 16]),
    },
    optional={
        "model": st.sampled_from(["t", "", "other"]) | json_values,
        "echo": st.booleans() | json_values,
        "logprobs": st.sampled_from([0, None, 5]),
        "prompt_logprobs": st.sampled_from([0, None, 1]),
        "n": st.sampled_from([1, 2]),
        "stream": st.booleans(),
    },
)
completion_bodies = plausible_bodies | st.dictionaries(st.text(max_size=8), json_values, max_size=4)


def test_request_parsing_answers_or_refuses_with_a_4xx(server):
    outcomes: list[int] = []

    @FAST
    @given(body=completion_bodies)
    def check(body):
        try:
            answer = server.completions(body)
        except RequestError as exc:
            assert 400 <= exc.status < 500 and str(exc)
            outcomes.append(int(exc.status))
        else:
            assert answer["choices"] and all("index" in c for c in answer["choices"])
            outcomes.append(200)

    check()
    assert outcomes.count(200) >= 5 and len(set(outcomes)) >= 3, sorted(set(outcomes))  # both paths explored


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200) | completion_bodies.map(lambda b: json.dumps(b).encode()))
def test_the_real_socket_never_answers_500_or_drops_the_connection(server, data):
    request = urllib.request.Request(
        server.url + "/completions", data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload = response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:  # anything else (a dropped connection) fails the test
        status, payload = exc.code, json.loads(exc.read())
    assert status == 200 or (400 <= status < 500 and payload["error"]["message"]), (status, payload)
    with urllib.request.urlopen(server.url[: -len("/v1")] + "/health", timeout=10) as alive:
        assert alive.status == 200
