"""Experiment B data: a synthetic "internal documents" corpus and verifiable instruction-following prompts.

Documents state facts about fictional employees (``memo: zorv badge is 482.``); knowledge QA asks for the
fact as a cloze (``memo: zorv badge is`` -> ``482``): the character-level models here are too small to
answer a paraphrased question about a sentence they read, so the question keeps the document's wording.
Instructions are short commands whose answers a rule checks (word counts and keyword frequency through
the IFEval checks of ``mentor.tasks.graders``, exact match for spelling and counting).
"""

from __future__ import annotations

import random

from mentor.tasks.base import Problem
from mentor.tasks.graders import check_instructions, exact_match

ATTRIBUTES = ("badge", "desk")
WORDS = ("cat", "sun", "map", "pen", "box", "cup", "owl", "fig", "jam", "kit", "log", "net", "oak", "pig", "rug",
         "tea", "van", "web", "yak", "zip", "bee", "cow", "dog", "egg", "fox", "hat", "ink", "jet", "key", "lid")


def _names(n: int, rng: random.Random) -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    names: set[str] = set()
    while len(names) < n:
        names.add(rng.choice(consonants) + rng.choice(vowels) + rng.choice(consonants) + rng.choice(consonants))
    return sorted(names)


class InternalDocs:
    """``num_people * len(ATTRIBUTES)`` facts; ``documents`` to mid-train on, ``test_problems`` to quiz."""

    name = "internal_qa"

    def __init__(self, num_people: int = 32, seed: int = 7):
        rng = random.Random(seed)
        self.facts = [(person, attribute, str(rng.randint(100, 999)))
                      for person in _names(num_people, rng) for attribute in ATTRIBUTES]

    def documents(self) -> list[tuple[str, str]]:
        """(prompt, completion) pairs: the memo header is the prompt, the loss is on the statement."""
        return [("memo:", f" {p} {a} is {v}.") for p, a, v in self.facts]

    def test_problems(self, n: int | None = None) -> list[Problem]:
        problems = [Problem(prompt=f"memo: {p} {a} is", answer=v) for p, a, v in self.facts]
        return problems[:n] if n else problems

    def grade(self, completion: str, problem: Problem) -> float:
        return exact_match(completion.strip().rstrip(".").split(" ")[0] if completion.strip() else "", problem)


class Instructions:
    """Three verifiable instruction types; train and test prompts come from disjoint seeds."""

    name = "instructions"

    def _problem(self, rng: random.Random) -> Problem:
        kind = rng.randrange(3)
        word = rng.choice(WORDS)
        if kind == 0:
            n = rng.randint(2, 5)
            return Problem(f"say {word} {n} times:", "", " ".join([word] * n), meta={
                "instruction_id_list": ["keywords:frequency", "length_constraints:number_words"],
                "kwargs": [{"keyword": word, "frequency": n, "relation": "exactly"},
                           {"num_words": n, "relation": "exactly"}]})
        if kind == 1:
            return Problem(f"spell {word} backwards:", word[::-1], word[::-1])
        n = rng.randint(2, 7)
        answer = " ".join(str(i) for i in range(1, n + 1))
        return Problem(f"count to {n}:", answer, answer)

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [self._problem(rng) for _ in range(n)]

    def test_problems(self, n: int) -> list[Problem]:
        return self.train_problems(n, seed=424_242)

    def grade(self, completion: str, problem: Problem) -> float:
        text = completion.strip()
        if problem.meta:
            return float(all(check_instructions(text, problem.meta["instruction_id_list"], problem.meta["kwargs"])))
        return exact_match(text, problem)
