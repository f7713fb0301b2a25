"""One error type for everything a user can get wrong.

The CLI turns a :class:`UserError` into a single line on stderr and exit status 2, never a
traceback. Raise it at the edge (config, paths, data), before any run or Ray work starts.
"""


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""

    exit_code = 2

    def __str__(self) -> str:  # keep it to one line whatever the message
        return " ".join(str(self.args[0] if self.args else "").split())


class Interrupted(Exception):
    """A command stopped by the user (SIGINT, Ctrl-C) before its end: the message says what was left
    unfinished and how to finish it; printed as one line, exit status 130 (128 + SIGINT)."""

    exit_code = 130

    def __str__(self) -> str:
        return " ".join(str(self.args[0] if self.args else "").split())
