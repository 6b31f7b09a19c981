"""The run directory: what `fit` writes and what analysis code loads.

`load_run(run_dir)` rebuilds the trained model from config.json and the
latest (or a named) checkpoint. `resume_config(run_dir, requested)` is the
config a resumed run continues with: the saved one, refusing requests that
contradict it (only the keys in `RESUME_MAY_CHANGE` may differ).
`prepare_run` checks flags, data and directory before a run writes anything.
Evaluations are written beside them as RUN_DIR/eval_*.json
(`evaluation_name`; `read_evaluations` lists them).

The folder's files, what probvae wrote there, creating and clearing it, and
atomic JSON are `probvae.run_dir`; the one-writer lock is
`probvae.run_lock`. This module re-exports both.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Any, Callable, NamedTuple, Optional

from probvae.config import RunConfig
from probvae.errors import UserError
from probvae.run_dir import (BEST_PREFIX, CHECKPOINT_DIR, CHECKPOINT_PREFIX, CONFIG_FILE, LOG_DIR, METRICS_FILE,
                             check_new_folder, check_run_dir, check_writable, holds_run, new_run_dir,
                             prepare_run_dir, read_json, run_files, write_json)
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
    "run_files",
    "check_writable",
    "check_new_folder",
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
