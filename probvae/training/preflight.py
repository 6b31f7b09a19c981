"""What a run checks before it writes anything: flags, data, memory, the run
directory, and the run it starts from (`--init-from`) or continues (`--resume`).

`prepare_run(config, run_dir, ...)` returns the config with the data's image
shape and the loaded splits, or raises a `UserError` naming the fix; the
run directory is untouched either way.
"""

from __future__ import annotations

import os
from typing import Callable

from probvae import checks, networks, runs
from probvae import data as data_lib
from probvae.config import RunConfig
from probvae.errors import UserError
from probvae.training import precision

__all__ = ["check_arguments", "prepare_run", "initial_checkpoint", "check_resumable"]

# What a run started from another run's weights must share with it: the model,
# and the train/validation/test split (else it would validate on images the
# weights were trained on).
_INIT_FROM_SAME = ("data.dataset", "data.validation_fraction", "data.split_seed", "data.options")


def check_arguments(config, run_dir) -> None:
    """A UserError unless `fit` was given a `RunConfig` and a run directory path."""
    if not isinstance(config, RunConfig):
        raise UserError(f"fit takes a RunConfig, got {type(config).__name__}; e.g. fit(RunConfig(), 'runs/first')")
    if not isinstance(run_dir, (str, os.PathLike)) or not os.fspath(run_dir):
        raise UserError(f"a run directory is a path (the folder to write the run to), got {run_dir!r}")


def prepare_run(config: RunConfig, run_dir: str, splits=None, overwrite: bool = False, resume: bool = False,
                log: Callable[[str], None] = print):
    """Check everything a run needs before anything is written; load its data.

    Returns:
      (config with the image shape of the data, `probvae.data.Splits`); for
      `resume`, the config saved in `run_dir` (see `runs.resume_config`).

    Raises:
      UserError: contradicting options, a run directory that holds a run (new
        runs) or none (resume), a trained run whose checkpoints are gone
        (resume), unloadable data, data the model cannot take.
    """
    if resume and overwrite:
        raise UserError("resume and overwrite contradict each other; pass --resume to continue the run "
                        "or --overwrite to replace it")
    if resume:
        config = runs.resume_config(run_dir, config)
        check_resumable(run_dir)
    else:
        runs.check_run_dir(run_dir, overwrite)
        config = _check_init_from(config, run_dir)
    if splits is None:
        splits = data_lib.load_config_dataset(config)
    log(f"data: {splits.name} from {splits.source}: {len(splits.x_train)} train, "
        f"{len(splits.x_validation)} validation, {len(splits.x_test)} test images of shape {splits.image_shape}")
    if config.model.image_shape not in (None, splits.image_shape):
        raise UserError(f"the model expects images of shape {config.model.image_shape} but {splits.name} "
                        f"has {splits.image_shape}; give images of that shape, or another --image-shape for a new run")
    networks.check_image_shape(splits.image_shape)
    _check_test_cost(config, splits)
    config = config.replace(model={"image_shape": splits.image_shape},
                            train={"precision": precision.resolve(config.train.precision, config.model.arch)})
    networks.check_memory(config.model, config.train.batch_size)
    networks.check_precision(config.model, config.train.precision)
    if config.train.batch_size > len(splits.x_train):
        raise UserError(f"batch size {config.train.batch_size} is larger than the {len(splits.x_train)} "
                        "training examples; lower --batch-size")
    if config.train.init_from is not None and not resume:
        initial_checkpoint(config)
    return config, splits


def _check_test_cost(config: RunConfig, splits) -> None:
    """The final test evaluation's cost on the test images the data really
    hold: `RunConfig` checks it for the datasets that state their test size,
    the others (npz, image folders) only here, once they are loaded."""
    images, samples = len(splits.x_test), config.train.test_iwae_samples
    checks.decoder_passes_within(f"test_iwae_samples {samples} on {images} {splits.name} test images",
                                 images * samples, "lower --test-iwae-samples (evaluate.py re-evaluates with any K)")


def _check_init_from(config: RunConfig, run_dir: str) -> RunConfig:
    """`config` with an absolute `init_from`, if it names a readable run other than `run_dir`."""
    if config.train.init_from is None:
        return config
    config = config.replace(train={"init_from": os.path.abspath(config.train.init_from)})
    if os.path.abspath(run_dir) == config.train.init_from:
        raise UserError(f"--init-from names the run directory itself ({run_dir}); to continue that run "
                        f"use --resume {run_dir}")
    if not os.path.isdir(config.train.init_from):
        raise UserError(f"--init-from {config.train.init_from}: no such run directory; pass a folder "
                        "fit.py wrote")
    runs.load_config(config.train.init_from)  # an unreadable config.json, before the data loads
    return config


def check_resumable(run_dir: str) -> None:
    """Refuse to resume a run whose metrics.json records trained epochs while
    no checkpoint of it is left: resuming would silently train it again from
    the first step and replace its metrics.

    Raises:
      UserError: such a run (naming the fix).
    """
    path = os.path.join(run_dir, runs.METRICS_FILE)
    if not os.path.exists(path):
        return
    metrics = runs.read_json(path)
    epochs = metrics.get("epochs") if isinstance(metrics, dict) else None
    folder = os.path.join(run_dir, runs.CHECKPOINT_DIR)
    if epochs and not runs.complete_checkpoints(folder, runs.CHECKPOINT_PREFIX):
        raise UserError(f"cannot resume {run_dir}: its {runs.METRICS_FILE} records {len(epochs)} trained epoch(s) "
                        f"but {folder} holds no checkpoint; restore the checkpoints, or start over with "
                        f"--run-dir {run_dir} --overwrite")


def initial_checkpoint(config: RunConfig) -> str:
    """The checkpoint a run with `train.init_from` starts from: the weights
    `load_run(init_from)` gives (the best epoch's, else the newest).

    Raises:
      UserError: no such run or checkpoint, or a run whose model or data split
        differs from `config`'s (naming each differing key).
    """
    source = config.train.init_from
    saved = runs.load_config(source)
    if config.model.image_shape is not None and saved.model.image_shape is None:
        saved = saved.replace(model={"image_shape": config.model.image_shape})
    mine, theirs = config.flat(), saved.flat()
    differing = [key for key in config.differences(saved) if key.startswith("model.") or key in _INIT_FROM_SAME]
    if differing:
        changes = ", ".join(f"{key} {theirs.get(key)!r} (this run {mine.get(key)!r})" for key in differing)
        raise UserError(f"cannot start from the weights of {source}: its {runs.CONFIG_FILE} has {changes}; "
                        "drop the contradicting flags (a run starts from weights of the same model and data split)")
    return runs.run_checkpoint(source, "model")
