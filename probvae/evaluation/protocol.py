"""Every held-out number of a model (`evaluate`) and of a trained run
(`evaluate_run`, which also writes its evaluation file).

An evaluation is one pass over the images for the ELBO, its parts and the
latent statistics (`statistics.per_example`, which also draws the K
importance samples of the "iwae" estimator), then the estimator's own
estimate of log p(x) (`estimators.ESTIMATORS`), then BDMC if asked for.
Reported are means over the n images with the standard error sd / sqrt(n),
in nats per example, and

    bits_per_dim = -mean_j LL_j / (D ln 2),   D = height * width * channels,

from LL and (as `elbo_bits_per_dim`) from the ELBO. docs/evaluation.md
explains each number.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Callable, Optional

import numpy as np

from probvae import data as data_lib
from probvae import runs
from probvae.errors import UserError
from probvae.evaluation import statistics
from probvae.evaluation.estimators import EvaluationSettings, _whole, bdmc_gap_warning, check_cost
from probvae.evaluation.files import check_writable, evaluation_path
from probvae.evaluation.names import DEFAULT_IWAE_SAMPLES, check_split
from probvae.evaluation.result import EvaluationResult, json_safe

__all__ = ["evaluate", "evaluate_run"]

# Images per evaluation step of `evaluate` unless the settings say otherwise.
DEFAULT_BATCH_SIZE = 1000


def _settings(settings: Optional[EvaluationSettings], fields: dict) -> EvaluationSettings:
    """`settings` (default `EvaluationSettings()`) with `fields` replaced, checked."""
    if settings is not None and not isinstance(settings, EvaluationSettings):
        raise UserError(f"settings must be EvaluationSettings(...), got {type(settings).__name__}; or pass its "
                        "fields as keyword arguments")
    unknown = sorted(set(fields) - set(EvaluationSettings.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}; see EvaluationSettings")
    return (settings or EvaluationSettings()).replace(**fields).checked()


def _bits_per_dim(result: dict, image_shape) -> dict:
    """bits/dim from log p(x) and from the ELBO, with their standard errors."""
    nats_to_bits_per_dim = 1.0 / (int(np.prod(image_shape)) * math.log(2.0))
    return dict(bits_per_dim=-result["log_likelihood"] * nats_to_bits_per_dim,
                bits_per_dim_stderr=result["log_likelihood_stderr"] * nats_to_bits_per_dim,
                elbo_bits_per_dim=-result["elbo"] * nats_to_bits_per_dim,
                elbo_bits_per_dim_stderr=result["elbo_stderr"] * nats_to_bits_per_dim)


def _bdmc(model, settings: EvaluationSettings, log, on_chunk, started: float, names: Optional[dict],
          strategy=None) -> dict:
    """BDMC's summary, with a `warning` when its gap is large (logged, or a Python warning without `log`)."""
    from probvae.evaluation.ais import bdmc

    def progress(direction, done):
        if log is not None:
            log(f"BDMC {direction} AIS: {done:.0f}/{settings.bdmc_examples} simulated images "
                f"({time.time() - started:.0f} s)")
        if on_chunk is not None:
            on_chunk(done)

    summary = bdmc(model, settings.bdmc_examples, seed=settings.seed, on_chunk=progress, force=True,
                   strategy=strategy, **settings.ais._asdict()).summary()
    warning = bdmc_gap_warning(json_safe(summary["gap"]), settings.ais, names)
    if warning is not None:
        summary["warning"] = warning
        if log is not None:
            log(f"warning: {warning}")
        else:
            warnings.warn(warning, stacklevel=3)
    return summary


def evaluate(model, images: np.ndarray, settings: Optional[EvaluationSettings] = None, *,
             checkpoint: Optional[str] = None, log: Optional[Callable[[str], None]] = None, strategy=None,
             on_batch: Optional[Callable[[int], None]] = None, names: Optional[dict] = None,
             **fields) -> EvaluationResult:
    """Every held-out number of a model on uint8 images [n, h, w, c] (or an `ImageStream`).

    Args:
      settings: `EvaluationSettings` (estimator and its settings, batch_size
        (default 1000), seed, binarization_seed (default 0), bdmc_examples,
        sample_chunk, force); keyword arguments named as its fields replace
        them, e.g. `evaluate(model, images, iwae_samples=5000, seed=1)`.
      checkpoint: name recorded in the result; log: gets progress lines.
      strategy: a tf.distribute strategy the model was built under: the
        ELBO and IWAE batches and the AIS and BDMC chunks are spread over
        its replicas, with the numbers of one device.
      on_batch: called with the number of images done after each batch of
        the ELBO pass and each chunk of AIS or BDMC; an exception it raises
        stops the evaluation there (the commands stop on a signal so).
      names: how messages name the settings (`API_NAMES`; the commands pass
        their flags): the cost check's and the warning of a BDMC gap above
        BDMC_GAP_WARNING_NATS nats, which `result["bdmc"]["warning"]` keeps
        and `log` gets (a Python warning without `log`).

    Returns:
      `EvaluationResult` (a mapping of the JSON keys too); docs/evaluation.md
      explains each number. An evaluation past MAX_DECODER_PASSES decoder
      passes raises a UserError unless `force`.
    """
    settings = _settings(settings, fields)
    images = statistics.held_out_images(images, model.image_shape)
    settings = settings.replace(batch_size=settings.batch_size or DEFAULT_BATCH_SIZE,
                                binarization_seed=settings.binarization_seed or 0)
    entry = settings.entry
    if not settings.force:
        check_cost(len(images), settings.estimator, settings.iwae_samples, settings.ais, settings.bdmc_examples,
                   names)
    started = time.time()
    batches = data_lib.evaluation_batches(images, settings.batch_size, binarize=model.likelihood_head.binarize,
                                          seed=settings.binarization_seed)
    n = len(images)
    what = entry.label(dict(iwae_samples=settings.iwae_samples)) if entry.pass_samples(settings) else "ELBO"

    def after_batch(done):
        if log is not None:
            log(f"evaluated {done}/{n} images, {what} ({time.time() - started:.0f} s)")
        if on_batch is not None:
            on_batch(done)

    values = statistics.decoded(statistics.per_example(
        model, batches, settings.seed, iwae_samples=entry.pass_samples(settings), sample_chunk=settings.sample_chunk,
        on_batch=after_batch, strategy=strategy), images)
    result = {"n_examples": int(n), "image_shape": list(model.image_shape), "likelihood": model.config.likelihood,
              "estimator": settings.estimator}
    result.update(statistics.summarise(values, ("elbo", "reconstruction", "kl")))
    result.update(entry.estimate_function()(model, batches, values, settings, log, on_batch, strategy=strategy))
    result.update(_bits_per_dim(result, model.image_shape), **statistics.latent_summary(values),
                  seed=([int(part) for part in settings.seed] if isinstance(settings.seed, (list, tuple))
                        else int(settings.seed)),
                  batch_size=settings.batch_size, checkpoint=checkpoint,
                  **statistics.binarization(model, settings.binarization_seed))
    if isinstance(images, data_lib.ImageStream):
        result["skipped_images"] = images.skipped
    if settings.bdmc_examples:
        result["bdmc"] = _bdmc(model, settings, log, on_batch, started, names, strategy)
    return EvaluationResult(**result, seconds=time.time() - started)


def _is_model_checkpoint(run_dir: str, checkpoint: str) -> bool:
    """Whether `checkpoint` is the run's model (its best epoch's, else latest, checkpoint)."""
    try:
        model_checkpoint = runs.run_checkpoint(run_dir, "model")
    except UserError:
        return False
    return os.path.abspath(checkpoint) == os.path.abspath(model_checkpoint)


def evaluate_run(run_dir: str, split: str = "test", iwae_samples: int = DEFAULT_IWAE_SAMPLES,
                 batch_size: Optional[int] = None, seed=0, *, checkpoint: Optional[str] = None,
                 max_examples: Optional[int] = None, data_dir: Optional[str] = None,
                 log: Optional[Callable[[str], None]] = None, names: Optional[dict] = None,
                 on_batch: Optional[Callable[[int], None]] = None, **fields) -> EvaluationResult:
    """Evaluate a trained run on one split and write RUN_DIR/`evaluation_name(...)`.

    The model comes from `runs.open_run` (the run's best epoch's weights if it
    kept them, else the latest checkpoint; or the one `checkpoint` names),
    the data from the run's own `DataConfig` (its split and held-out
    binarization seed unless `binarization_seed` is given), or from
    `data_dir` instead of the run's own folder. `batch_size` defaults to the
    run's `eval_batch_size`; `max_examples` keeps the first N images of the
    split (for quick checks). Other keyword arguments are `EvaluationSettings`
    fields (estimator, ais, bdmc_examples, binarization_seed, sample_chunk,
    force). The cost is checked before the model loads (naming what to
    change with `names`, see `check_cost`) and the output file is checked to
    be writable before the evaluation starts.

    Returns:
      The `EvaluationResult` of `evaluate`, with split, dataset, run_dir,
      max_examples and the path it was written to (`file`).
    """
    check_split(split)
    settings = _settings(None, dict(fields, iwae_samples=iwae_samples, batch_size=batch_size, seed=seed))
    config = runs.load_config(run_dir)
    if data_dir is not None:
        config = config.replace(data={"data_dir": data_dir})
    splits = data_lib.load_config_dataset(config)
    images, _ = splits.split(split)
    if max_examples is not None:
        images = images[:_whole("max_examples", max_examples)]
    if not settings.force:
        check_cost(len(images), settings.estimator, settings.iwae_samples, settings.ais, settings.bdmc_examples, names)
    model, config, checkpoint = runs.open_run(run_dir, checkpoint)
    binarization_seed = config.data.split_seed if settings.binarization_seed is None else settings.binarization_seed
    settings = settings.replace(batch_size=settings.batch_size or config.train.eval_batch_size,
                                binarization_seed=binarization_seed, force=True)
    about = {"split": split, "dataset": splits.name, "run_dir": os.path.abspath(run_dir), "max_examples": max_examples}
    key = dict(about, estimator=settings.estimator, iwae_samples=settings.iwae_samples, ais=settings.ais._asdict(),
               n_examples=len(images), checkpoint=os.path.basename(checkpoint), seed=settings.seed,
               binarization_seed=binarization_seed if model.likelihood_head.binarize else None)
    path = evaluation_path(run_dir, key, _is_model_checkpoint(run_dir, checkpoint), config.data.split_seed)
    check_writable(path)
    result = evaluate(model, images, settings, checkpoint=key["checkpoint"], log=log, on_batch=on_batch, names=names)
    result = result.replace(**about)
    runs.write_json(path, result.as_dict(with_file=False))
    return result.replace(file=path)
