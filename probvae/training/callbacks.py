"""What the training loop does around its epochs: the progress line, the
TensorBoard summaries, the best epoch and early stopping, and a step size
that follows the validation ELBO. Each works on the run's `history` (the
JSON the checkpoints carry), so a resumed run continues them exactly."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

import tensorflow as tf

from probvae.errors import UserError
from probvae.registry import SCHEDULES
from probvae.training.step import StepTotals

__all__ = ["Progress", "Summaries", "track_best", "follow_validation"]


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


def track_best(train_config, history: dict, epoch: int, validation_elbo: float,
               save_best: Callable[[], str], log: Callable[[str], None]) -> None:
    """Record `epoch` in history["best"] if its validation ELBO is the best so
    far (with the checkpoint `save_best()` writes when the config keeps the
    best weights), else set history["stopped_early"] once `patience` epochs
    have passed without a better one (never at the last epoch)."""
    best = history["best"]
    if best is None or validation_elbo > best["validation_elbo"]:
        best = {"epoch": epoch, "validation_elbo": validation_elbo, "checkpoint": None}
        if train_config.keep_best:
            best["checkpoint"] = save_best()
        history["best"] = best
    elif (train_config.patience and epoch - best["epoch"] >= train_config.patience
          and epoch < train_config.epochs):
        history["stopped_early"] = epoch
        log(f"early stopping after epoch {epoch}: no better validation ELBO than epoch "
            f"{best['epoch']} ({best['validation_elbo']:.2f}) for {train_config.patience} epochs")


def follow_validation(train_config, history: dict, epoch: int, optimizer, log: Callable[[str], None]) -> None:
    """Let a schedule that follows the validation ELBO (its registry entry's
    `after_validation` trait) set the next epoch's step size on `optimizer`;
    record the epoch's step size and the epoch of the last change in `history`."""
    follow = SCHEDULES[train_config.lr_schedule].load_trait("after_validation")
    if follow is None:
        return
    current = float(optimizer.learning_rate.numpy())
    step_size = follow(train_config, history, epoch, current)
    history["epochs"][-1]["learning_rate"] = current
    if step_size != current:
        optimizer.learning_rate.assign(step_size)
        history["lr_reduced_at"] = epoch
        log(f"step size {current:.3g} -> {step_size:.3g} after epoch {epoch}: no better validation ELBO "
            f"for {epoch - (history['best'] or {}).get('epoch', epoch)} epochs")
