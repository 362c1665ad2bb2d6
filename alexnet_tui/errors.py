"""Errors a user can fix; the command line turns them into one line and an exit code."""


class UsageError(Exception):
    """Bad options or input: reported as one line, exit code 2."""

    exit_code = 2


class StoppedBeforeStart(Exception):
    """A stop request (Ctrl+C, SIGTERM, x) arrived while the data was being prepared: nothing to save."""
