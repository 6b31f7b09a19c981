"""The state of a training run on disk, and the signals that ask it to stop.

A checkpoint (RUN_DIR/checkpoints/ckpt-<global step>) holds everything the
loop needs to continue as if it had never stopped:

    model        weights, including the KL weight
    optimizer    Adam's moments and iteration count
    step         global step: batches consumed so far; seeds the posterior sample
    epoch        epochs completed
    totals       the on-device sums of the current epoch's training metrics
    host_state   JSON: metrics of the completed epochs, seconds spent in the
                 current one, earlier resumes

Under a tf.distribute strategy the step and epoch are created in its scope
(mirrored on every replica, like the model and optimizer); the host state, a
string, stays on the host, since strings cannot be copied to a GPU. Every
worker of a multi-worker run saves (TensorFlow's multi-worker checkpointing
needs all of them), each to its own directory.

The position inside the current epoch is step - epoch * steps_per_epoch, and
the data pipeline is stateless-seeded by (seed, epoch, step), so the resumed
run sees the very batches the first one would have. A checkpoint is written
by TensorFlow to temporary files and then named in the `checkpoint` state file,
which is replaced atomically, so a kill at any moment leaves the previous
checkpoint usable.

`StopSignals` turns SIGINT and SIGTERM into a flag the loop polls between
steps, so it can save a checkpoint before exiting; a second signal acts at once.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import threading
from typing import Optional

import tensorflow as tf

from probvae.errors import UserError
from probvae.runs import BEST_PREFIX, CHECKPOINT_PREFIX, complete_checkpoints

__all__ = ["RunState", "StopSignals", "find_best"]


def _reason(error: BaseException) -> str:
    """The first line of an error's message, short enough for a one-line report."""
    text = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    lines = str(text).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


class RunState:
    """Checkpoints of a training run: save after good steps, restore to resume.

    Args:
      directory: RUN_DIR/checkpoints.
      max_to_keep: how many checkpoints stay on disk (the oldest go first).
      strategy: the tf.distribute strategy the trackables were made under
        (default: the current one); make the RunState outside its scope.
      **trackables: the objects to checkpoint besides the step, epoch and host
        state (model=..., optimizer=..., totals=...).
    """

    def __init__(self, directory: str, max_to_keep: int = 3, strategy=None, **trackables):
        self.directory = directory
        self._host_state = tf.Variable("{}", dtype=tf.string, trainable=False, name="host_state")
        with (strategy or tf.distribute.get_strategy()).scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.checkpoint = tf.train.Checkpoint(
                step=self.step, epoch=self.epoch, host_state=self._host_state, **trackables
            )
            self._damaged_state_file = self._set_aside_damaged_state_file(directory)
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, directory, max_to_keep=max_to_keep, checkpoint_name=CHECKPOINT_PREFIX
            )

    @staticmethod
    def _set_aside_damaged_state_file(directory: str) -> Optional[str]:
        """A state file TensorFlow cannot parse (not UTF-8, not its text format) is
        renamed to checkpoint.damaged, kept for the user, so the checkpoint manager
        can start; `restore` then warns and resumes from the newest checkpoint file.
        Returns the damaged file's new path, or None."""
        state_file = os.path.join(directory, "checkpoint")
        if not os.path.isfile(state_file):
            return None
        try:
            tf.train.get_checkpoint_state(directory)
            return None
        except ValueError:  # UnicodeDecodeError and text-format parse errors
            kept = state_file + ".damaged"
            os.replace(state_file, kept)
            return kept

    @property
    def latest(self) -> Optional[str]:
        """Prefix of the newest checkpoint, or None."""
        return self.manager.latest_checkpoint

    def save(self, host_state: dict) -> str:
        """Write a checkpoint named after the global step; return its prefix.

        Raises:
          UserError: the disk is full or the folder not writable; the message
            names the path, and the previous checkpoints stay as they were.
        """
        self._host_state.assign(json.dumps(host_state, allow_nan=True))
        step = int(self.step.numpy())
        prefix = os.path.join(self.directory, f"{CHECKPOINT_PREFIX}-{step}")
        try:
            written = self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            self._remove_partial(prefix)
            kept = f"the last good checkpoint {self.latest} is kept" if self.latest else "no checkpoint was kept"
            raise UserError(
                f"cannot write checkpoint {prefix} ({_reason(error)}); free disk space or fix the "
                f"permissions of {self.directory}, then continue with --resume; {kept}"
            ) from None
        self._remove_orphans()
        return written

    def _remove_orphans(self) -> None:
        """Delete step checkpoints the state file does not list: left by a run
        killed between writing a checkpoint and updating the state file (or
        before pruning), so that only the newest `max_to_keep` stay on disk."""
        kept = set(self.manager.checkpoints)
        for prefix in complete_checkpoints(self.directory, CHECKPOINT_PREFIX):
            if prefix not in kept:
                self._remove_partial(prefix)

    def save_best(self) -> str:
        """Write the current state as the best epoch's checkpoint (best-<step>)
        and then delete the earlier best; return its prefix.

        Raises:
          UserError: as `save`; the earlier best checkpoint is kept.
        """
        earlier = complete_checkpoints(self.directory, BEST_PREFIX)
        prefix = os.path.join(self.directory, f"{BEST_PREFIX}-{int(self.step.numpy())}")
        try:
            written = self.checkpoint.write(prefix)
        except (tf.errors.OpError, OSError) as error:
            self._remove_partial(prefix)
            raise UserError(
                f"cannot write checkpoint {prefix} ({_reason(error)}); free disk space or fix the "
                f"permissions of {self.directory}, then continue with --resume"
            ) from None
        for old in earlier:
            if old != written:
                self._remove_partial(old)
        return written

    def _remove_partial(self, prefix: str) -> None:
        """Delete what a failed or killed save left behind for `prefix`."""
        if prefix == self.latest:
            return
        pattern = glob.escape(prefix)
        for path in glob.glob(pattern + ".index") + glob.glob(pattern + ".data-*") + glob.glob(pattern + "_temp*"):
            try:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            except OSError:
                pass

    @staticmethod
    def _newest_on_disk(directory: str) -> Optional[str]:
        """The highest-numbered complete checkpoint in the folder, by file name."""
        complete = complete_checkpoints(directory, CHECKPOINT_PREFIX)
        return complete[-1] if complete else None

    def _checkpoint_to_restore(self, directory: str, log) -> Optional[str]:
        state_file = os.path.join(directory, "checkpoint")
        if self._damaged_state_file and not os.path.exists(state_file):
            found = self._newest_on_disk(directory)
            if found is None:
                raise UserError(f"{state_file} is unreadable (kept as {self._damaged_state_file}) and no checkpoint "
                                "files are left; start again with --overwrite")
            log(f"warning: {state_file} is unreadable (kept as {self._damaged_state_file}); "
                f"resuming from the newest checkpoint file {found}")
            return found
        if not os.path.exists(state_file):
            # Written after the first checkpoint: without it there should be none.
            found = self._newest_on_disk(directory)
            if found:
                log(f"warning: {state_file} is missing; resuming from the newest checkpoint file {found}")
            return found
        try:
            state = tf.train.get_checkpoint_state(directory)
        except ValueError:
            state = None
        if state is None:
            found = self._newest_on_disk(directory)
            if found is None:
                raise UserError(
                    f"{state_file} is unreadable and no checkpoint files are left; start again with --overwrite"
                )
            log(f"warning: {state_file} is unreadable; resuming from the newest checkpoint file {found}")
            return found
        latest = state.model_checkpoint_path
        if not os.path.exists(latest + ".index"):
            others = [p for p in state.all_model_checkpoint_paths if os.path.exists(p + ".index")]
            fix = (f"delete {state_file} to resume from {others[-1]}" if others
                   else "start again with --overwrite")
            raise UserError(f"checkpoint {latest} named in {state_file} is missing; restore its files or {fix}")
        return latest

    def restore(self, log=print, directory: Optional[str] = None) -> Optional[dict]:
        """Load the newest checkpoint into the tracked objects.

        Args:
          directory: where to read checkpoints from; default this state's own
            folder (a worker that is not the chief reads the chief's, which it
            leaves untouched).

        Returns:
          The host state saved with it, or None if the run has no checkpoint yet.

        Raises:
          UserError: the checkpoint is missing, corrupt or from another model
            (naming the file and the fix).
        """
        directory = self.directory if directory is None else directory
        if os.path.abspath(directory) == os.path.abspath(self.directory):
            for leftover in glob.glob(os.path.join(glob.escape(directory), "*_temp*")):
                shutil.rmtree(leftover, ignore_errors=True)  # from a save that was killed
        path = self._checkpoint_to_restore(directory, log)
        if path is None:
            return None
        try:
            self.checkpoint.read(path).assert_existing_objects_matched().expect_partial()
            host_state = json.loads(self._host_state.numpy().decode())
        except Exception as error:  # the checkpoint reader raises many types for damaged files
            raise UserError(
                f"cannot restore checkpoint {path} ({_reason(error)}); it is corrupt or from another model "
                f"or probvae version: delete {path}.* and {os.path.join(directory, 'checkpoint')} "
                "to resume from an older checkpoint, or start again with --overwrite"
            ) from None
        if not isinstance(host_state, dict) or "epochs" not in host_state:
            raise UserError(f"checkpoint {path} holds no training history; start again with --overwrite")
        return host_state


def find_best(name: str, directories: list, run_dir: str) -> str:
    """The prefix of the best epoch's checkpoint `name` in the first of
    `directories` that holds it (a worker resumed after that epoch finds the
    chief's copy in the last).

    Raises:
      UserError: none holds it (the fix names `run_dir`).
    """
    for directory in directories:
        if tf.io.gfile.exists(os.path.join(directory, name) + ".index"):
            return os.path.join(directory, name)
    raise UserError(f"the best epoch's checkpoint {name} is missing from {directories[-1]}; restore its files, or "
                    f"start again with --overwrite (the newest checkpoint can still be evaluated: evaluate.py "
                    f"{run_dir} --checkpoint latest)")


class StopSignals:
    """While active, SIGINT and SIGTERM set `received` instead of stopping.

    The training loop polls `received` between steps and saves a checkpoint
    before it exits. A second signal gets the previous handler (Ctrl-C twice
    stops at once). Outside the main thread nothing is installed.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def _handle(self, number, frame):
        self.received = number
        self._restore_handlers()

    def _restore_handlers(self):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        self._restore_handlers()
        return False

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

