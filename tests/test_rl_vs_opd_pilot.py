"""A1's task pilot (``experiments/rl_vs_opd/pilot.py``): its problems and its choice rule."""

from __future__ import annotations

from experiments.rl_vs_opd.pilot import SUFFIX, arithmetic, choose


def test_arithmetic_candidates_are_seeded_and_their_answers_right():
    for kind in ("add2", "sub2", "mul1", "add3"):
        rows = arithmetic(kind, 50, seed=1)
        assert rows == arithmetic(kind, 50, seed=1) and rows != arithmetic(kind, 50, seed=2)
        for row in rows:
            expression = row["prompt"].removeprefix("What is ").removesuffix("?" + SUFFIX)
            assert str(eval(expression)) == row["answer"]  # noqa: S307 (digits and + - * only)
            assert int(row["answer"]) > 0


def test_choice_is_the_qualifying_task_closest_to_45_percent():
    assert choose({"add2": 0.9, "sub2": 0.6, "mul1": 0.35, "add3": 0.1}) == "mul1"
    assert choose({"add2": 0.40, "sub2": 0.50}) == "add2"  # a tie goes to the earlier task
    assert choose({"add2": 0.95, "gsm8k": 0.02}) is None
