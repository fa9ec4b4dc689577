"""Loaders on small files in the public schemas of GSM8K, MATH, HumanEval and IFEval, graded end to end."""

import json
from pathlib import Path

import pytest

from mentor.errors import MentorError
from mentor.tasks.loaders import last_boxed, load_problems
from mentor.tasks.registry import get_task

DATA = Path(__file__).parent / "data"


def test_gsm8k():
    task = get_task(f"gsm8k:{DATA / 'gsm8k_sample.jsonl'}")
    problems = task.test_problems(10)
    assert [p.answer for p in problems] == ["72", "10", "2000"]
    assert problems[0].prompt.startswith("Natalia")
    assert task.grade("She sold 72 clips.", problems[0]) == 1.0
    assert task.grade("#### 2,000", problems[2]) == 1.0
    assert task.grade("#### 71", problems[0]) == 0.0
    assert len(task.train_problems(7, seed=0)) == 7


def test_math():
    task = get_task(f"math:{DATA / 'math_sample.jsonl'}")
    first, second = task.test_problems(2)
    assert first.answer == "\\frac{5}{6}" and second.answer == "2\\sqrt{2}"
    assert first.meta["type"] == "Prealgebra"
    assert task.grade("the sum is $\\boxed{\\frac{10}{12}}$", first) == 1.0
    assert task.grade("$\\boxed{\\sqrt{8}}$", second) == 1.0
    assert task.grade("$\\boxed{1}$", first) == 0.0
    assert last_boxed("a \\boxed{\\frac{a}{b}} b") == "\\frac{a}{b}"


def test_humaneval_runs_the_tests():
    task = get_task(f"humaneval:{DATA / 'humaneval_sample.jsonl'}")
    add, even = task.test_problems(2)
    assert task.grade(add.solution, add) == 1.0 and task.grade(even.solution, even) == 1.0
    assert task.grade("    return a * b\n", add) == 0.0


def test_ifeval():
    task = get_task(f"ifeval:{DATA / 'ifeval_sample.jsonl'}")
    note, lower = task.test_problems(2)
    assert task.grade("The audit checked every line of the ledger twice.", note) == 1.0
    assert task.grade("The audit was fine.", note) == 0.0
    assert task.grade("a book of accounts", lower) == 1.0
    assert task.grade("A book, of accounts", lower) == 0.0


def test_bad_records_fail_with_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "no answer"}\n')
    with pytest.raises(MentorError, match="bad.jsonl:2: a gsm8k record needs answer"):
        load_problems("gsm8k", bad)
    with pytest.raises(MentorError, match="unknown data schema"):
        load_problems("mmlu", bad)


def test_pass_at_k_by_hand():
    from mentor.evaluation.cli import pass_at_k

    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 3, 2) == 1.0


def test_eval_a_file_task_with_pass_at_k(tiny_dirs, tmp_path):
    from mentor.cli import main

    code = main(
        [
            "eval",
            tiny_dirs["student"],
            "--task",
            f"gsm8k:{DATA / 'gsm8k_sample.jsonl'}",
            "--size",
            "2",
            "--max-new-tokens",
            "4",
            "--samples",
            "3",
            "--k",
            "2",
            "--show",
            "0",
            "--records",
            str(tmp_path / "samples.jsonl"),
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [(r["problem"], r["sample"]) for r in records] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]


def test_eval_prints_the_table_on_stdout_and_never_overwrites_records(tiny_dirs, tmp_path, capsys, monkeypatch):
    from mentor.cli import main

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "eval_samples.jsonl"
    mine.write_text("a file mentor did not write\n")
    args = [
        "eval",
        tiny_dirs["student"],
        "--task",
        f"gsm8k:{DATA / 'gsm8k_sample.jsonl'}",
        "--size",
        "3",
        "--max-new-tokens",
        "4",
        "--show",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gsm8k:gsm8k_sample.jsonl: 3 held-out problems" in out and "accuracy (greedy)" in out
    assert mine.read_text() == "a file mentor did not write\n"
    records = [json.loads(line) for line in (tmp_path / "eval_samples-1.jsonl").read_text().splitlines()]
    assert len(records) == 3 and records[0]["reference"] == "72" and records[0]["prompt"].startswith("Natalia")
    assert set(records[0]) == {"problem", "sample", "prompt", "completion", "reference", "correct"}
    assert main(args) == 0  # a second run: a third file
    assert (tmp_path / "eval_samples-2.jsonl").exists() and "eval_samples-2.jsonl" in capsys.readouterr().out


def test_eval_of_a_run_directory_writes_records_beside_eval_jsonl(tiny_dirs):
    from mentor.cli import main

    run = Path(tiny_dirs["root"]) / "teacher_run"
    assert main(["eval", str(run), "--size", "2", "--max-new-tokens", "4", "--show", "0"]) == 0
    result = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert Path(result["records"]).parent == run
    assert result["chat_template"] is False  # as the run was trained (its tokenizer has a template)
    assert len((Path(result["records"])).read_text().splitlines()) == 2


def test_eval_ifeval_reports_the_four_accuracies_and_each_instruction(tiny_dirs, tmp_path, capsys):
    pytest.importorskip("lm_eval", reason="IFEval needs the ifeval extra")
    from mentor.cli import main

    records = tmp_path / "ifeval.jsonl"
    assert (
        main(
            [
                "eval",
                tiny_dirs["student"],
                "--task",
                f"ifeval:{DATA / 'ifeval_sample.jsonl'}",
                "--size",
                "2",
                "--max-new-tokens",
                "4",
                "--show",
                "0",
                "--records",
                str(records),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for column in ("prompt-level strict", "instruction-level strict", "prompt-level loose", "instruction-level loose"):
        assert column in out
    first = json.loads(records.read_text().splitlines()[0])
    assert [i["id"] for i in first["instructions"]] == ["length_constraints:number_words", "keywords:existence"]
    assert set(first["instructions"][0]) == {"id", "strict", "loose"} and first["id"] == 1000
    assert first["reference"]["kwargs"][1] == {"keywords": ["ledger", "audit"]}


def test_eval_chat_template_by_default_when_the_tokenizer_has_one(tiny_dirs, tmp_path, capsys):
    import shutil

    from mentor.cli import main

    args = ["--size", "1", "--max-new-tokens", "2", "--show", "0", "--records", str(tmp_path / "r.jsonl")]
    assert main(["eval", tiny_dirs["student"], *args]) == 0
    assert "chat template on" in capsys.readouterr().err
    plain = tmp_path / "plain"
    shutil.copytree(tiny_dirs["student"], plain)
    (plain / "chat_template.jinja").unlink()
    assert main(["eval", str(plain), *args]) == 0
    assert "chat template off" in capsys.readouterr().err
    assert main(["eval", str(plain), "--chat-template", *args]) == 2
    assert "has no chat template" in capsys.readouterr().err


def test_a_record_whose_text_field_is_not_text_is_one_line(tmp_path):
    """Found by tests/test_fuzz.py: a MATH record with ``"solution": null`` crashed in last_boxed."""
    import json

    from mentor.errors import MentorError
    from mentor.tasks.loaders import load_problems

    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"problem": None, "solution": None}) + "\n")
    with pytest.raises(
        MentorError, match=r"math.jsonl:1: not a valid math record \(problem must be a string, not NoneType\)"
    ):
        load_problems("math", path)
    path.write_text(json.dumps({"question": 3, "answer": "#### 3"}) + "\n")
    with pytest.raises(MentorError, match=r"question must be a string, not int"):
        load_problems("gsm8k", path)
