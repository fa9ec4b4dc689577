"""Built-in CoE tasks: three categories that compete for a small model's capacity, and one that needs two.

- ``coe_general``: recall facts from a synthetic knowledge base (``color of bilo?`` -> ``red``). The facts
  are the training data; the test asks the same facts (knowledge, like MMLU tests pre-training recall).
- ``coe_math``: multi-step arithmetic with a chain of thought (``mentor/tasks/arithmetic.py``).
- ``coe_coding``: trace a tiny straight-line program (``a=5;b=a;print(b)`` -> ``a=5;b=5;5``); the
  assignments copy constants and variables, so the skill is program semantics, not arithmetic.
- ``coe_pot`` (collaboration, like program-of-thought math): a program whose assignments are arithmetic
  (``x=58*4;y=37+x;print(y)`` -> ``x=232;y=269;269``): the trace format of coding and the computation
  of math at once. A small share of these is in the coding training data (``POT_SHARE``); the test
  programs are disjoint.

Every prompt uses only characters of ``mentor.models.tiny.DEFAULT_ALPHABET``.
"""

from __future__ import annotations

import random
import re

from mentor.tasks.arithmetic import ArithmeticTask, _problem as arithmetic_problem
from mentor.tasks.base import Problem, problems_outside, unique_problems

TEST_SEED = 424_242
KB_SEED = 7
COLORS = ["red", "blue", "green", "black", "white", "pink", "gray", "gold"]
CITIES = ["oslo", "lima", "rome", "kyiv", "baku", "doha", "riga", "bern"]
PETS = ["cat", "dog", "owl", "fox", "yak", "eel", "bat", "ant"]
ATTRIBUTES = {"color": COLORS, "city": CITIES, "pet": PETS}
POT_SHARE = 0.1  # fraction of coding training problems that are arithmetic programs


def knowledge_base(num_entities: int = 60, seed: int = KB_SEED) -> dict[str, dict[str, str]]:
    """Made-up entities (pronounceable names) with one value per attribute; fixed by ``seed``."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfgklmnprstvz", "aeiou"
    names: dict[str, dict[str, str]] = {}
    while len(names) < num_entities:
        name = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(2))
        names.setdefault(name, {attr: rng.choice(values) for attr, values in ATTRIBUTES.items()})
    return names


def last_field(completion: str) -> str:
    """The text after the last ``;`` or ``=`` (the answer of every CoE task), stripped."""
    return re.split(r"[;=]", completion.strip())[-1].strip()


class _Graded:
    name = ""

    def grade(self, completion: str, problem: Problem) -> float:
        return float(last_field(completion) == problem.answer)


class GeneralTask(_Graded):
    name = "coe_general"

    def __init__(self, num_entities: int = 60):
        facts = [(e, a, v) for e, attrs in knowledge_base(num_entities).items() for a, v in attrs.items()]
        self.problems = [Problem(prompt=f"{a} of {e}?", answer=v, solution=v) for e, a, v in facts]

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [rng.choice(self.problems) for _ in range(n)]

    def test_problems(self, n: int) -> list[Problem]:
        return random.Random(TEST_SEED).sample(self.problems, min(n, len(self.problems)))


class MathTask(_Graded):
    name = "coe_math"

    def __init__(self):
        self._arithmetic = ArithmeticTask()

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        return self._arithmetic.train_problems(n, seed)

    def test_problems(self, n: int) -> list[Problem]:
        return self._arithmetic.test_problems(n)


VARIABLES = "abcdefghkmnpqrstuvwxyz"


def copy_program(rng: random.Random) -> Problem:
    """2-4 assignments of constants or earlier variables, then print one of them."""
    names = rng.sample(VARIABLES, rng.randint(2, 4))
    values: dict[str, int] = {}
    code, trace = [], []
    for name in names:
        if values and rng.random() < 0.5:
            source = rng.choice(list(values))
            values[name] = values[source]
            code.append(f"{name}={source}")
        else:
            values[name] = rng.randint(0, 99)
            code.append(f"{name}={values[name]}")
        trace.append(f"{name}={values[name]}")
    shown = rng.choice(names[1:])
    answer = str(values[shown])
    return Problem(prompt=";".join(code) + f";print({shown})", answer=answer,
                   solution=";".join(trace + [answer]))


def arithmetic_program(rng: random.Random) -> Problem:
    """An arithmetic chain of thought rewritten as a program: ``x=58*4;y=37+x;print(y)``."""
    steps = arithmetic_problem(rng).solution.split(";")  # ["58*4=232", "37+232=269"]
    first, second = rng.sample(VARIABLES, 2)
    (expr1, value1), (expr2, value2) = (s.rsplit("=", 1) for s in steps)
    left, op, right = re.fullmatch(r"(\d+)([-+*])(\d+)", expr2).groups()
    expr2 = f"{first}{op}{right}" if left == value1 else f"{left}{op}{first}"  # the operand step 1 computed
    code = f"{first}={expr1};{second}={expr2};print({second})"
    return Problem(prompt=code, answer=value2, solution=f"{first}={value1};{second}={value2};{value2}")


class CodingTask(_Graded):
    name = "coe_coding"

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        test = {p.prompt for p in self.test_problems(500)} | {p.prompt for p in PotTask().test_problems(500)}
        n_pot = int(n * POT_SHARE)
        mixed = problems_outside(copy_program, n - n_pot, seed, test) + problems_outside(arithmetic_program, n_pot, seed + 1, test)
        random.Random(seed).shuffle(mixed)
        return mixed

    def test_problems(self, n: int) -> list[Problem]:
        return unique_problems(copy_program, n, TEST_SEED)


class PotTask(_Graded):
    """Collaboration: the program's trace needs the coding format and the math computation."""

    name = "coe_pot"

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        return problems_outside(arithmetic_program, n, seed, {p.prompt for p in self.test_problems(500)})

    def test_problems(self, n: int) -> list[Problem]:
        return unique_problems(arithmetic_program, n, TEST_SEED + 1)


CATEGORY_TASKS = {"general": "coe_general", "math": "coe_math", "coding": "coe_coding"}
COLLABORATION_TASK = "coe_pot"
