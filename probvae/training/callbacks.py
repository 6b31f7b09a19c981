"""What the training loop reports as it goes: the progress line of an epoch
and the TensorBoard summaries of each epoch."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

import tensorflow as tf

from probvae.errors import UserError
from probvae.training.step import StepTotals

__all__ = ["Progress", "Summaries"]


class Progress:
    """One line per epoch; on a terminal, a line updated in place during it."""

    def __init__(self, stream=None, every_seconds: float = 1.0):
        self.stream = sys.stderr if stream is None else stream  # the stream of now, not of import time
        self.interactive = self.stream.isatty()
        self.every = every_seconds
        self.last = 0.0

    def update(self, epoch, epochs, done, steps, started, totals: StepTotals):
        now = time.time()
        if not self.interactive or now - self.last < self.every:
            return
        self.last = now
        loss = totals.means()["loss"]
        self.stream.write(f"\repoch {epoch}/{epochs}  step {done}/{steps}  loss {loss:9.3f}  "
                          f"{done / max(now - started, 1e-9):6.1f} steps/s")
        self.stream.flush()

    def end_epoch(self, message):
        self.stream.write(("\r" if self.interactive else "") + message + "\n")
        self.stream.flush()


class Summaries:
    """TensorBoard scalars, one writer per split under `directory` (made on first use).

    Args:
      directory: RUN_DIR/logs.
      latest_checkpoint: () -> the newest checkpoint's name, for the message
        when the disk refuses the summaries.
    """

    def __init__(self, directory: str, latest_checkpoint: Callable[[], Optional[str]]):
        self.directory, self.latest_checkpoint = directory, latest_checkpoint
        self._writers = {}

    def write(self, split: str, values: dict, epoch: int) -> None:
        """The numeric `values` of one split at `epoch`."""
        path = os.path.join(self.directory, split)
        try:
            if split not in self._writers:
                self._writers[split] = tf.summary.create_file_writer(path)
            with self._writers[split].as_default(step=epoch):
                for name, value in values.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        tf.summary.scalar(name, value)
        except (tf.errors.OpError, OSError) as error:
            raise UserError(f"cannot write TensorBoard summaries to {path} ({type(error).__name__}); free disk "
                            f"space or fix permissions, then continue with --resume (checkpoint "
                            f"{self.latest_checkpoint()} is saved)") from None

    def close(self) -> None:
        for writer in self._writers.values():
            writer.flush()
