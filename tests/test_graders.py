"""Graders on known right and wrong answers, including code that loops forever or reaches for the OS."""

import time

import pytest

from mentor.errors import MentorError
from mentor.tasks.base import Problem
from mentor.tasks.graders import (
    check_instructions,
    code_passes,
    exact_match,
    extract_number,
    grade_many,
    math_match,
    numeric_match,
)


def test_exact_and_numeric():
    assert exact_match("  Paris. ", "paris") == 1.0
    assert exact_match("Lyon", "paris") == 0.0
    assert extract_number("so she has 3 + 4 = 7 apples.\n#### 1,234") == "1,234"
    assert numeric_match("The answer is 72.", "Natalia sold 48/2 = 24 ... #### 72") == 1.0
    assert numeric_match("\\boxed{0.5}", "1/2") == 1.0
    assert numeric_match("I think 71", Problem("q", "72")) == 0.0
    assert numeric_match("no number here", "72") == 0.0


def test_math_verify_equivalence():
    assert math_match("so the result is $\\boxed{\\frac{1}{2}}$", "0.5") == 1.0
    assert math_match("$\\boxed{2\\sqrt{2}}$", "\\sqrt{8}") == 1.0
    assert math_match("$\\boxed{3}$", "\\frac{1}{2}") == 0.0
    # an escaped dollar is a price, not a math delimiter (MATH-500 answers such as \$18.90)
    assert math_match("costs $\\boxed{\\$18.90}$", "\\$18.90") == 1.0
    assert math_match("costs $\\boxed{\\$19}$", "\\$18.90") == 0.0


HUMANEVAL = {
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


def test_code_right_wrong_and_fenced():
    assert code_passes("    return a + b\n", HUMANEVAL) == 1.0
    assert code_passes("    return a - b\n", HUMANEVAL) == 0.0
    assert code_passes("Here:\n```python\ndef add(a, b):\n    return b + a\n```\n", HUMANEVAL) == 1.0
    assert code_passes("    return a +\n", HUMANEVAL) == 0.0  # syntax error


def test_a_whole_function_may_use_the_prompts_imports_and_helpers():
    problem = {
        "prompt": 'import math\n\ndef half(x):\n    return x / 2\n\ndef f(x):\n    """half of sqrt"""\n',
        "test": "def check(candidate):\n    assert candidate(16) == 2\n",
        "entry_point": "f",
    }
    assert code_passes("```python\ndef f(x):\n    return half(math.sqrt(x))\n```", problem) == 1.0
    assert code_passes("    return half(math.sqrt(x))\n", problem) == 1.0


def test_grade_many_keeps_the_order():
    bodies = ["    return a + b\n", "    return a - b\n"] * 3
    assert grade_many(code_passes, bodies, [HUMANEVAL] * 6, workers=2) == [1.0, 0.0] * 3
    assert grade_many(exact_match, ["a", "b"], ["a", "a"], workers=1) == [1.0, 0.0]


def test_code_that_loops_forever_is_killed():
    start = time.perf_counter()
    assert code_passes("    while True:\n        pass\n", HUMANEVAL, timeout=1.0) == 0.0
    assert time.perf_counter() - start < 5


def test_code_cannot_use_os_or_network(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("x")
    body = f"    import os\n    os.remove({str(victim)!r})\n    return a + b\n"
    assert code_passes(body, HUMANEVAL) == 0.0
    assert victim.exists()
    assert code_passes("    import os\n    os.system('echo hi')\n    return a + b\n", HUMANEVAL) == 0.0
    net = "    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n    return a + b\n"
    assert code_passes(net, HUMANEVAL) == 0.0
    # reading the environment is harmless and allowed
    assert code_passes("    import os\n    os.getcwd()\n    return a + b\n", HUMANEVAL) == 1.0


LOWER = "the weather today is calm and the sea is quiet so we will sail along the coast"


@pytest.mark.parametrize(
    "name,kwargs,response,expected",
    [
        # Punkt (NLTK's English model) does not end a sentence at "Dr.": three sentences
        (
            "length_constraints:number_sentences",
            {"relation": "at least", "num_sentences": 3},
            "Dr. Smith went home. He was tired. Then he slept.",
            True,
        ),
        (
            "length_constraints:number_sentences",
            {"relation": "at least", "num_sentences": 4},
            "Dr. Smith went home. He was tired. Then he slept.",
            False,
        ),
        ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "one two three", True),
        ("length_constraints:number_words", {"relation": "at least", "num_words": 4}, "one two three", False),
        (
            "change_case:capital_word_frequency",
            {"capital_relation": "at least", "capital_frequency": 4},
            "THE CAT met THE DOG.",
            True,
        ),
        (
            "change_case:capital_word_frequency",
            {"capital_relation": "less than", "capital_frequency": 4},
            "THE CAT met THE DOG.",
            False,
        ),
        ("change_case:english_lowercase", {}, LOWER, True),
        ("change_case:english_lowercase", {}, LOWER.capitalize(), False),
        ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
        ("detectable_format:number_highlighted_sections", {"num_highlights": 3}, "*one* and **two**", False),
        ("detectable_format:title", {}, "<<A Calm Sea>>\nWe sailed.", True),
        ("detectable_format:title", {}, "A Calm Sea\nWe sailed.", False),
        ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', True),
        ("detectable_format:json_format", {}, "{a: 1}", False),
        (
            "detectable_format:multiple_sections",
            {"section_spliter": "Section", "num_sections": 2},
            "Section 1\nfirst\nSection 2\nsecond",
            True,
        ),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, "See you.\nP.S. bring a coat", True),
        ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
        ("detectable_content:number_placeholders", {"num_placeholders": 3}, "Dear [name], at [address].", False),
        ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "first\n***\nsecond", True),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
            "First we ate.\n\nThen we slept.",
            True,
        ),
        ("combination:two_responses", {}, "Yes.\n******\nNo.", True),
        ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Say hi. Hi!", True),
        ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Hi!", False),
        ("keywords:existence", {"keywords": ["ledger", "audit"]}, "The audit found the ledger.", True),
        ("keywords:forbidden_words", {"forbidden_words": ["ledger"]}, "The audit found the ledger.", False),
        ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "zz top", True),
        ("punctuation:no_comma", {}, "HELLO THERE, FRIEND", False),
        ("startend:end_checker", {"end_phrase": "Any questions?"}, "Done. Any questions?", True),
        ("startend:quotation", {}, '"quoted"', True),
        ("detectable_format:constrained_response", {}, "My answer is yes.", True),
        (
            "language:response_language",
            {"language": "de"},
            "Das Wetter ist heute ruhig und wir segeln entlang der Küste.",
            True,
        ),
        ("language:response_language", {"language": "de"}, LOWER, False),
        # mentor's extension: "exactly N" is IFEval's "at least N" and "less than N + 1"
        ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "exactly"}, "cat cat cat", True),
        ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "exactly"}, "cat cat cat", False),
        ("keywords:frequency", {"keyword": "cat", "frequency": 4, "relation": "exactly"}, "cat cat cat", False),
    ],
)
def test_ifeval_checks(name, kwargs, response, expected):
    pytest.importorskip("lm_eval", reason="IFEval needs the ifeval extra")
    assert check_instructions(response, [name], [kwargs], prompt="Say hi.") == [expected]


def test_ifeval_loose_tries_the_response_without_its_first_or_last_line_and_without_stars():
    pytest.importorskip("lm_eval", reason="IFEval needs the ifeval extra")
    from mentor.tasks.ifeval import follow_instructions

    chatty = f"Sure, here it is:\n{LOWER}"
    result = follow_instructions(chatty, ["change_case:english_lowercase"], [{}])
    assert result.strict == (False,) and result.loose == (True,)
    starred = follow_instructions('**"quoted"**', ["startend:quotation"], [{}])
    assert starred.strict == (False,) and starred.loose == (True,)
    plain = follow_instructions("No quotes here.", ["startend:quotation"], [{}])
    assert plain.strict == plain.loose == (False,)
    assert follow_instructions("", ["punctuation:no_comma"], [{}]).loose == (False,)  # an empty answer follows nothing
    with pytest.raises(MentorError, match="unknown IFEval instruction"):
        follow_instructions("x", ["keywords:made_up"], [{}])


def test_ifeval_scores_prompt_and_instruction_level():
    from mentor.tasks.ifeval import IFEvalResult, ifeval_scores

    results = [
        IFEvalResult(("a", "b"), strict=(True, False), loose=(True, True)),
        IFEvalResult(("c",), strict=(True,), loose=(True,)),
        IFEvalResult(("d", "e", "f"), strict=(False, False, True), loose=(False, True, True)),
    ]
    scores = ifeval_scores(results)
    assert scores["prompt_strict"] == pytest.approx(1 / 3)  # only the second prompt follows all
    assert scores["instruction_strict"] == pytest.approx(3 / 6)
    assert scores["prompt_loose"] == pytest.approx(2 / 3)
    assert scores["instruction_loose"] == pytest.approx(5 / 6)


def test_a_generator_that_runs_out_of_problems_is_one_line_not_a_hang():
    import random

    from mentor.errors import MentorError
    from mentor.tasks.base import Problem, problems_outside, unique_problems

    def three(rng: random.Random) -> Problem:
        value = rng.randrange(3)
        return Problem(f"{value}=", str(value))

    assert len(unique_problems(three, 3, seed=0)) == 3
    with pytest.raises(MentorError, match="only about 3 distinct problems"):
        unique_problems(three, 5, seed=0)
    with pytest.raises(MentorError, match="outside its test set"):
        problems_outside(three, 2, seed=0, exclude={"0=", "1=", "2="})
