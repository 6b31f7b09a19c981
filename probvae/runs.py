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
`prepare_run` checks flags, data and directory before a run writes anything.
Evaluations are written beside them as RUN_DIR/eval_*.json
(`evaluation_name`; `read_evaluations` lists them).

JSON files are written to a temporary file and renamed into place, so a kill
never leaves a truncated file behind.

One writer per run: `RunLock` (probvae.run_lock) holds RUN_DIR/writer.lock
from before a run writes anything until it stops.

A run directory is recognised by probvae's own files (`holds_run`): a
config.json that is a probvae config, a metrics.json of probvae, or a
checkpoints/ folder of probvae's checkpoints. `--overwrite` deletes only what
probvae writes there (`run_files`): those, the TensorBoard event files under
logs/, the eval_*.json results and the latent snapshots; any other file stays.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, NamedTuple, Optional

from probvae.config import RunConfig
from probvae.errors import UserError
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
    "prepare_run",
    "initial_checkpoint",
    "holds_run",
    "write_json",
    "read_json",
    "estimator_label",
    "evaluation_name",
    "evaluation_path",
    "read_evaluations",
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

# Config keys a resumed run may change: how the run is carried out, not what
# it computes from good batches.
RESUME_MAY_CHANGE = frozenset({
    "data.data_dir",
    "train.eager",
    "train.checkpoint_every_steps",
    "train.skip_nonfinite",
    "train.deterministic",
    "train.strategy",
})


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


def save_config(run_dir: str, config: RunConfig) -> str:
    return write_json(os.path.join(run_dir, CONFIG_FILE), config.to_dict())


def load_config(run_dir: str) -> RunConfig:
    """The RunConfig saved in `run_dir`, with the file named in any error."""
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


def prepare_run(config: RunConfig, run_dir: str, splits=None, overwrite: bool = False, resume: bool = False,
                log: Callable[[str], None] = print):
    """Check everything a run needs before anything is written; load its data.

    Returns:
      (config with the image shape of the data, `probvae.data.Splits`); for
      `resume`, the config saved in `run_dir` (see `resume_config`).

    Raises:
      UserError: contradicting options, a run directory that holds a run (new
        runs) or none (resume), unloadable data, data the model cannot take.
    """
    from probvae import data as data_lib
    from probvae import networks

    if resume and overwrite:
        raise UserError("resume and overwrite contradict each other; pass --resume to continue the run "
                        "or --overwrite to replace it")
    if resume:
        config = resume_config(run_dir, config)
    else:
        check_run_dir(run_dir, overwrite)
        if config.train.init_from is not None:
            config = config.replace(train={"init_from": os.path.abspath(config.train.init_from)})
            if os.path.abspath(run_dir) == config.train.init_from:
                raise UserError(f"--init-from names the run directory itself ({run_dir}); to continue that run "
                                f"use --resume {run_dir}")
            if not os.path.isdir(config.train.init_from):
                raise UserError(f"--init-from {config.train.init_from}: no such run directory; pass a folder "
                                "fit.py wrote")
            load_config(config.train.init_from)  # an unreadable config.json, before the data loads
    if splits is None:
        splits = data_lib.load_config_dataset(config)
    log(f"data: {splits.name} from {splits.source}: {len(splits.x_train)} train, "
        f"{len(splits.x_validation)} validation, {len(splits.x_test)} test images of shape {splits.image_shape}")
    if config.model.image_shape not in (None, splits.image_shape):
        raise UserError(f"the model expects images of shape {config.model.image_shape} but {splits.name} "
                        f"has {splits.image_shape}; give images of that shape, or another --image-shape for a new run")
    networks.check_image_shape(splits.image_shape)
    config = config.replace(model={"image_shape": splits.image_shape})
    networks.check_memory(config.model, config.train.batch_size)
    if config.train.batch_size > len(splits.x_train):
        raise UserError(f"batch size {config.train.batch_size} is larger than the {len(splits.x_train)} "
                        "training examples; lower --batch-size")
    if config.train.init_from is not None and not resume:
        initial_checkpoint(config)
    return config, splits


# What a run started from another run's weights must share with it: the model,
# and the train/validation/test split (else it would validate on images the
# weights were trained on).
_INIT_FROM_SAME = ("data.dataset", "data.validation_fraction", "data.split_seed", "data.options")


def initial_checkpoint(config: RunConfig) -> str:
    """The checkpoint a run with `train.init_from` starts from: the weights
    `load_run(init_from)` gives (the best epoch's, else the newest).

    Raises:
      UserError: no such run or checkpoint, or a run whose model or data split
        differs from `config`'s (naming each differing key).
    """
    source = config.train.init_from
    saved = load_config(source)
    if config.model.image_shape is not None and saved.model.image_shape is None:
        saved = saved.replace(model={"image_shape": config.model.image_shape})
    mine, theirs = config.flat(), saved.flat()
    differing = [key for key in config.differences(saved) if key.startswith("model.") or key in _INIT_FROM_SAME]
    if differing:
        changes = ", ".join(f"{key} {theirs.get(key)!r} (this run {mine.get(key)!r})" for key in differing)
        raise UserError(f"cannot start from the weights of {source}: its {CONFIG_FILE} has {changes}; "
                        "drop the contradicting flags (a run starts from weights of the same model and data split)")
    return run_checkpoint(source, "model")


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

    try:
        tf.train.Checkpoint(model=model).read(checkpoint).expect_partial().assert_existing_objects_matched()
    except Exception as error:  # any failure to read the file means a bad checkpoint
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(
            f"cannot restore checkpoint {checkpoint} ({first_line}); it is corrupt or from another model"
        ) from None


def load_run(run_dir: str, checkpoint: Optional[str] = None):
    """The trained `VAE` of a run (`open_run(...).model`): config.json and
    the run's best-epoch checkpoint (or `checkpoint`), in any process."""
    return open_run(run_dir, checkpoint).model


def estimator_label(result: dict) -> str:
    """"K=1000" or "AIS T=1000, C=16": the estimator of an evaluation result."""
    if result.get("estimator", "iwae") == "ais":
        return f"AIS T={result['ais']['num_steps']}, C={result['ais']['num_chains']}"
    return f"K={result['iwae_samples']}"


def evaluation_name(result: dict) -> str:
    """The file name of an evaluation result: eval_<split>_<estimator><settings>[_first<N>].json,
    e.g. eval_test_iwae5000.json, eval_test_ais1000x16.json, eval_test_iwae100_first1000.json;
    so results of different estimators, K or subsets never replace each other."""
    if result.get("estimator", "iwae") == "ais":
        tag = f"ais{result['ais']['num_steps']}x{result['ais']['num_chains']}"
    else:
        tag = f"iwae{result['iwae_samples']}"
    subset = f"_first{result['n_examples']}" if result.get("max_examples") else ""
    return f"eval_{result.get('split', 'test')}_{tag}{subset}.json"


def evaluation_path(run_dir: str, result: dict) -> str:
    """RUN_DIR/`evaluation_name(result)`."""
    return os.path.join(run_dir, evaluation_name(result))


def read_evaluations(run_dir: str, split: Optional[str] = None) -> list:
    """The evaluation results written into RUN_DIR (every eval_*.json, also
    the eval_<split>.json of earlier versions), of one split if given, each
    with its file name under "file"; sorted by file name."""
    results = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("eval_") and name.endswith(".json"):
            try:
                result = read_json(os.path.join(run_dir, name))
            except (OSError, ValueError):
                continue
            if isinstance(result, dict) and (split is None or result.get("split") == split):
                results.append(dict(result, file=name))
    return results
