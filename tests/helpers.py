"""Helpers more than one test module uses (instead of tests importing each other's privates)."""

from __future__ import annotations

import re


def one_clear_line(capsys, *patterns: str) -> str:
    """The CLI's promise for bad input: no traceback, one ``mentor: error:`` line on stderr, matching each pattern."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mentor: error: ")
    for pattern in patterns:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]
