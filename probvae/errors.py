"""The errors a user sees as one line instead of a traceback.

- `UserError` is a `ValueError` whose message names the problem and the fix in
  one line: bad input, configuration or files. Entry points print it and exit
  with code 2.
- `NonFiniteError` is the `UserError` training raises when a loss or gradient
  becomes NaN or infinite; the message names the step and the term.
- `UnreadableImagesError` is the `UserError` of a pass over streamed images
  (an image folder) in which none of them could be read any more.
- `TrainingInterrupted` is raised after SIGINT or SIGTERM, once a checkpoint is
  saved; entry points print its message (how to resume) and exit with
  128 + the signal number, as a shell does for a killed process.

Any other exception is a bug and keeps its traceback.
"""

__all__ = ["UserError", "NonFiniteError", "UnreadableImagesError", "TrainingInterrupted"]


class UserError(ValueError):
    """Bad input, configuration or files: the message says what to do."""


class NonFiniteError(UserError):
    """Training met a non-finite loss or gradient and stopped before saving it."""


class UnreadableImagesError(UserError):
    """No image of a streamed split decoded in a pass (files changed or removed on disk)."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = int(signal_number)

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number
