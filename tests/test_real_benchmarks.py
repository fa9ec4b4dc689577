"""The published benchmark files, graded by mentor's own graders: every reference answer must score 1 and a
wrong one 0, so a model's score measures the model, not the grader.

Reads ``../shared/real/data`` (``tests/real_assets.py`` finds it); skips when that directory is absent.
"""

import json
import time
from fractions import Fraction

import pytest
from real_assets import SHARED_REAL

from mentor.tasks.graders import code_passes, grade_many, math_match, numeric_match
from mentor.tasks.loaders import last_boxed, load_problems

REAL = SHARED_REAL / "data"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"the real benchmark files are not at {REAL.resolve()}")


def _rows(relative: str) -> list[dict]:
    with (REAL / relative).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_gsm8k_every_reference_answer_parses_to_its_number():
    rows = _rows("gsm8k/test.jsonl")
    problems = load_problems("gsm8k", REAL / "gsm8k/test.jsonl")
    assert len(problems) == len(rows) == 1319
    for row, problem in zip(rows, problems):
        number = Fraction(row["answer"].split("####")[-1].strip().replace(",", ""))
        assert Fraction(problem.answer) == number, row["answer"]
        assert numeric_match(row["answer"], problem) == 1.0, row["answer"]
        assert numeric_match(f"The answer is #### {number + 1}", problem) == 0.0, row["answer"]
        assert numeric_match(f"so the answer is {number}.", problem) == 1.0, row["answer"]


def test_humaneval_every_canonical_solution_passes_and_a_wrong_one_fails():
    problems = load_problems("humaneval", REAL / "humaneval/HumanEval.jsonl")
    assert len(problems) == 164
    wrong = "    return None\n"  # every HumanEval test must reject it, or a pass would mean nothing
    start = time.perf_counter()
    scores = grade_many(code_passes, [p.solution for p in problems] + [wrong] * len(problems), problems * 2)
    elapsed = time.perf_counter() - start
    right, rejected = scores[: len(problems)], scores[len(problems) :]
    assert [p.meta["task_id"] for p, s in zip(problems, right) if s != 1.0] == []
    assert [p.meta["task_id"] for p, s in zip(problems, rejected) if s != 0.0] == []
    print(f"HumanEval: {2 * len(problems)} programs graded in {elapsed:.1f}s")


def test_math500_reference_answers_verify_against_themselves():
    rows = _rows("math500/test.jsonl")
    problems = load_problems("math", REAL / "math500/test.jsonl")
    assert len(problems) == 500
    assert all(p.answer == row["answer"] == last_boxed(row["solution"]) for p, row in zip(problems, rows))
    solutions = [p.solution for p in problems]  # the reference solution, as a model would write it
    verified = grade_many(math_match, solutions, problems, workers=1)
    failed = [p.answer for p, ok in zip(problems, verified) if ok != 1.0]
    rate = 1 - len(failed) / len(problems)
    print(f"MATH-500: {rate:.1%} of the reference solutions verify against their answer; failed: {failed}")
    assert rate >= 0.99, failed
    # and a wrong answer does not: the answer of the next problem, where the two differ
    others = [(p, q.answer) for p, q in zip(problems, problems[1:] + problems[:1]) if p.answer != q.answer][:50]
    assert sum(math_match(f"$\\boxed{{{answer}}}$", p) for p, answer in others) <= 1


def test_ifeval_every_instruction_is_known_and_its_kwargs_accepted():
    pytest.importorskip("lm_eval", reason="IFEval grading needs the ifeval extra: pip install 'mentor[ifeval]'")
    from mentor.tasks.ifeval import follow_instructions, instruction_types

    problems = load_problems("ifeval", REAL / "ifeval/input_data.jsonl")
    assert len(problems) == 541
    used = {name for p in problems for name in p.meta["instruction_id_list"]}
    assert len(used) == 25 and used == set(instruction_types())
    # every record's kwargs build its checkers (IFEval's own checkers refuse arguments they do not take)
    results = [
        follow_instructions("a response", p.meta["instruction_id_list"], p.meta["kwargs"], p.prompt) for p in problems
    ]
    assert sum(len(r.strict) for r in results) == 834
