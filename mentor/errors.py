"""One exception type for problems the user can fix; the CLI prints its message as one line."""


class MentorError(Exception):
    """A problem with the user's input, config or environment, with a message that says what to change."""
