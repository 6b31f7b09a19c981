"""The run directory: what `fit` writes and what analysis code loads.

`load_run(run_dir)` rebuilds the trained model from config.json and the
latest (or a named) checkpoint. Reading config.json imports the modules it
records as the owners of the run's components (a user's prior), so no
reader needs to be told about them (`import_components` does only that). `resume_config(run_dir, requested)` is the
config a resumed run continues with: the saved one, refusing requests that
contradict it (only the keys in `RESUME_MAY_CHANGE` may differ).
(`probvae.training.preflight.prepare_run` checks flags, data and directory before a run writes anything.)
Evaluations are written beside them as RUN_DIR/eval_*.json
(`probvae.evaluation.files` names and reads them).

The folder's files, what probvae wrote there, creating and clearing it, and
atomic JSON are `probvae.run_dir`; the one-writer lock is
`probvae.run_lock`. This module re-exports both.
"""

from __future__ import annotations

import gc
import glob
import os
import re
import sys
from typing import Any, Callable, NamedTuple, Optional

from probvae.config import RunConfig
from probvae.errors import UserError
from probvae.run_dir import (
    BEST_PREFIX,
    CHECKPOINT_DIR,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    LOG_DIR,
    METRICS_FILE,
    check_new_folder,
    check_run_dir,
    check_writable,
    holds_run,
    new_run_dir,
    prepare_run_dir,
    read_json,
    run_files,
    write_json,
)
from probvae.run_lock import LOCK_FILE, RunLock

__all__ = [
    "CHECKPOINT_PREFIX",
    "BEST_PREFIX",
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_DIR",
    "LOG_DIR",
    "RESUME_MAY_CHANGE",
    "new_run_dir",
    "check_run_dir",
    "prepare_run_dir",
    "resume_config",
    "holds_run",
    "run_files",
    "check_writable",
    "check_new_folder",
    "write_json",
    "read_json",
    "save_config",
    "run_checkpoint",
    "load_config",
    "import_components",
    "complete_checkpoints",
    "best_checkpoint",
    "latest_checkpoint",
    "LoadedRun",
    "open_run",
    "read_weights",
    "load_run",
    "LOCK_FILE",
    "RunLock",
]


# Config keys a resumed run may change: how the run is carried out, not what
# it computes from good batches (the fields declared with resume=True).
RESUME_MAY_CHANGE = RunConfig.resumable()


def save_config(run_dir: str, config: RunConfig) -> str:
    return write_json(os.path.join(run_dir, CONFIG_FILE), config.to_dict())


def load_config(run_dir: str) -> RunConfig:
    """The RunConfig saved in `run_dir`, with the file named in any error."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise UserError(f"a run directory is a path (the folder fit.py printed), got {run_dir!r}")
    if not os.fspath(run_dir):
        raise UserError("an empty path names no run directory; pass the folder fit.py printed")
    if os.path.isfile(run_dir):
        raise UserError(f"run directory {run_dir} is a file; pass the folder fit.py printed")
    if not os.path.isdir(run_dir):
        raise UserError(f"run directory {run_dir} does not exist; pass the folder fit.py printed")
    path = os.path.join(run_dir, CONFIG_FILE)
    values = read_json(path)
    try:
        return RunConfig.from_dict(values)
    except (ValueError, TypeError) as error:  # (chained: --debug shows a failing module's traceback)
        raise UserError(f"{path}: {error}") from error


def import_components(run_dir: str) -> None:
    """Import the modules `run_dir`'s config.json records as the owners of the
    run's components (`RunConfig.import_components`); nothing if the file is
    not there (its readers say so).

    Raises:
      UserError: a module that cannot be imported, with the file named.
    """
    path = os.path.join(run_dir, CONFIG_FILE) if isinstance(run_dir, (str, os.PathLike)) else None
    if path is None or not os.path.isfile(path):
        return
    values = read_json(path)  # (its errors name the file)
    try:
        RunConfig.import_components(values)
    except UserError as error:
        raise UserError(f"{path}: {error}") from error


def resume_config(run_dir: str, requested: Optional[RunConfig] = None) -> RunConfig:
    """The config a resumed run of `run_dir` continues with.

    Args:
      run_dir: a run directory holding config.json.
      requested: the config asked for (e.g. from command-line flags), or None
        for the saved one. Its `model.image_shape` may be None (from the data)
        and its `train.precision` None (the run's own).

    Returns:
      The saved config, with the `RESUME_MAY_CHANGE` keys taken from `requested`.

    Raises:
      UserError: no run there, an unreadable or incompatible config.json, or a
        request that contradicts it (naming each differing key).
    """
    if not os.path.isdir(run_dir):
        raise UserError(f"cannot resume: run directory {run_dir} does not exist; pass the folder fit.py printed")
    if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        if holds_run(run_dir):  # checkpoints, metrics or logs without their config
            raise UserError(
                f"cannot resume: {run_dir} holds a run without its {CONFIG_FILE}, which says how to rebuild the "
                f"model; restore that file, or start over with --run-dir {run_dir} --overwrite (deletes the run's "
                "checkpoints, metrics and logs)")
        raise UserError(
            f"cannot resume: {run_dir} holds no {CONFIG_FILE}; start a new run there with --run-dir {run_dir}"
        )
    saved = load_config(run_dir)
    if requested is None:
        return saved
    if requested.model.image_shape is None:
        requested = requested.replace(model={"image_shape": saved.model.image_shape})
    if requested.train.precision is None:  # the default: what the run chose when it started
        requested = requested.replace(train={"precision": saved.train.precision})
    differing = [key for key in saved.differences(requested) if key not in RESUME_MAY_CHANGE]
    if differing:
        saved_values, requested_values = saved.flat(), requested.flat()
        changes = ", ".join(f"{key} {saved_values.get(key)!r} (asked {requested_values.get(key)!r})"
                            for key in differing)
        raise UserError(
            f"cannot resume {run_dir} with a different configuration: its {CONFIG_FILE} has {changes}; "
            "drop the contradicting flags, or start a new run with another --run-dir"
        )
    changes = {}
    for key in RESUME_MAY_CHANGE:
        section, name = key.split(".")
        changes.setdefault(section, {})[name] = getattr(getattr(requested, section), name)
    return saved.replace(**changes)


def _step_of(prefix: str, name: str = CHECKPOINT_PREFIX) -> int:
    match = re.search(rf"{name}-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def complete_checkpoints(directory: str, name: str) -> list:
    """Prefixes of the complete checkpoints `name`-<step> in `directory`
    (index and data files both there), oldest first."""
    prefixes = [path[: -len(".index")] for path in glob.glob(
        os.path.join(glob.escape(directory), f"{name}-*.index"))]
    complete = [p for p in prefixes if _step_of(p, name) >= 0 and glob.glob(glob.escape(p) + ".data-*")]
    return sorted(complete, key=lambda p: _step_of(p, name))


def best_checkpoint(directory: str) -> Optional[str]:
    """Prefix of the best-epoch checkpoint in `directory` (RUN_DIR/checkpoints), or None."""
    found = complete_checkpoints(directory, BEST_PREFIX)
    return found[-1] if found else None


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def latest_checkpoint(run_dir: str, log: Callable[[str], None] = _warn) -> Optional[str]:
    """Prefix of the newest checkpoint in `run_dir`, or None: the one the
    state file checkpoints/checkpoint names; if that file is unreadable (or
    names no checkpoint on disk), the highest-numbered complete checkpoint
    file, with a warning passed to `log` (default: stderr)."""
    import tensorflow as tf

    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    try:
        found = tf.train.latest_checkpoint(folder)
    except ValueError:  # not UTF-8, or naming no checkpoint
        found = None
    state_file = os.path.join(folder, "checkpoint")
    if found is None and os.path.exists(state_file):
        complete = complete_checkpoints(folder, CHECKPOINT_PREFIX)
        if complete:
            log(f"warning: {state_file} is unreadable; using the newest checkpoint file {complete[-1]}")
            return complete[-1]
    return found


def run_checkpoint(run_dir: str, which: str = "model") -> str:
    """Prefix of a run's "latest" or "best" checkpoint, or of its "model": the
    best epoch's if there is one, else the latest.

    Raises:
      UserError: the run has no such checkpoint.
    """
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    found = best_checkpoint(folder) if which in ("best", "model") else None
    if found is None and which != "best":
        found = latest_checkpoint(run_dir)
    if found is None:
        what = "best-epoch checkpoint (best-<step>)" if which == "best" else "checkpoint"
        raise UserError(f"no {what} in {folder}; train the run (fit.py) first")
    return found


class LoadedRun(NamedTuple):
    """What `open_run` restores."""

    model: Any  # the VAE with the checkpoint's weights
    config: RunConfig  # config.json
    checkpoint: str  # the checkpoint prefix its weights come from


def open_run(run_dir: str, checkpoint: Optional[str] = None) -> "LoadedRun":
    """A run's trained `VAE`, its config and the checkpoint it was restored from.

    Works in a fresh process: nothing of the training code needs to have run.

    Args:
      run_dir: a directory written by `probvae.fit`.
      checkpoint: a checkpoint prefix (a path, or a name such as "ckpt-3"
        inside RUN_DIR/checkpoints), "latest" or "best"; default: the run's
        model, i.e. the best epoch's weights (best-<step>) when the run keeps
        them, else the latest checkpoint.

    Returns:
      `LoadedRun(model, config, checkpoint)`.

    Raises:
      UserError: no such run, no checkpoint, an unreadable checkpoint or a
        config this version cannot build, naming the file.
    """
    from probvae.model import VAE

    config = load_config(run_dir)  # names a missing run directory
    try:
        model = VAE(config.model)
    except UserError as error:
        raise UserError(f"{os.path.join(run_dir, CONFIG_FILE)}: {error}") from None
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise UserError(f"a checkpoint is a path or a name such as 'ckpt-3', 'best' or 'latest', got {checkpoint!r}")
    checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    if checkpoint in (None, "best", "latest"):
        checkpoint = run_checkpoint(run_dir, checkpoint or "model")
    elif not os.path.exists(checkpoint + ".index"):
        candidate = os.path.join(run_dir, CHECKPOINT_DIR, checkpoint)
        if not os.path.exists(candidate + ".index"):
            raise UserError(f"checkpoint {checkpoint} not found (looked for {candidate}.index)")
        checkpoint = candidate
    read_weights(model, checkpoint)
    return LoadedRun(model, config, checkpoint)


def read_weights(model, checkpoint: str) -> None:
    """Load a checkpoint's model weights (every variable of `model` must be
    in it) into `model`.

    Raises:
      UserError: the checkpoint is unreadable or holds another model.
    """
    import tensorflow as tf

    logger = tf.get_logger()
    level, first_line = logger.level, None
    # A failed restore lists every checkpoint value it did not restore (dozens of WARNING lines) when its
    # bookkeeping is deleted, though the error below already says it all: the warnings are off meanwhile.
    logger.setLevel("ERROR")
    try:
        try:
            tf.train.Checkpoint(model=model).read(checkpoint).expect_partial().assert_existing_objects_matched()
        except Exception as error:  # any failure to read the file means a bad checkpoint
            first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        if first_line is not None:
            gc.collect()
    finally:
        logger.setLevel(level)
    if first_line is not None:
        raise UserError(
            f"cannot restore checkpoint {checkpoint} ({first_line}); it is corrupt or from another model"
        ) from None


def load_run(run_dir: str, checkpoint: Optional[str] = None):
    """The trained `VAE` of a run (`open_run(...).model`): config.json and
    the run's best-epoch checkpoint (or `checkpoint`), in any process."""
    return open_run(run_dir, checkpoint).model
