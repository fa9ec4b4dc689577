"""Built-in task: long chains of single-digit additions, a running sum written after every step.

``06+4=??+0=??+5=??...`` -> ``+4=10+0=10+5=15...``: the prompt gives a start (two digits) and ``STEPS``
addends (0-5), each followed by a blank; the completion copies each addend and writes the running sum
(two digits: at most 9 + 16 x 5 = 89). The last value is the graded answer. Token k of the completion copies
token k+1 of the prompt, so finding the addend is a fixed offset, and each step is one two-digit addition:
per-step accuracy gets high quickly, while a chain is right only if all 16 sums are.
A sequence reward (right or wrong at the end) carries at most one bit for ~80 completion tokens, which is
the regime where the on-policy distillation post's dense per-token teacher signal should matter most.

Why this format (``experiments/paper/s0_probe.md``): a 4x64 model trained by SFT stays at chance on every
modulo-10 chain format tried (the value is uniform given either operand alone, so there is no partial
solution to learn first); a plain running sum is learned. With 8 steps its errors sit on a minority of
problems (chain accuracy tracks per-step accuracy); with 16 they spread over the chain.
"""

from __future__ import annotations

import random
import re

from mentor.tasks.base import Problem, problems_outside, unique_problems

STEPS = 16  # additions per chain
MAX_ADDEND = 5  # keeps every running sum at two digits
STEP = re.compile(r"\+(\d)=(\d+)")
TEST_SEED = 314_159
VALIDATION_SEED = 271_828  # the split learning rates are chosen on; never the reported test set


def _problem(rng: random.Random) -> Problem:
    start = rng.randint(0, 9)
    addends = [rng.randint(0, MAX_ADDEND) for _ in range(STEPS)]
    value, states = start, []
    for addend in addends:
        value += addend
        states.append(f"+{addend}={value:02d}")
    prompt = f"{start:02d}" + "".join(f"+{addend}=??" for addend in addends)
    return Problem(prompt=prompt, answer=f"{value:02d}", solution="".join(states))


def _states(completion: str) -> list[str]:
    """The value after each written step (``+4=10`` -> ``10``), in the order written."""
    return [m.group(2) for m in STEP.finditer(completion.strip())]


def _start_and_addends(problem: Problem) -> tuple[int, list[int]]:
    return int(problem.prompt[:2]), [int(digit) for digit in re.findall(r"\+(\d)=\?\?", problem.prompt)]


def step_accuracy(completion: str, problem: Problem) -> float:
    """Share of the ``STEPS`` sums that are right given the model's own previous value (a local check).

    Missing steps count as wrong; a step after a wrong value is judged from that wrong value, so one slip
    costs one step, not the rest of the chain.
    """
    previous, addends = _start_and_addends(problem)
    states, right = _states(completion), 0
    for i, addend in enumerate(addends):
        if i >= len(states):
            break
        right += int(states[i]) == previous + addend
        previous = int(states[i])
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
            self._held_out = {
                p.prompt for s in (TEST_SEED, VALIDATION_SEED) for p in unique_problems(_problem, exclude_held_out, s)
            }
        return problems_outside(_problem, n, seed, self._held_out)

    def grade(self, completion: str, problem: Problem) -> float:
        states = _states(completion)
        return float(len(states) == STEPS and states[-1] == problem.answer)


class ChainValidationTask(ChainTask):
    """The same task evaluated on the validation split (for choosing learning rates)."""

    name = "chains_val"
    eval_seed = VALIDATION_SEED
