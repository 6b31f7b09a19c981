"""The run directory: what `fit` writes and what analysis code loads.

    RUN_DIR/
      config.json        RunConfig: everything needed to rebuild the model
      metrics.json       per-epoch train/validation ELBO, final test numbers
      checkpoints/       tf.train.CheckpointManager checkpoints
      logs/train, logs/validation   TensorBoard event files

`load_run(run_dir)` rebuilds the trained model from config.json and the
latest (or a named) checkpoint. `resume_config(run_dir, requested)` is the
config a resumed run continues with: the saved one, refusing requests that
contradict it (only the keys in `RESUME_MAY_CHANGE` may differ).
(`probvae.training.preflight.prepare_run` checks flags, data and directory before a run writes anything.)
Evaluations are written beside them as RUN_DIR/eval_*.json
(`probvae.evaluation.files` names and reads them).

JSON files are written to a temporary file and renamed into place, so a kill
never leaves a truncated file behind.

One writer per run: `RunLock` holds RUN_DIR/writer.lock (an exclusive
`flock`, released by the kernel when the process ends, however it ends, and
the holder's PID, host, command and start time) from before a run writes
anything until it stops. A second writer gets a `UserError` naming the
holder; a lock file left by a process that died is taken over with a
message. Readers (`load_run`, evaluation, inspection) take no lock: every
file they read is renamed into place whole.
"""

from __future__ import annotations

import datetime
import gc
import glob
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from typing import Any, Callable, NamedTuple, Optional

from probvae.config import RunConfig
from probvae.errors import UserError

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
    "write_json",
    "read_json",
    "save_config",
    "run_checkpoint",
    "load_config",
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

CHECKPOINT_PREFIX = "ckpt"
# The weights of the epoch with the best validation ELBO: RUN_DIR/checkpoints/best-<step>.
BEST_PREFIX = "best"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
_RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR, LOG_DIR)
LOCK_FILE = "writer.lock"

# Config keys a resumed run may change: how the run is carried out, not what
# it computes from good batches (the fields declared with resume=True).
RESUME_MAY_CHANGE = RunConfig.resumable()


def new_run_dir(root: str = "runs", prefix: str = "") -> str:
    """A fresh timestamped path under `root` (not created)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(root, f"{prefix}{stamp}")
    suffix = 1
    while os.path.exists(path):
        suffix += 1
        path = os.path.join(root, f"{prefix}{stamp}-{suffix}")
    return path


def holds_run(path: str) -> bool:
    """Whether `path` already holds (part of) a probvae run."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, e)) for e in _RUN_ENTRIES)


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
                        f"{len(long_name.encode())} bytes, more than the filesystem's {name_max}; choose a shorter --run-dir")
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
    if holds_run(path) and not overwrite:
        raise UserError(
            f"{path} already holds a run; pass --resume {path} to continue it, "
            "--overwrite to replace it, or choose another --run-dir"
        )


def prepare_run_dir(path: str, overwrite: bool = False, lock: Optional["RunLock"] = None) -> str:
    """Create `path` for a new run. A folder that holds a run is refused
    unless `overwrite`, which removes that run's files (and only those).
    With a `lock`, the folder is created, then locked, then checked and
    cleared, so no other writer can be between the check and the clearing."""
    check_run_dir(path, overwrite)
    if lock is not None:
        _make_dirs(path)
        lock.acquire()
        check_run_dir(path, overwrite)
    if holds_run(path):
        for entry in _RUN_ENTRIES:
            target = os.path.join(path, entry)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    _make_dirs(path)
    return path


def _make_dirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run directory {path}: {error.strerror}") from None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The exclusive right to write one run directory (see the module docstring).

    `acquire()` (or entering the context) takes RUN_DIR/writer.lock if the
    directory exists, and is a no-op if it is held already; `release()` (or
    leaving the context) gives it up and removes the file. A directory that
    does not exist yet is locked when `prepare_run_dir` creates it.

    Raises:
      UserError: another live process holds the lock (the message names it).
    """

    def __init__(self, run_dir: str, log: Callable[[str], None] = print):
        self.run_dir, self.log, self._fd = run_dir, log, None

    @property
    def path(self) -> str:
        return os.path.join(self.run_dir, LOCK_FILE)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        if os.path.isdir(self.run_dir):
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = json.loads(os.read(fd, 65536).decode() or "{}")
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def describe(holder: dict) -> str:
        """"PID 123 on host h (fit.py ..., since ...)" of a lock file's contents."""
        if not holder:
            return "another process"
        text = f"PID {holder.get('pid')} on host {holder.get('host')}"
        if holder.get("since"):
            text += f", since {holder['since']}"
        return text

    def _lock(self, fd: int, holder: dict) -> None:
        """flock `fd` (without flock: check the PID the file names).

        Raises:
          UserError: another live process holds the lock.
        """
        try:
            import fcntl
        except ImportError:  # no flock on this platform: the PID in the file is the lock
            fcntl = None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif holder.get("host") == socket.gethostname() and _process_alive(int(holder.get("pid", -1))):
                raise BlockingIOError
        except (BlockingIOError, PermissionError):
            raise UserError(f"run directory {self.run_dir} is being written by {self.describe(holder)}; wait "
                            f"for that run to end or stop it (it saves a checkpoint), then pass --resume "
                            f"{self.run_dir}") from None

    def check(self) -> None:
        """Refuse as `acquire` would if another live process holds the lock
        now, taking nothing: fit.py asks before TensorFlow loads, so a locked
        run is refused in a moment (`acquire` still decides)."""
        if self.held:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file, or one acquire will report on
            return
        try:
            self._lock(fd, self._holder(fd))
        finally:
            os.close(fd)  # and with it the flock, if it was taken

    def acquire(self) -> None:
        if self.held:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise UserError(f"cannot lock run directory {self.run_dir}: {error.strerror}; "
                                "fix its permissions") from None
            holder = self._holder(fd)
            try:
                self._lock(fd, holder)
            except UserError:
                os.close(fd)
                raise
            try:  # the file may have been released and removed between open and flock: lock the current one
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        if holder.get("pid") not in (None, os.getpid()):
            self.log(f"taking over the lock of {self.describe(holder)}, which is no longer running")
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(mine).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if not self.held:
            return
        fd, self._fd = self._fd, None
        try:  # removed while still locked; a process that opened it meanwhile sees another inode and retries
            os.remove(self.path)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock


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
    """Read a JSON file, with a clear error naming the file."""
    try:
        with open(path) as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is this a probvae run directory?") from None
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not readable JSON ({error}); restore it or retrain") from None


def save_config(run_dir: str, config: RunConfig) -> str:
    return write_json(os.path.join(run_dir, CONFIG_FILE), config.to_dict())


def load_config(run_dir: str) -> RunConfig:
    """The RunConfig saved in `run_dir`, with the file named in any error."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise UserError(f"a run directory is a path (the folder fit.py printed), got {run_dir!r}")
    if not os.path.isdir(run_dir):
        raise UserError(f"run directory {run_dir} does not exist; pass the folder fit.py printed")
    path = os.path.join(run_dir, CONFIG_FILE)
    values = read_json(path)
    try:
        return RunConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise UserError(f"{path}: {error}") from None


def resume_config(run_dir: str, requested: Optional[RunConfig] = None) -> RunConfig:
    """The config a resumed run of `run_dir` continues with.

    Args:
      run_dir: a run directory holding config.json.
      requested: the config asked for (e.g. from command-line flags), or None
        for the saved one. Its `model.image_shape` may be None (from the data).

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


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """Prefix of the newest checkpoint in `run_dir`, or None."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))


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
