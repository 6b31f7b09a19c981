"""The files of a run directory: their names, which of them probvae wrote,
making the folder for a new run and clearing it for `--overwrite`, atomic
JSON, and checks that an output can be written before the work.

    RUN_DIR/
      config.json        RunConfig: everything needed to rebuild the model
      metrics.json       per-epoch train/validation ELBO, final test numbers
      checkpoints/       tf.train.CheckpointManager checkpoints
      logs/train, logs/validation, logs/hparams   TensorBoard event files
      eval_*.json        evaluations (probvae.evaluation)
      latent_evolution/  latent snapshots (fit --snapshot-latents)
      writer.lock        the one writer's lock (probvae.run_lock)

A run directory is recognised by probvae's own files (`holds_run`): a
config.json that is a probvae config, a metrics.json of probvae, or a
checkpoints/ folder of probvae's checkpoints; other files (a logs/ folder,
say) do not make a run. `--overwrite` deletes only what probvae wrote there
(`run_files`); a config.json or metrics.json that is not probvae's is never
replaced (`check_run_dir` refuses it).

JSON files are written to a temporary file and renamed into place, so a kill
never leaves a truncated file behind. `probvae.runs` re-exports every public
name of this module.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
from typing import Any, Optional

from probvae.errors import UserError
from probvae.run_lock import RunLock

__all__ = [
    "CHECKPOINT_PREFIX",
    "BEST_PREFIX",
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_DIR",
    "LOG_DIR",
    "new_run_dir",
    "holds_run",
    "run_files",
    "check_run_dir",
    "prepare_run_dir",
    "write_json",
    "read_json",
    "check_writable",
    "check_new_folder",
]

CHECKPOINT_PREFIX = "ckpt"
# The weights of the epoch with the best validation ELBO: RUN_DIR/checkpoints/best-<step>.
BEST_PREFIX = "best"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


def new_run_dir(root: str = "runs", prefix: str = "") -> str:
    """A fresh timestamped path under `root` (not created)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(root, f"{prefix}{stamp}")
    suffix = 1
    while os.path.exists(path):
        suffix += 1
        path = os.path.join(root, f"{prefix}{stamp}-{suffix}")
    return path


# What probvae writes into a run directory besides config.json and metrics.json
# (RUN_DIR/latent_evolution is probvae.analysis.report.SNAPSHOT_DIR).
_CHECKPOINT_NAME = re.compile(r"checkpoint(\.tmp\w*)?|(ckpt|best)-\d+(\.index|\.data-\d+-of-\d+|_temp.*)")
_EVENT_FILE = re.compile(r"events\.out\.tfevents\..*")
_SNAPSHOT_DIR, _SNAPSHOT_NAME = "latent_evolution", re.compile(r"epoch_\d+\.png|latent_evolution\.gif")
_ANY_NAME = re.compile(".*")
_RESULT_NAME = re.compile(r"eval_.*\.json|\.tmp-.*\.json")
# The keys that make a JSON file probvae's config.json or metrics.json.
_OWN_KEYS = {CONFIG_FILE: ("data", "model", "train"), METRICS_FILE: ("epochs",)}


def _is_own_json(path: str, keys=()) -> bool:
    """Whether `path` holds a JSON object with `keys` (probvae's, by its content)."""
    try:
        value = read_json(path)
    except UserError:
        return False
    return isinstance(value, dict) and all(key in value for key in keys)


def _matching(directory: str, pattern: "re.Pattern") -> list:
    """Paths of the entries of `directory` whose names match `pattern` ([] without the folder)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, name) for name in names if pattern.fullmatch(name)]


def _foreign_files(path: str) -> list:
    """config.json or metrics.json in `path` that probvae did not write (a run would replace them)."""
    return [os.path.join(path, name) for name, keys in _OWN_KEYS.items()
            if os.path.lexists(os.path.join(path, name)) and not _is_own_json(os.path.join(path, name), keys)]


def holds_run(path: str) -> bool:
    """Whether `path` holds (part of) a probvae run: a probvae config.json or
    metrics.json, or a checkpoints/ folder that is empty or holds probvae's
    checkpoints. Other files (a logs/ folder, say) do not make a run."""
    if not os.path.isdir(path):
        return False
    if any(_is_own_json(os.path.join(path, name), keys) for name, keys in _OWN_KEYS.items()):
        return True
    checkpoints = os.path.join(path, CHECKPOINT_DIR)
    return os.path.isdir(checkpoints) and not os.path.islink(checkpoints) and (
        not os.listdir(checkpoints) or bool(_matching(checkpoints, _CHECKPOINT_NAME)))


def run_files(path: str) -> list:
    """The files and folders of the run in `path` that probvae wrote, which
    `--overwrite` deletes: config.json, metrics.json, the checkpoints, the
    TensorBoard event files in logs/*/, eval_*.json and the latent snapshots
    (then the folders they leave empty). Other files are not listed."""
    found = [os.path.join(path, name) for name, keys in _OWN_KEYS.items()
             if _is_own_json(os.path.join(path, name), keys)]
    found += [name for name in _matching(path, _RESULT_NAME) if _is_own_json(name)]
    found += _matching(os.path.join(path, CHECKPOINT_DIR), _CHECKPOINT_NAME)
    logs = os.path.join(path, LOG_DIR)
    for folder in _matching(logs, _ANY_NAME):
        if os.path.isdir(folder) and not os.path.islink(folder):
            found += _matching(folder, _EVENT_FILE)
    return found + _matching(os.path.join(path, _SNAPSHOT_DIR), _SNAPSHOT_NAME)


def _clear_run(path: str) -> None:
    """Delete `run_files(path)`, then the folders that leaves empty.

    Raises:
      UserError: a file cannot be deleted (naming it).
    """
    path = os.path.normpath(path)
    targets = run_files(path)  # config.json first: a half-cleared folder is never resumed
    folders = {os.path.dirname(target) for target in targets} | {os.path.join(path, CHECKPOINT_DIR)}
    try:
        for target in targets:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.remove(target)
        for folder in sorted(folders, key=lambda f: f.count(os.sep), reverse=True):
            while folder != path and os.path.isdir(folder) and not os.path.islink(folder) and not os.listdir(folder):
                os.rmdir(folder)  # logs/train, then logs
                folder = os.path.dirname(folder)
    except OSError as error:
        raise UserError(f"cannot delete {error.filename} to overwrite the run in {path}: {error.strerror}; fix "
                        "its permissions") from None


def _check_creatable(path: str) -> None:
    """A UserError if the filesystem cannot hold `path` (name or path too long,
    a file or an unwritable folder on the way); creates nothing."""
    absolute = os.path.abspath(path)
    existing = absolute
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"cannot create run directory {path}: {existing} is a file; choose another --run-dir")
    try:
        name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    # Room for the longest name the run writes inside: checkpoints/best-<step>.data-00000-of-00001.
    inner = len("/checkpoints/best-1000000000.data-00000-of-00001.tempstate1234567890")
    long_name = next((part for part in absolute.split(os.sep) if len(part.encode()) > name_max), None)
    if long_name is not None:
        raise UserError(f"cannot create run directory {path}: the name {long_name[:40]}... has "
                        f"{len(long_name.encode())} bytes, more than the filesystem's {name_max}; "
                        "choose a shorter --run-dir")
    if len(absolute.encode()) + inner > path_max:
        raise UserError(f"cannot create run directory {path}: its path has {len(absolute.encode())} bytes and the "
                        f"run's files would pass the filesystem's limit of {path_max}; choose a shorter --run-dir")
    if existing != absolute and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot create run directory {path}: no permission to write in {existing}; choose "
                        "another --run-dir or fix the permissions")


def check_run_dir(path: str, overwrite: bool = False) -> None:
    """Raise a UserError if a new run cannot go to `path`; writes nothing."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"run directory {path} is a file; pass a folder path to --run-dir")
    _check_creatable(path)
    foreign = _foreign_files(path) if os.path.isdir(path) else []
    if foreign:
        raise UserError(f"{foreign[0]} is not a {os.path.basename(foreign[0])} probvae wrote (or it is damaged), "
                        f"and a run in {path} would replace it; move it away, or choose another --run-dir")
    if holds_run(path) and not overwrite:
        raise UserError(
            f"{path} already holds a run; pass --resume {path} to continue it, "
            "--overwrite to replace it, or choose another --run-dir"
        )


def prepare_run_dir(path: str, overwrite: bool = False, lock: Optional[RunLock] = None) -> str:
    """Create `path` for a new run. A folder that holds a run is refused
    unless `overwrite`, which removes the files probvae wrote there
    (`run_files`) and leaves every other file. With a `lock`, the folder is
    created, then locked, then checked and cleared, so no other writer can be
    between the check and the clearing; a folder it created is removed again
    if the lock cannot be taken."""
    check_run_dir(path, overwrite)
    if lock is not None:
        created = not os.path.isdir(path)
        _make_dirs(path)
        try:
            lock.acquire()
        except UserError:
            if created:
                _remove_empty(path)
            raise
        check_run_dir(path, overwrite)
    if holds_run(path):
        _clear_run(path)
    _make_dirs(path)
    return path


def _remove_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _make_dirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run directory {path}: {error.strerror}") from None


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def write_json(path: str, value: Any) -> str:
    """Write `value` as indented JSON to `path` atomically (temp file + rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(value, stream, indent=2, sort_keys=True, allow_nan=True)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}; free disk space or fix permissions") from None
    return path


def read_json(path: str) -> Any:
    """Read a JSON file (UTF-8), with a clear error naming the file.

    Raises:
      UserError: the file is missing, unreadable, not UTF-8 or not JSON.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is this a probvae run directory?") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not readable JSON (not UTF-8 text: byte {error.object[error.start]:#04x} at "
                        f"position {error.start}); restore it or retrain") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error}); restore it or retrain") from None


def check_writable(path: str) -> None:
    """A UserError unless a file can be written at `path` (a new file, or one
    replacing the file there), checked before the work whose result it will
    hold. Creates nothing at `path` (a temporary file beside it is made and
    removed)."""
    if not path:
        raise UserError("an empty output path names no file; give a file name")
    if os.path.isdir(path):
        raise UserError(f"cannot write {path}: a folder of that name is in the way; move it, or give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
        os.close(handle)
        os.remove(temporary)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror} ({directory}); choose another path, or create the "
                        "folder, make it writable or free disk space") from None


def check_new_folder(path: str, what: str) -> None:
    """A UserError unless `path` can be made as a new folder for `what` (e.g.
    "the exported model"): not empty, not there yet, in an existing, writable
    folder. Creates nothing."""
    if not path:
        raise UserError(f"an empty path names no folder; give a new folder for {what}")
    if os.path.lexists(path):
        raise UserError(f"{path} exists; give a new folder for {what}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        existing = parent
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        problem = ("is a file, not a folder" if existing == parent else "does not exist" if os.path.isdir(existing)
                   else f"cannot exist: {existing} is a file")
        raise UserError(f"cannot create {path}: {parent} {problem}; give a new folder for {what} in an existing "
                        "folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {path}: no permission to write in {parent}; give another folder for {what}")
