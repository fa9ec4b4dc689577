"""Built-in task: long chains of single-digit additions modulo 10.

``2a4b7c3d7e7f6g9h7=`` -> ``a4=6b7=3c3=6d7=3e7=0f6=6g9=5h7=2``: each step names its addend by the letter
that labels it in the prompt, copies it and writes the running value after it; the last value is the graded
answer. The label right before each addend lets a small model find it by content (an induction head: the
token after this letter in the prompt) rather than by counting positions, which a 4x64 model did not learn
in 700 steps of SFT (nor a copy two tokens after the label, in 500). Each step is a copy and a lookup in a
10 x 10 table, so per-step accuracy gets high quickly, while a whole chain is right only if all ``STEPS``
steps are: a model right on 92% of steps gets about half the chains.
A sequence reward (right or wrong at the end) carries at most one bit for ~40 completion tokens, which is
the regime where the on-policy distillation post's dense per-token teacher signal should matter most.
"""

from __future__ import annotations

import random
import re

from mentor.tasks.base import Problem, problems_outside, unique_problems

STEPS = 8  # operations per chain
LABELS = "abcdefgh"  # one per step
STEP = re.compile(r"([a-h])(\d)=(\d+)")
TEST_SEED = 314_159
VALIDATION_SEED = 271_828  # the split learning rates are chosen on; never the reported test set


def _problem(rng: random.Random) -> Problem:
    value = rng.randint(0, 9)
    prompt, states = str(value), []
    for label in LABELS:
        digit = rng.randint(0, 9)
        value = (value + digit) % 10
        prompt += f"{label}{digit}"
        states.append(f"{label}{digit}={value}")
    return Problem(prompt=prompt + "=", answer=str(value), solution="".join(states))


def _states(completion: str) -> list[str]:
    """The value after each written step (``a4=6`` -> ``6``), in the order written."""
    return [m.group(3) for m in STEP.finditer(completion.strip())]


def _addends(problem: Problem) -> list[int]:
    return [int(digit) for digit in re.findall(r"[a-h](\d)", problem.prompt)]


def step_accuracy(completion: str, problem: Problem) -> float:
    """Share of the ``STEPS`` steps that are right given the model's own previous value (a local check).

    Missing steps count as wrong; a step after a wrong value is judged from that wrong value, so one slip
    costs one step, not the rest of the chain.
    """
    previous, right = problem.prompt[0], 0
    states = _states(completion)
    for i, digit in enumerate(_addends(problem)):
        if i >= len(states) or not (previous.isdigit() and len(previous) == 1):
            break
        expected = (int(previous) + digit) % 10
        right += states[i] == str(expected)
        previous = states[i]
    return right / STEPS


class ChainTask:
    """Test problems from ``TEST_SEED``; training problems avoid the test and validation prompts."""

    name = "chains"
    eval_seed = TEST_SEED

    def __init__(self):
        self._held_out: set[str] | None = None

    def test_problems(self, n: int) -> list[Problem]:
        return unique_problems(_problem, n, self.eval_seed)

    def train_problems(self, n: int, seed: int, exclude_held_out: int = 2_000) -> list[Problem]:
        if self._held_out is None:
            self._held_out = {p.prompt for s in (TEST_SEED, VALIDATION_SEED)
                              for p in unique_problems(_problem, exclude_held_out, s)}
        return problems_outside(_problem, n, seed, self._held_out)

    def grade(self, completion: str, problem: Problem) -> float:
        states = _states(completion)
        return float(len(states) == STEPS and states[-1] == problem.answer)


class ChainValidationTask(ChainTask):
    """The same task evaluated on the validation split (for choosing learning rates)."""

    name = "chains_val"
    eval_seed = VALIDATION_SEED
