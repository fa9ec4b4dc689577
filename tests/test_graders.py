"""Graders on known right and wrong answers, including code that loops forever or reaches for the OS."""

import time

import pytest

from mentor.tasks.base import Problem
from mentor.tasks.graders import (check_instructions, code_passes, exact_match, extract_number, math_match,
                                  numeric_match)


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


HUMANEVAL = {"prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
             "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
             "entry_point": "add"}


def test_code_right_wrong_and_fenced():
    assert code_passes("    return a + b\n", HUMANEVAL) == 1.0
    assert code_passes("    return a - b\n", HUMANEVAL) == 0.0
    assert code_passes("Here:\n```python\ndef add(a, b):\n    return b + a\n```\n", HUMANEVAL) == 1.0
    assert code_passes("    return a +\n", HUMANEVAL) == 0.0  # syntax error


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


@pytest.mark.parametrize("ids,kwargs,response,expected", [
    (["length_constraints:number_words"], [{"relation": "at least", "num_words": 5}], "one two three four five", [True]),
    (["length_constraints:number_words"], [{"relation": "less than", "num_words": 3}], "one two three", [False]),
    (["keywords:existence"], [{"keywords": ["ledger", "audit"]}], "The audit found the ledger.", [True]),
    (["keywords:existence"], [{"keywords": ["ledger"]}], "No such word.", [False]),
    (["detectable_format:json_format"], [{}], '```json\n{"a": 1}\n```', [True]),
    (["detectable_format:json_format"], [{}], "{a: 1}", [False]),
    (["change_case:english_capital", "punctuation:no_comma"], [{}, {}], "HELLO THERE, FRIEND", [True, False]),
    (["detectable_format:number_bullet_lists"], [{"num_bullets": 2}], "* a\n* b\n", [True]),
    (["startend:end_checker"], [{"end_phrase": "Any questions?"}], "Done. Any questions?", [True]),
])
def test_instruction_checks(ids, kwargs, response, expected):
    assert check_instructions(response, ids, kwargs) == expected
