"""What a task is: a source of problems (prompt, reference solution, answer) and a grader."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mentor.errors import MentorError


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str
    solution: str = ""  # a reference completion (chain of thought + answer), for SFT
    meta: dict = field(default_factory=dict, compare=False, hash=False)


class Task(Protocol):
    name: str

    def train_problems(self, n: int, seed: int) -> list[Problem]: ...

    def test_problems(self, n: int) -> list[Problem]: ...

    def grade(self, completion: str, problem: Problem) -> float: ...


def _draw_budget(n: int) -> int:
    """Draws allowed before a generator is judged to have run out of new problems (instead of looping forever)."""
    return 1_000 + 100 * n


def unique_problems(make: Callable[[random.Random], Problem], n: int, seed: int) -> list[Problem]:
    """``n`` generated problems with distinct prompts (a test set), reproducible from ``seed``."""
    rng, seen, out = random.Random(seed), set(), []
    for _ in range(_draw_budget(n)):
        if len(out) == n:
            return out
        problem = make(rng)
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            out.append(problem)
    if len(out) == n:
        return out
    raise MentorError(
        f"this task has only about {len(out)} distinct problems, fewer than the {n} asked for: "
        f"lower --eval-size (or --size) to at most {len(out)}"
    )


def problems_outside(make: Callable[[random.Random], Problem], n: int, seed: int, exclude: set[str]) -> list[Problem]:
    """``n`` generated problems whose prompts are not in ``exclude`` (training data kept off the test set)."""
    rng, out = random.Random(seed), []
    for _ in range(_draw_budget(n)):
        if len(out) == n:
            return out
        problem = make(rng)
        if problem.prompt not in exclude:
            out.append(problem)
    if len(out) == n:
        return out
    raise MentorError(
        f"this task's generator found only {len(out)} of {n} problems outside its test set: "
        "lower --eval-size so more problems are left for training"
    )
