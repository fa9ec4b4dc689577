"""The library's notes and warnings are ``logging`` records of the ``mentor`` logger; the CLI shows them with rich.

Library code logs with ``logging.getLogger(__name__)`` and never prints: a command's own product (``mentor
check``'s screen, ``mentor eval``'s table, the serving URL) is written by its CLI module. ``mentor``'s
``main()`` calls :func:`setup_cli_logging` once; a program that uses the library either configures logging
as it likes (``logging.basicConfig(level=logging.INFO)``) or calls :func:`setup_cli_logging` for the CLI's
look. Without either, Python's default applies: warnings reach stderr, notes (INFO) are dropped.
"""

from __future__ import annotations

import logging

from rich.highlighter import NullHighlighter
from rich.logging import RichHandler
from rich.text import Text

LOGGER = "mentor"
_LEVEL_STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "bold red"}


class CLIHandler(RichHandler):
    """A rich handler whose line is the message alone (no time, level or path: the lines read as the CLI's own),
    coloured by level, or by a record's ``style`` (``logger.info(..., extra={"style": "green"})``).

    A line is never folded at the console's width: a terminal wraps it, a log file or a pipe keeps it whole (a
    URL or path in it stays one string a script can match). It writes through the training progress bar's
    console, so a line logged during training is printed above the bar instead of breaking it.
    """

    def __init__(self, level: int = logging.INFO):
        from mentor.train.progress import console

        super().__init__(
            level=level,
            console=console,
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
            highlighter=NullHighlighter(),
            keywords=[],
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.render_message(record, self.format(record))
            style = getattr(record, "style", None) or _LEVEL_STYLES.get(record.levelno)
            if style and isinstance(text, Text):
                text.stylize(style)
            self.console.print(text, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging's contract: a failed record is reported, never raised
            self.handleError(record)


def setup_cli_logging(quiet: bool = False) -> logging.Handler:
    """Show the ``mentor`` logger's records on stderr through :class:`CLIHandler`: notes (INFO) and up, or
    only warnings and errors when ``quiet``. Calling it again replaces the handler (one line per record)."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, CLIHandler)]:
        logger.removeHandler(old)
    level = logging.WARNING if quiet else logging.INFO
    handler = CLIHandler(level)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
