"""Built-in task: multi-step arithmetic with a chain of thought and a verifiable final answer.

``37+58*4=`` -> ``58*4=232;37+232=269``. Operator precedence forces a plan (which product first), each
step is a small exact computation, and the last number after ``=`` is graded against the true value.
The held-out test set is drawn from a separate seed and never overlaps the training stream.
"""

from __future__ import annotations

import random
import re

from mentor.tasks.base import Problem, problems_outside, unique_problems

TEST_SEED = 987_654_321


def _problem(rng: random.Random) -> Problem:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    c = rng.randint(2, 9)
    form = rng.randrange(4)
    if form == 0:  # a+b*c
        prompt, x = f"{a}+{b}*{c}=", b * c
        steps = [f"{b}*{c}={x}", f"{a}+{x}={a + x}"]
    elif form == 1:  # a*c+b
        prompt, x = f"{a}*{c}+{b}=", a * c
        steps = [f"{a}*{c}={x}", f"{x}+{b}={x + b}"]
    elif form == 2:  # a+b+c
        prompt, x = f"{a}+{b}+{c}=", a + b
        steps = [f"{a}+{b}={x}", f"{x}+{c}={x + c}"]
    else:  # a*c-b, kept non-negative
        x = a * c
        b = min(b, x)
        prompt = f"{a}*{c}-{b}="
        steps = [f"{a}*{c}={x}", f"{x}-{b}={x - b}"]
    answer = steps[-1].rsplit("=", 1)[1]
    return Problem(prompt=prompt, answer=answer, solution=";".join(steps))


def final_answer(completion: str) -> str | None:
    """The number after the last ``=`` of the completion (None if there is none)."""
    match = re.search(r"=\s*(-?\d+)\s*$", completion.strip())
    return match.group(1) if match else None


class ArithmeticTask:
    name = "arithmetic"

    def __init__(self):
        self._test_prompts: set[str] | None = None

    def test_problems(self, n: int) -> list[Problem]:
        return unique_problems(_problem, n, TEST_SEED)

    def train_problems(self, n: int, seed: int, exclude_test: int = 500) -> list[Problem]:
        if self._test_prompts is None:
            self._test_prompts = {p.prompt for p in self.test_problems(exclude_test)}
        return problems_outside(_problem, n, seed, self._test_prompts)

    def grade(self, completion: str, problem: Problem) -> float:
        return float(final_answer(completion) == problem.answer)
