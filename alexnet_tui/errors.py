"""Errors a user can fix; the command line turns them into one line and an exit code."""


class UsageError(Exception):
    """Bad options or input: reported as one line, exit code 2."""

    exit_code = 2
