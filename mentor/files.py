"""Reading a file the user named: every way it can fail is one line that says what to change."""

from __future__ import annotations

from pathlib import Path

from mentor.errors import MentorError


def is_url(value: str) -> bool:
    """A model, teacher or labeler given as an http(s) endpoint rather than a path or hub id."""
    return value.startswith(("http://", "https://"))


def read_user_file(
    path: str | Path, what: str, *, missing: str, not_a_file: str, max_bytes: int | None = None, too_big: str = ""
) -> bytes:
    """The bytes of ``path``; ``what`` names it in errors ("data file", "config file"), the rest say what to do.

    The size is checked before reading, so a huge file costs nothing.
    """
    name = str(path)
    path = Path(path)
    if not path.exists():
        raise MentorError(f"{what} {name!r} does not exist: {missing}")
    if not path.is_file():
        raise MentorError(f"{what} {name!r} is not a file: {not_a_file}")
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise MentorError(f"{what} {name!r} is {size / 2**20:.0f} MiB, {too_big}")
        return path.read_bytes()
    except OSError as exc:
        raise MentorError(f"cannot read {what} {name!r} ({exc.strerror}): check its permissions") from None
