"""The library logs to the ``mentor`` logger; the CLI's handler shows the records on stderr as plain lines."""

from __future__ import annotations

import logging

import pytest

from mentor.logs import CLIHandler, setup_cli_logging


@pytest.fixture()
def mentor_logger():
    logger = logging.getLogger("mentor")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_the_cli_handler_writes_each_record_as_its_message_alone_on_one_line(mentor_logger, capsys):
    setup_cli_logging()
    setup_cli_logging()  # main() may run many times in one process: still one handler, one line per record
    assert sum(isinstance(h, CLIHandler) for h in mentor_logger.handlers) == 1
    url = "http://127.0.0.1:8000/v1/completions"
    long = f"waiting for the teacher server at {url} to answer [{'x' * 150}]"  # brackets are not markup
    logging.getLogger("mentor.score.http").warning(long)
    logging.getLogger("mentor.recipes.sft").info("teacher samples: 3 read from a/b (not re-sampled)")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [long, "teacher samples: 3 read from a/b (not re-sampled)"]


def test_quiet_shows_only_warnings(mentor_logger, capsys):
    setup_cli_logging(quiet=True)
    logging.getLogger("mentor.cli").info("done: 3 steps")
    logging.getLogger("mentor.backends").warning("warning: teacher and student: they differ")
    assert capsys.readouterr().err.splitlines() == ["warning: teacher and student: they differ"]
