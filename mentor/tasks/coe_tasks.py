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

from mentor.tasks.arithmetic import ArithmeticTask
from mentor.tasks.arithmetic import _problem as arithmetic_problem
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
    return Problem(prompt=";".join(code) + f";print({shown})", answer=answer, solution=";".join(trace + [answer]))


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
        mixed = problems_outside(copy_program, n - n_pot, seed, test) + problems_outside(
            arithmetic_program, n_pot, seed + 1, test
        )
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


# --- the bench's setting (``mentor bench coe``): three domains of FFN knowledge over a pretrained base -------
# Every domain is a table of new knowledge the base never saw: facts about new entities, new binary operators
# on digits, new built-in functions on 0..99. The base's corpus (``neutral_corpus``) teaches the formats and the
# composition ``fn(a op b)`` with *other* facts, operators and functions, so a domain's SFT only has to add
# knowledge, which FFN-only training can store. A fixed share of each table is held out of all training: the
# router is probed on those tokens. Test problems are trained items (recall, as MMLU tests pre-training recall).
HELDOUT_SHARE = 0.1
DOMAIN_SEED = 13
NEW_ATTRIBUTES = ATTRIBUTES  # color / city / pet
BASE_ATTRIBUTES = {
    "food": ["rice", "corn", "fish", "plum", "kale", "lime", "taco", "soup"],
    "size": ["tiny", "small", "big", "huge", "wide", "tall", "long", "slim"],
    "home": ["cave", "nest", "hut", "barn", "tent", "boat", "den", "loft"],
}
NEW_OPERATORS = {
    "zap": lambda a, b: (a * b + a + b) % 100,
    "vop": lambda a, b: (a * a + 3 * b) % 100,
    "kel": lambda a, b: (7 * a + b * b) % 100,
}
BASE_OPERATORS = {"add": lambda a, b: a + b, "max": max, "min": min, "dif": lambda a, b: abs(a - b)}
NEW_FUNCTIONS = {
    "gup": lambda x: (7 * x + 3) % 100,
    "mox": lambda x: (x % 10) * 10 + x // 10,
    "tiv": lambda x: (x * x + 1) % 100,
}
BASE_FUNCTIONS = {
    "inc": lambda x: (x + 1) % 100,
    "dec": lambda x: (x - 1) % 100,
    "dbl": lambda x: (2 * x) % 100,
    "hlf": lambda x: x // 2,
}
CHAIN_SHARE = 0.5  # functions-domain chains over base operators, per standalone function item


def entity_names(n: int, seed: int, syllables: int = 2, exclude: frozenset = frozenset()) -> list[str]:
    """``n`` distinct pronounceable names (consonant + vowel syllables) from ``seed``."""
    rng, names = random.Random(seed), []
    while len(names) < n:
        name = "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(syllables))
        if name not in names and name not in exclude:
            names.append(name)
    return names


def fact_items(attributes: dict[str, list[str]], names: list[str], seed: int) -> list[Problem]:
    rng = random.Random(seed)
    return [
        Problem(prompt=f"{attr} of {name}?", answer=value, solution=value)
        for name in names
        for attr, values in attributes.items()
        for value in [rng.choice(values)]
    ]


def operator_items(operators: dict) -> list[Problem]:
    return [
        Problem(prompt=f"{a} {op} {b}=", answer=str(f(a, b)), solution=str(f(a, b)), meta={"op": op})
        for op, f in operators.items()
        for a in range(10)
        for b in range(10)
    ]


def function_items(functions: dict) -> list[Problem]:
    return [
        Problem(prompt=f"{fn}({x})=", answer=str(f(x)), solution=str(f(x)), meta={"fn": fn, "x": x})
        for fn, f in functions.items()
        for x in range(100)
    ]


def chain_item(fn: str, functions: dict, op: str, operators: dict, a: int, b: int) -> Problem:
    """``fn(a op b)`` solved step by step: ``a op b=x;fn(x)=y;y``."""
    x = operators[op](a, b)
    y = functions[fn](x)
    return Problem(prompt=f"{fn}({a} {op} {b})=", answer=str(y), solution=f"{a} {op} {b}={x};{fn}({x})={y};{y}")


BASE_NAMES = entity_names(100, DOMAIN_SEED + 1)
DOMAIN_NAMES = entity_names(100, DOMAIN_SEED + 2, exclude=frozenset(BASE_NAMES))


def neutral_items() -> dict[str, list[Problem]]:
    """The base's pre-training items by kind: other facts, known operators and functions, their composition."""
    return {
        "facts": fact_items(BASE_ATTRIBUTES, BASE_NAMES, DOMAIN_SEED),
        "operators": operator_items(BASE_OPERATORS),
        "functions": function_items(BASE_FUNCTIONS),
        "chains": [
            chain_item(fn, BASE_FUNCTIONS, op, BASE_OPERATORS, a, b)
            for fn in BASE_FUNCTIONS
            for op in BASE_OPERATORS
            for a in range(10)
            for b in range(10)
        ],
    }


def neutral_corpus() -> list[str]:
    """The base's pre-training text: every neutral item as one line (prompt and solution)."""
    return [p.prompt + p.solution for items in neutral_items().values() for p in items]


def split_heldout(items: list[Problem], seed: int = DOMAIN_SEED) -> tuple[list[Problem], list[Problem]]:
    """(trained, held out): a fixed ``HELDOUT_SHARE`` of a table is never trained on."""
    order = random.Random(seed).sample(items, len(items))
    cut = round(len(items) * HELDOUT_SHARE)
    return order[cut:], order[:cut]


class _KnowledgeDomain(_Graded):
    """A table of new knowledge: train on the trained part, test recall on it, probe routing on the held-out part."""

    def table(self) -> list[Problem]:
        raise NotImplementedError

    def trained(self) -> list[Problem]:
        return split_heldout(self.table())[0]

    def heldout(self) -> list[Problem]:
        return split_heldout(self.table())[1]

    def training_data(self) -> list[Problem]:
        """Every training example of the domain, once (the bench's SFT data)."""
        return self.trained()

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        rng, data = random.Random(seed), self.training_data()
        return [rng.choice(data) for _ in range(n)]

    def test_problems(self, n: int) -> list[Problem]:
        trained = self.trained()
        return random.Random(TEST_SEED).sample(trained, min(n, len(trained)))


class FactsTask(_KnowledgeDomain):
    name = "coe_facts"

    def table(self) -> list[Problem]:
        return fact_items(NEW_ATTRIBUTES, DOMAIN_NAMES, DOMAIN_SEED)


class OperatorsTask(_KnowledgeDomain):
    name = "coe_operators"

    def table(self) -> list[Problem]:
        return operator_items(NEW_OPERATORS)


class FunctionsTask(_KnowledgeDomain):
    """New functions, alone and (a ``CHAIN_SHARE``) applied to a base operator's result, as code calls built-ins."""

    name = "coe_functions"

    def table(self) -> list[Problem]:
        return function_items(NEW_FUNCTIONS)

    def training_data(self) -> list[Problem]:
        trained = self.trained()
        known = {(p.meta["fn"], p.meta["x"]) for p in trained}
        rng = random.Random(DOMAIN_SEED)
        combos = [
            (fn, op, a, b)
            for fn in NEW_FUNCTIONS
            for op in BASE_OPERATORS
            for a in range(10)
            for b in range(10)
            if (fn, BASE_OPERATORS[op](a, b)) in known
        ]
        chains = [
            chain_item(fn, NEW_FUNCTIONS, op, BASE_OPERATORS, a, b)
            for fn, op, a, b in rng.sample(combos, round(len(trained) * CHAIN_SHARE))
        ]
        return trained + chains


class OperatorFunctionTask(_Graded):
    """Collaboration: a new function of a new operator's result (``gup(3 zap 4)=``) needs two domains' knowledge.

    Only trained operator pairs and function arguments occur; no example of this form is trained on.
    """

    name = "coe_op_function"

    def problems(self) -> list[Problem]:
        ops = {(p.meta["op"], p.prompt) for p in OperatorsTask().trained()}
        fns = {(p.meta["fn"], p.meta["x"]) for p in FunctionsTask().trained()}
        out = []
        for op, prompt in sorted(ops):
            a, b = (int(v) for v in prompt.rstrip("=").split(f" {op} "))
            out += [
                chain_item(fn, NEW_FUNCTIONS, op, NEW_OPERATORS, a, b)
                for fn in NEW_FUNCTIONS
                if (fn, NEW_OPERATORS[op](a, b)) in fns
            ]
        return out

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        raise ValueError("coe_op_function is a test of collaboration: nothing of its form is trained on")

    def test_problems(self, n: int) -> list[Problem]:
        problems = self.problems()
        return random.Random(TEST_SEED).sample(problems, min(n, len(problems)))


DOMAIN_TASKS = {"facts": "coe_facts", "operators": "coe_operators", "functions": "coe_functions"}
DOMAIN_COLLABORATION_TASK = "coe_op_function"
