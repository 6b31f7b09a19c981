"""What the training loop does around its epochs: the progress line, the
TensorBoard summaries, the best epoch and early stopping, a step size that
follows the validation ELBO, and the KL warm-up. The last four read the run's
`RunHistory` (which the checkpoints carry, so a resumed run continues them
exactly) and return a `Decision` (a new best epoch, stop, a step size, a KL
weight) that the loop applies; none changes the history or the model itself."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from probvae.errors import UserError
from probvae.registry import SCHEDULES
from probvae.training import schedules
from probvae.training.history import RunHistory
from probvae.training.step import StepTotals

__all__ = ["duration", "Progress", "Summaries", "Monitor", "monitored", "Decision", "track_best", "follow_validation",
           "kl_warmup"]


def duration(seconds: float) -> str:
    """0.4s, 42s, 3m20s, 1h05m."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """The run's progress.

    During an epoch, on a terminal only, a bar on `stream` (stderr) with the
    steps done, the loss, steps per second and the time left of the epoch and
    of the run, redrawn at most once a `every_seconds` and erased when the
    epoch ends. After each epoch its line goes through `log` (stdout for the
    commands: the run's record, so `fit.py > log` keeps it) with the epoch's
    time and the run's: "about 1h05m left" (an upper bound when early
    stopping may end the run sooner).

    Args:
      log: where the epoch lines go.
      epochs: the run's epochs; early_stopping: whether patience may end it sooner.
    """

    BAR_WIDTH = 24

    def __init__(self, log: Callable[[str], None], epochs: int, early_stopping: bool = False, stream=None,
                 every_seconds: float = 1.0):
        self.log, self.epochs, self.early_stopping = log, epochs, early_stopping
        self.stream = sys.stderr if stream is None else stream  # the stream of now, not of import time
        self.interactive = self.stream.isatty()
        self.every, self.last, self.shown = every_seconds, 0.0, False
        self.epoch_seconds = []  # of the epochs finished in this process

    def _run_left(self, epoch: int, epoch_total: float) -> float:
        """Seconds left after epoch `epoch`'s end, from the median time of the
        last five epochs (leaving out this process's first, which compiles the
        step, once there are others), or this epoch's. The median, so that one
        slow epoch (a machine busy or suspended for a while) does not multiply
        the estimate for the next five."""
        recent = (self.epoch_seconds[1:] or self.epoch_seconds)[-5:]
        typical = float(np.median(recent)) if recent else epoch_total
        return (self.epochs - epoch) * typical

    def update(self, epoch: int, done: int, steps: int, started: float, totals: StepTotals) -> None:
        """Redraw the bar after `done` of `steps` steps of `epoch` (begun at `started`)."""
        now = time.time()
        if not self.interactive or now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - started, 1e-9)
        epoch_left = (steps - done) / max(rate, 1e-9)
        run_left = epoch_left + self._run_left(epoch, now - started + epoch_left)
        filled = int(self.BAR_WIDTH * done / max(steps, 1))
        bar = "=" * filled + (">" if filled < self.BAR_WIDTH else "") + " " * (self.BAR_WIDTH - filled - 1)
        self.stream.write(f"\repoch {epoch}/{self.epochs} [{bar[:self.BAR_WIDTH]}] {done}/{steps}  loss "
                          f"{totals.means()['loss']:.2f}  {rate:.1f} steps/s  epoch ETA {duration(epoch_left)}  "
                          f"run ETA {duration(run_left)}\x1b[K")
        self.stream.flush()
        self.shown = True

    def end_epoch(self, epoch: int, seconds: float, message: str) -> None:
        """Erase the bar and log the epoch's line with its time and the run's time left."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
        self.epoch_seconds.append(seconds)
        left = self._run_left(epoch, seconds)
        suffix = f"{duration(seconds)}"
        if epoch < self.epochs:
            suffix += f"; {'at most' if self.early_stopping else 'about'} {duration(left)} left"
        self.log(f"{message}  ({suffix})")


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

    # Numbers of a result that describe the data, not the model: no curves for them.
    NOT_METRICS = frozenset({"n_examples", "binarization_seed", "skipped_images"})

    def _writing(self, split: str, epoch: int, write: Callable[[], None]) -> None:
        path = os.path.join(self.directory, split)
        try:
            if split not in self._writers:
                self._writers[split] = tf.summary.create_file_writer(path)
            with self._writers[split].as_default(step=epoch):
                write()
        except (tf.errors.OpError, OSError) as error:
            raise UserError(f"cannot write TensorBoard summaries to {path} ({type(error).__name__}); free disk "
                            f"space or fix permissions, then continue with --resume (checkpoint "
                            f"{self.latest_checkpoint()} is saved)") from None

    def write(self, split: str, values: dict, epoch: int) -> None:
        """The numeric `values` of one split at `epoch` as scalars; a list as a histogram."""
        def write():
            for name, value in values.items():
                if name in self.NOT_METRICS or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    tf.summary.scalar(name, value)
                elif isinstance(value, (list, tuple, np.ndarray)) and len(value):
                    tf.summary.histogram(name, np.asarray(value, np.float32))

        self._writing(split, epoch, write)

    def images(self, split: str, images: dict, epoch: int) -> None:
        """{name: float images [k, h, w, c] in [0, 1]} of one split at `epoch`."""
        def write():
            for name, value in images.items():
                tf.summary.image(name, tf.clip_by_value(tf.cast(value, tf.float32), 0.0, 1.0),
                                 max_outputs=int(value.shape[0]))

        self._writing(split, epoch, write)

    def hparams(self, config, metrics: dict, epoch: int) -> None:
        """The run's config as TensorBoard HParams and its final `metrics`
        (e.g. test ELBO) as scalars beside them, for the HParams view."""
        from tensorboard.plugins.hparams import api as hp

        def write():
            values = {key: (value if isinstance(value, (bool, int, float, str)) else str(value))
                      for key, value in config.flat().items() if value is not None}
            hp.hparams(values, trial_id=os.path.basename(os.path.dirname(os.path.abspath(self.directory))))
            for name, value in metrics.items():
                tf.summary.scalar(name, value)

        self._writing("hparams", epoch, write)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.flush()


class Monitor(NamedTuple):
    """What the best epoch, early stopping and the plateau step size follow."""

    key: str  # of the epoch's validation record (and, prefixed "validation_", of history["best"])
    label: str  # for the log
    iwae_samples: int  # K of the validation bound, 0 for the ELBO


def monitored(train_config) -> Monitor:
    """The validation figure a run is judged by: the bound it trains on. The
    ELBO for the "elbo" objective; the importance-weighted bound with the
    training's K for "iwae" with K > 1, which rises as the ELBO may fall (so
    the ELBO would keep the first epochs of such a run as its best)."""
    samples = train_config.train_samples if train_config.objective == "iwae" else 1
    if samples > 1:
        return Monitor("iwae_bound", f"validation IWAE bound (K={samples})", samples)
    return Monitor("elbo", "validation ELBO", 0)


class Decision(NamedTuple):
    """What a callback decided after an epoch; the loop applies it.

    Empty (`Decision()`) when nothing changes.
    """

    best: Optional[dict] = None  # the epoch's record as the new best epoch (its "checkpoint" still to write)
    stop: bool = False  # stop after this epoch (early stopping)
    learning_rate: Optional[float] = None  # the step size of the next epoch (a schedule that follows validation)
    kl_weight: Optional[float] = None  # the KL weight of the epoch about to start (warm-up)
    message: Optional[str] = None  # a line for the log


def track_best(train_config, history: RunHistory, epoch: int, validation: dict) -> Decision:
    """Whether `epoch` is the best so far by its monitored validation figure
    (`monitored`: the ELBO, or the IWAE bound of an importance-weighted run):
    then `Decision(best=record)`, the record keeping the epoch's validation
    ELBO either way; else whether early stopping ends the run, once
    `patience` epochs have passed without a better one (never at the last
    epoch, which ends the run anyway with its own record)."""
    monitor = monitored(train_config)
    key, value = "validation_" + monitor.key, validation[monitor.key]
    best = history.best
    if best is None or value > best.get(key, -np.inf):  # (a run resumed from before the record had `key`)
        record = {"epoch": epoch, "validation_elbo": validation["elbo"], "checkpoint": None}
        record[key] = value
        return Decision(best=record)
    if train_config.patience and epoch - best["epoch"] >= train_config.patience and epoch < train_config.epochs:
        return Decision(stop=True, message=(
            f"early stopping after epoch {epoch}: no better {monitor.label} than epoch "
            f"{best['epoch']} ({best[key]:.2f}) for {train_config.patience} epochs"))
    return Decision()


def follow_validation(train_config, history: RunHistory, epoch: int, step_size: float) -> Decision:
    """The next epoch's step size from a schedule that follows the validation
    figure (`monitored`; its registry entry's `after_validation` trait, given
    the history as its JSON dict), `step_size` being this epoch's; an empty
    `Decision` for other schedules."""
    follow = SCHEDULES[train_config.lr_schedule].load_trait("after_validation")
    if follow is None:
        return Decision()
    following = follow(train_config, history.to_dict(), epoch, step_size)
    message = None
    if following != step_size:
        message = (f"step size {step_size:.3g} -> {following:.3g} after epoch {epoch}: no better "
                   f"{monitored(train_config).label} for {epoch - (history.best or {}).get('epoch', epoch)} epochs")
    return Decision(learning_rate=following, message=message)


def kl_warmup(train_config, epoch: int) -> Decision:
    """The KL weight of `epoch` (`schedules.kl_weight`: beta, warmed up over `kl_warmup_epochs`)."""
    return Decision(kl_weight=schedules.kl_weight(train_config.beta, train_config.kl_warmup_epochs, epoch))
