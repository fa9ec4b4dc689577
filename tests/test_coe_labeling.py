"""CoE step 1: labelers on known inputs, the HTTP LLM labeler against a local server, the per-category files."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mentor.coe.labeling import (
    FieldLabeler,
    KeywordLabeler,
    LLMLabeler,
    http_chat_completer,
    label_records,
    make_labeler,
    parse_category,
)
from mentor.errors import MentorError
from mentor.tasks.coe_tasks import CATEGORY_TASKS, COLLABORATION_TASK
from mentor.tasks.registry import get_task


def test_keyword_labeler_on_known_inputs():
    label = KeywordLabeler()
    assert label("color of bilo?") == "general"
    assert label("37+58*4=") == "math"
    assert label("How many apples are left?") == "math"
    assert label("a=5;b=a;print(b)") == "coding"
    assert label("Write a Python function that reverses a list") == "coding"
    assert label("Who wrote Hamlet?") == "general"
    # the built-in data is labelled exactly by the default rules
    for category, task in CATEGORY_TASKS.items():
        assert {label(p.prompt) for p in get_task(task).test_problems(30)} == {category}


def test_parse_category_takes_the_first_category_named():
    cats = ("general", "math", "coding")
    assert parse_category("Math.", cats, "general") == "math"
    assert parse_category("coding (not math)", cats, "general") == "coding"
    assert parse_category("I am not sure", cats, "general") == "general"
    assert parse_category("mathematics", cats, "general") == "general"  # whole words only


def test_field_labeler_passes_through_and_rejects_unknown():
    assert FieldLabeler().label_record({"prompt": "x", "category": "math"}) == "math"
    with pytest.raises(MentorError, match="category 'poetry'"):
        FieldLabeler().label_record({"prompt": "x", "category": "poetry"})


class _Classifier(BaseHTTPRequestHandler):
    """A stand-in OpenAI-compatible server whose 'model' answers by a visible rule and records requests."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        request_text = body["messages"][0]["content"].split("Request:\n", 1)[1]
        answer = "Coding." if "print(" in request_text else "math" if "=" in request_text else "General"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def classifier_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Classifier)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Classifier.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_llm_labeler_against_a_local_server(classifier_url, tmp_path):
    labeler = LLMLabeler(http_chat_completer(classifier_url, model="judge", api_key="k"))
    assert labeler("a=5;print(a)") == "coding"
    assert labeler("12+3=") == "math"
    assert labeler("color of bilo?") == "general"
    first = _Classifier.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k"
    assert first["body"]["model"] == "judge" and first["body"]["temperature"] == 0.0
    assert "general, math, coding" in first["body"]["messages"][0]["content"]
    # through make_labeler and label_records: one JSONL per category plus counts and the figure
    records = [
        {"prompt": "a=1;print(a)", "completion": "1", "source": "s1"},
        {"prompt": "1+1=", "completion": "2", "source": "s2"},
        {"prompt": "pet of kuno?", "completion": "cat", "source": "s1"},
    ]
    summary = label_records(records, make_labeler("llm", model=f"{classifier_url}/v1#judge"), tmp_path)
    assert summary["counts"] == {"general": 1, "math": 1, "coding": 1}
    coding = [json.loads(line) for line in (tmp_path / "coding.jsonl").read_text().splitlines()]
    assert coding == [{**records[0], "category": "coding"}]
    assert (tmp_path / "labels.png").stat().st_size > 0


def test_http_labeler_reports_a_dead_endpoint_in_one_line():
    complete = http_chat_completer("http://127.0.0.1:9", timeout=2)
    with pytest.raises(MentorError, match="labeler endpoint http://127.0.0.1:9/v1/chat/completions failed"):
        complete("hello")


def test_collaboration_task_programs_compute_their_answers():
    """The grader's answers are what the programs evaluate to (checked by running them)."""
    task = get_task(COLLABORATION_TASK)
    for problem in task.test_problems(50):
        code, shown = problem.prompt.rsplit(";print(", 1)
        env: dict = {}
        for statement in code.split(";"):
            name, expression = statement.split("=")
            env[name] = eval(expression, {}, env)  # the prompt is our own generated arithmetic
        assert str(env[shown.rstrip(")")]) == problem.answer
        assert task.grade(problem.solution, problem) == 1.0
        assert task.grade(problem.solution + "1", problem) == 0.0


def test_mentor_coe_label_cli_writes_one_file_per_category(tmp_path):
    from mentor.cli import main

    data = tmp_path / "sft.jsonl"
    rows = [
        {"prompt": "3+4*2=", "completion": "4*2=8;3+8=11"},
        {"prompt": "a=1;print(a)", "completion": "a=1;1"},
        {"prompt": "city of bilo?", "completion": "oslo"},
        {"prompt": "9-2=", "completion": "7"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "coe"
    assert (
        main(
            [
                "coe",
                "label",
                "--base",
                "unused-by-this-step",
                "--data",
                str(data),
                "--labeler",
                "keyword",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    counts = json.loads((out / "labels" / "labels.json").read_text())["counts"]
    assert counts == {"general": 1, "math": 2, "coding": 1}
    assert (
        main(["coe", "label", "--base", "b", "--data", str(data), "--train", "ffn-only", "--output-dir", str(out)]) == 2
    )  # a bad flag value: one line, exit 2


def test_local_llm_labeler_runs_a_transformers_model(tmp_path):
    """A (random) local model answers the classification prompt; the answer always parses to a category."""
    from conftest import make_model_dir

    from mentor.coe.labeling import local_completer

    labeler = LLMLabeler(local_completer(make_model_dir(tmp_path / "judge"), max_new_tokens=4))
    answers = [labeler(text) for text in ("1+1=", "a=1;print(a)")]
    assert all(a in ("general", "math", "coding") for a in answers)


def test_every_builtin_task_is_known_in_a_fresh_interpreter():
    """get_task must not depend on which task modules the caller happened to import."""
    names = ("arithmetic", *CATEGORY_TASKS.values(), COLLABORATION_TASK)
    code = f"from mentor.tasks.registry import get_task; print(*(type(get_task(n)).__name__ for n in {names!r}))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr.splitlines()[-1:]
    assert result.stdout.split() == ["ArithmeticTask", "GeneralTask", "MathTask", "CodingTask", "PotTask"]


def test_stage_loading_reads_messages_records(tmp_path):
    """SFT data in chat form (messages ending with the assistant's turn) is labelled and loaded for both stages."""
    from mentor.coe.recipe import CoEConfig, label_step, load_category_examples
    from mentor.models.tiny import build_char_tokenizer

    rows = [
        {
            "messages": [{"role": "user", "content": "color of bilo?"}, {"role": "assistant", "content": "red"}],
            "category": "general",
        },
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "12+3="},
                {"role": "assistant", "content": "15"},
            ],
            "category": "math",
        },
        {"prompt": "a=5;print(a)", "completion": "a=5;5", "category": "coding"},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = CoEConfig(base="(unused)", data=str(data), output_dir=str(tmp_path / "out"))
    labels = label_step(config)
    tokenizer = build_char_tokenizer()
    examples = load_category_examples(tokenizer, labels, config.category_list)
    assert [e.reference for e in examples] == [0, 1, 2]
    general, math, coding = examples
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "color of bilo?"}], add_generation_prompt=True)
    assert general.prompt_ids == list(getattr(chat, "input_ids", chat))
    assert tokenizer.decode(general.completion_ids) == "red<eos>"
    assert tokenizer.decode(math.completion_ids) == "15<eos>"
    assert coding.prompt_ids == tokenizer("a=5;print(a)")["input_ids"]
    only_math = load_category_examples(tokenizer, labels, config.category_list, only="math")
    assert [e.reference for e in only_math] == [1]
    from mentor.coe.recipe import labelled_prompts  # what inspect shows: the user text

    assert labelled_prompts(labels, config.category_list) == {
        "general": ["color of bilo?"],
        "math": ["12+3="],
        "coding": ["a=5;print(a)"],
    }
