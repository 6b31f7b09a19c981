"""The error type for problems a user can fix.

`UserError` is a `ValueError` whose message names the problem and the fix in
one line. Entry points print it as one line and exit with code 2; any other
exception is a bug and keeps its traceback.
"""

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input, configuration or files: the message says what to do."""
