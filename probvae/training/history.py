"""The run's history: what the checkpoints carry besides tensors.

`RunHistory` is saved as JSON in every checkpoint (`RunState.save`) and read
back by `fit(..., resume=True)`; its `epochs` list is also metrics.json's. The
JSON keeps the layout of earlier versions (a dict with these keys, the last
three only once set), so runs written before it resume, and runs written by it
resume in those versions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from probvae.errors import UserError

__all__ = ["RunHistory", "check_restored"]


@dataclasses.dataclass
class RunHistory:
    """What a resumed run needs to continue as if it had never stopped."""

    # One record per completed epoch: {"epoch", "seconds", "cpu_seconds", "train": {...}, "validation": {...}}
    # (and "learning_rate" under a schedule that follows the validation figure; no "cpu_seconds" in
    # epochs trained by versions before it).
    epochs: list = dataclasses.field(default_factory=list)
    # Seconds spent in the current epoch up to the newest checkpoint (0 at an epoch end).
    epoch_seconds: float = 0.0
    # The process's CPU seconds (all its threads) in the current epoch up to the newest checkpoint;
    # None for an epoch begun by a version that did not count them (its record then has none).
    epoch_cpu_seconds: Optional[float] = 0.0
    # `GradientNorms.state()` of the current epoch up to the newest checkpoint (None at an epoch end).
    epoch_gradient_norms: Optional[list] = None
    # One record per resume: {"checkpoint", "step", "epoch" (None when training was complete)}.
    resumes: list = dataclasses.field(default_factory=list)
    # Training examples of the data the run trains on (a resume with other data is refused).
    train_examples: Optional[int] = None
    # The best epoch so far: {"epoch", "validation_elbo", "checkpoint" (best-<step> or None)
    # [, "validation_iwae_bound"]}, or None before the first epoch.
    best: Optional[dict] = None
    # The epoch after which early stopping ended the run, or None.
    stopped_early: Optional[int] = None
    # The epoch after which a plateau schedule last lowered the step size (None: never).
    lr_reduced_at: Optional[int] = None
    # {"run_dir", "checkpoint"} of the run whose weights this one started from (--init-from).
    initialized_from: Optional[dict] = None

    # Keys written only once they have a value, as earlier versions did.
    _SET_ONLY = ("lr_reduced_at", "initialized_from", "epoch_gradient_norms")

    def to_dict(self) -> dict:
        """The JSON dict checkpoints hold (and `after_validation` schedules read)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for name in self._SET_ONLY:
            if values[name] is None:
                del values[name]
        return values

    def complete(self, epoch: int, epochs: int) -> bool:
        """Whether training is complete after `epoch` of `epochs` epochs (only the test evaluation is left)."""
        return epoch >= epochs or bool(self.stopped_early)

    def record_resume(self, checkpoint: str, step: int, epoch: int, epochs: int, steps_per_epoch: int) -> str:
        """Record a resume from `checkpoint` (global `step`, `epoch` epochs
        done, of `epochs`); return the line for the log."""
        done = self.complete(epoch, epochs)
        self.resumes.append({"checkpoint": os.path.basename(checkpoint), "step": step,
                             "epoch": None if done else epoch + 1})  # the epoch it continues with
        if done:
            return (f"resuming from {checkpoint}: training is complete ({step} steps done); the final test "
                    "evaluation follows")
        return (f"resuming from {checkpoint}: epoch {epoch + 1}, step {step - epoch * steps_per_epoch} "
                f"of {steps_per_epoch} ({step} steps done)")

    @classmethod
    def from_dict(cls, values: dict) -> "RunHistory":
        """The history of a checkpoint's JSON, of this or an earlier version
        (missing keys take their defaults; unknown ones are left out)."""
        names = {field.name for field in dataclasses.fields(cls)}
        history = cls(**{key: value for key, value in values.items() if key in names})
        history.epoch_seconds = float(history.epoch_seconds or 0.0)
        if "epoch_cpu_seconds" not in values:  # an earlier version's: unknown if it stopped inside an epoch
            history.epoch_cpu_seconds = None if history.epoch_seconds else 0.0
        elif history.epoch_cpu_seconds is not None:
            history.epoch_cpu_seconds = float(history.epoch_cpu_seconds)
        return history


def check_restored(history: RunHistory, checkpoint: str, step: int, epoch: int, steps_per_epoch: int,
                   train_examples: int) -> None:
    """Refuse a checkpoint (at global `step`, after `epoch` epochs) that does
    not fit the run as it is now: trained on another number of examples, or
    at a position outside an epoch of `steps_per_epoch` steps, or with another
    number of epochs in its history (a resumed run would see other batches).

    Raises:
      UserError: naming the mismatch and the fix.
    """
    if history.train_examples != train_examples:
        raise UserError(f"the run trained on {history.train_examples} examples, the data now gives "
                        f"{train_examples}; resume with the same data, or start a new run")
    position = step - epoch * steps_per_epoch
    if not 0 <= position < steps_per_epoch or len(history.epochs) != epoch:
        raise UserError(f"checkpoint {checkpoint} (step {step}, epoch {epoch}) does not fit "
                        f"{steps_per_epoch} steps per epoch; start again with --overwrite")
