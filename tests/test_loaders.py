"""Loaders on small files in the public schemas of GSM8K, MATH, HumanEval and IFEval, graded end to end."""

from pathlib import Path

import pytest

from mentor.data.loaders import last_boxed, load_problems
from mentor.errors import MentorError
from mentor.tasks.base import get_task

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

    code = main(["eval", tiny_dirs["student"], "--task", f"gsm8k:{DATA / 'gsm8k_sample.jsonl'}", "--size", "2",
                 "--max-new-tokens", "4", "--samples", "3", "--k", "2", "--show", "0"])
    assert code == 0
