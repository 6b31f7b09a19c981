"""Held-out evaluation: ELBO, importance-weighted log-likelihood, bits/dim,
active units and per-dimension KL, each with what makes it trustworthy.

For each held-out image x_j (j = 1..n), with q = q(z|x_j) and z_jk ~ q:

    ELBO_j   = log p(x_j|z_j0) - KL(q || p(z))                      (analytic KL)
    log w_jk = log p(x_j|z_jk) + log p(z_jk) - log q(z_jk|x_j),      k = 0..K-1
    LL_j     = log (1/K) sum_k exp(log w_jk)                         (Burda et al., 2015)

LL_j is the K-sample importance-weighted estimate of log p(x_j): a stochastic
lower bound, E[LL_j] <= log p(x_j), whose gap shrinks as K grows. Reported are
means over the n examples with the standard error sd_j / sqrt(n), in nats per
example, and

    bits_per_dim = -mean_j LL_j / (D ln 2),   D = height * width * channels,

from LL and (as `elbo_bits_per_dim`) from the ELBO. The Monte Carlo part of
the error of LL comes from the effective sample size of the weights,
ESS_j = (sum_k w_jk)^2 / sum_k w_jk^2, by the delta method:
Var(LL_j | x_j) ~ 1/ESS_j - 1/K.

Active units (Burda et al., 2015, section 5.2): dimension i is active when
A_i = Var_x(E_q[z_i | x]) > 0.01. The per-dimension KL is the KL of each
marginal q(z_i|x) to p(z_i) plus, for a full-covariance posterior, the total
correlation of q; they add up to the KL (see `probvae.distributions.analysis`).

Memory. The log weights are computed in chunks of S samples for a batch of B
examples (S * B decoder rows at a time), and a running logsumexp of log w
(and of 2 log w, for the ESS) carries the sum from chunk to chunk, so memory
does not depend on K: K x n x pixels is never held. Without an explicit
`sample_chunk`, S = max(1, CHUNK_ROWS // B).

Randomness. Batch b of an evaluation uses the stateless seed (seed, b), and
sample k of a batch is drawn by the posterior's own sampler from
`sample_seed((seed, b), k)`. The numbers are therefore a function of the
weights, the data (and its fixed binarization seed), seed, K and the batch
size, but not of the sample chunk. The ELBO uses sample 0, so the K = 1
estimate LL is the ELBO estimator with the KL replaced by its one-sample
estimate log q(z_0|x) - log p(z_0) at the same z_0.

The compiled functions take the batch, seed, K and chunk as tensors with a
fixed signature, so each traces once per model.

Several devices. Under a tf.distribute strategy of R > 1 replicas
(`strategy=`), batch b goes to replica b mod R with the seed it has on one
device, (seed, b), and the per-example results are gathered in batch order
(`probvae.replicas.map_batches`): every number is the one a single device
computes.

References:
  Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from probvae import data as data_lib
from probvae import objectives, replicas, runs
from probvae.errors import UserError

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "unit_activity",
    "active_units",
    "DEFAULT_IWAE_SAMPLES",
    "SPLITS",
    "BatchStatistics",
    "mean_and_stderr",
    "importance_sampling",
    "log_likelihood",
    "per_example",
    "elbo_per_example",
    "evaluate_elbo",
    "evaluate",
    "evaluation_path",
    "evaluate_run",
]

# A latent dimension is active when Var_x(E_q[z_i|x]) exceeds this (Burda et al., 2015);
# `analysis.inspection.latent_marginals` calls the others collapsed.
ACTIVE_UNIT_THRESHOLD = 0.01
# K of scripts/evaluate.py unless --iwae-samples says otherwise.
DEFAULT_IWAE_SAMPLES = 1000
SPLITS = ("test", "validation", "train")


class BatchStatistics(NamedTuple):
    """Per-example statistics of a batch, nats: [n] or [n, d]."""

    elbo: tf.Tensor  # [n]
    reconstruction: tf.Tensor  # [n]
    kl: tf.Tensor  # [n], analytic
    kl_per_dimension: tf.Tensor  # [n, d], KL(q(z_i|x) || p(z_i))
    total_correlation: tf.Tensor  # [n], kl - sum_i kl_per_dimension
    posterior_mean: tf.Tensor  # [n, d], E_q[z|x]


def unit_activity(posterior_means) -> np.ndarray:
    """A_i = Var_x(E_q[z_i|x]) [d], float64, from posterior means [n, d]."""
    return np.var(np.asarray(posterior_means, np.float64), axis=0)


def active_units(activity, threshold: float = ACTIVE_UNIT_THRESHOLD) -> np.ndarray:
    """Which dimensions are active, [d] bool: A_i > threshold (Burda et al., 2015, section 5.2)."""
    return np.asarray(activity) > threshold


def mean_and_stderr(values) -> tuple:
    """(mean, standard error of the mean) of a 1-D array, as floats."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _elbo_terms(model, x, seed):
    """The model's ELBO terms of batch x: its sample is sample 0 of the importance samples."""
    return model.elbo_terms(x, objectives.sample_seed(seed, 0))


def _statistics(model, terms) -> BatchStatistics:
    """`BatchStatistics` of a batch's `ElboTerms` (the per-dimension KL at the ELBO's z)."""
    latent = model.latent_statistics(terms)
    return BatchStatistics(
        *terms.parts,
        kl_per_dimension=latent.kl_per_dimension,
        total_correlation=latent.total_correlation,
        posterior_mean=latent.location,
    )


def _batch_statistics(model, x, seed) -> BatchStatistics:
    return _statistics(model, _elbo_terms(model, x, seed))


class _Compiled:
    """A model's compiled evaluation functions, traced once each (kept per
    model in `_COMPILED`, which holds the model weakly)."""

    def __init__(self, model):
        image = tf.TensorSpec([None] + list(model.image_shape), tf.float32)
        seed = tf.TensorSpec([2], tf.int32)
        reference = weakref.ref(model)
        self.statistics = tf.function(
            lambda x, seed: _batch_statistics(reference(), x, seed), input_signature=[image, seed]
        )
        self._model, self._distributed = reference, {}

    def distributed(self, strategy, with_importance_sampling: bool) -> Callable:
        """Both functions of one batch per replica of `strategy`, gathered in
        replica order (see `probvae.replicas.gathered`); built once per strategy."""
        key = (id(strategy), with_importance_sampling)
        if key not in self._distributed:
            reference = self._model

            def statistics(x, index, seed, num_samples, sample_chunk):
                model = reference()
                batch_seed = tf.stack([seed, tf.cast(index, tf.int32)])
                terms = _elbo_terms(model, x, batch_seed)
                results = _statistics(model, terms)._asdict()
                if with_importance_sampling:
                    results.update(objectives.importance_sampling(
                        x, terms.posterior, terms.prior, model.likelihood, batch_seed, num_samples,
                        sample_chunk)._asdict())
                return results

            self._distributed[key] = replicas.gathered(strategy, statistics)
        return self._distributed[key]


_COMPILED = weakref.WeakKeyDictionary()


def _compiled(model) -> _Compiled:
    if model not in _COMPILED:
        _COMPILED[model] = _Compiled(model)
    return _COMPILED[model]


def importance_sampling(model, x, num_samples: int, seed,
                        sample_chunk: Optional[int] = None) -> objectives.ImportanceEstimate:
    """The K-sample importance-weighted log p(x) and the effective sample size.

    Args:
      model: a `VAE` (anything with `prior`, `posterior(x)`, `likelihood(z)`
        and `image_shape`).
      x: a batch of preprocessed float32 images [n, h, w, c] (binarized for a
        Bernoulli likelihood).
      num_samples: K >= 1, importance samples per example.
      seed: an int or a stateless seed pair.
      sample_chunk: samples per compiled chunk; default max(1, CHUNK_ROWS // n).
        Memory grows with sample_chunk * n, not with K; the result does not
        depend on it.

    Returns:
      `ImportanceEstimate` of [n] tensors.
    """
    num_samples = objectives.whole_number("num_samples", num_samples)
    sample_chunk = 0 if sample_chunk is None else objectives.whole_number("sample_chunk", sample_chunk)
    return model.importance_sampling(x, tf.constant(num_samples), objectives.as_seed(seed), tf.constant(sample_chunk))


def log_likelihood(model, x, num_samples: int, seed, sample_chunk: Optional[int] = None) -> tf.Tensor:
    """Importance-weighted estimate of log p(x) per example, [n] float32, nats.

    LL = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), with
    K = num_samples; see `importance_sampling` for the arguments.
    """
    return importance_sampling(model, x, num_samples, seed, sample_chunk).log_likelihood


def per_example(model, batches: tf.data.Dataset, seed: int, iwae_samples: int = 0,
                sample_chunk: Optional[int] = None, on_batch: Optional[Callable[[int], None]] = None,
                strategy=None) -> Dict[str, np.ndarray]:
    """Every `BatchStatistics` field over `batches`, concatenated ([n] or [n, d]);
    with `iwae_samples` K >= 1 also `log_likelihood` and `effective_sample_size`.
    `on_batch(examples_done)` is called after each batch (each round of R
    batches under a `strategy` of R > 1 replicas, which spreads the batches
    over its replicas with the numbers of one device)."""
    compiled = _compiled(model)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        sample_chunk = 0 if sample_chunk is None else objectives.whole_number("sample_chunk", sample_chunk)
        run = compiled.distributed(strategy, bool(iwae_samples))
        return replicas.map_batches(strategy, run, batches, tf.constant(seed, tf.int32),
                                      tf.constant(int(iwae_samples)), tf.constant(sample_chunk), on_round=on_batch)
    values, done = {}, 0
    for index, x in enumerate(batches):
        batch_seed = tf.constant([seed, index], tf.int32)
        results = compiled.statistics(x, batch_seed)._asdict()
        if iwae_samples:
            results.update(importance_sampling(model, x, iwae_samples, batch_seed, sample_chunk)._asdict())
        for name, value in results.items():
            values.setdefault(name, []).append(value.numpy())
        done += int(x.shape[0])
        if on_batch is not None:
            on_batch(done)
    return {name: np.concatenate(parts) for name, parts in values.items()}


def elbo_per_example(model, batches: tf.data.Dataset, seed: int, strategy=None) -> Dict[str, np.ndarray]:
    """ELBO, reconstruction and KL of every example in `batches`, [n] each, nats
    (spread over the replicas of `strategy`, if given, with the same numbers)."""
    values = per_example(model, batches, seed, strategy=strategy)
    return {name: values[name] for name in ("elbo", "reconstruction", "kl")}


def _binarization(model, binarization_seed: int) -> dict:
    binarize = model.likelihood_head.binarize
    return {
        "binarization": f"fixed, seed {binarization_seed}" if binarize else "none",
        "binarization_seed": binarization_seed if binarize else None,
    }


def _summary(values: Dict[str, np.ndarray], names) -> dict:
    summary = {}
    for name in names:
        summary[name], summary[f"{name}_stderr"] = mean_and_stderr(values[name])
    return summary


def evaluate_elbo(model, images: np.ndarray, *, seed: int, batch_size: int = 1000,
                  binarization_seed: int = 0, strategy=None) -> dict:
    """Mean held-out ELBO and its parts, with standard errors, in nats.

    Args:
      model: a `VAE`.
      images: uint8 images [n, h, w, c], or a `probvae.data.ImageStream`
        (then images that fail to decode are left out and counted).
      seed: seed of the posterior samples.
      batch_size: examples per evaluation step.
      binarization_seed: seed of the fixed binarization (Bernoulli models).
      strategy: a tf.distribute strategy the model was built under, or None.
    """
    batches = data_lib.evaluation_batches(images, batch_size, binarize=model.likelihood_head.binarize,
                                          seed=binarization_seed)
    parts = elbo_per_example(model, batches, seed, strategy=strategy)
    summary = {"n_examples": int(len(parts["elbo"]))}
    if isinstance(images, data_lib.ImageStream):
        summary["skipped_images"] = images.skipped
    summary.update(_summary(parts, ("elbo", "reconstruction", "kl")))
    summary.update(_binarization(model, binarization_seed))
    return summary


def evaluate(model, images: np.ndarray, *, iwae_samples: int = DEFAULT_IWAE_SAMPLES, batch_size: int = 1000,
             seed: int = 0, binarization_seed: int = 0, sample_chunk: Optional[int] = None,
             checkpoint: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
             strategy=None) -> dict:
    """Every held-out number of a model on uint8 images [n, h, w, c].

    Args:
      iwae_samples: K, importance samples per image for the log-likelihood.
      batch_size: images per step; seed: seed of the posterior samples.
      binarization_seed: seed of the fixed binarization (Bernoulli models).
      sample_chunk: samples per compiled chunk (see `importance_sampling`).
      checkpoint: name recorded in the result; log: gets a line per batch.
      strategy: a tf.distribute strategy the model was built under: the
        batches are spread over its replicas, with the numbers of one device.

    Returns:
      A JSON-ready dict, nats per example unless the name says bits:
      elbo, reconstruction, kl, log_likelihood (each with `_stderr`),
      log_likelihood_mc_stderr, effective_sample_size, iwae_samples;
      bits_per_dim and elbo_bits_per_dim (each with `_stderr`); active_units
      of latent_dim, posterior_mean_variance [d], active_unit_threshold;
      kl_per_dimension [d], kl_total_correlation; n_examples, image_shape,
      likelihood, binarization, binarization_seed, seed, batch_size,
      checkpoint, seconds. docs/evaluation.md explains each.
    """
    iwae_samples = objectives.whole_number("iwae_samples", iwae_samples)
    batch_size = objectives.whole_number("batch_size", batch_size)
    started = time.time()
    batches = data_lib.evaluation_batches(images, batch_size, binarize=model.likelihood_head.binarize,
                                          seed=binarization_seed)
    n, num_pixels = len(images), int(np.prod(model.image_shape))
    nats_to_bits_per_dim = 1.0 / (num_pixels * math.log(2.0))
    on_batch = None if log is None else (
        lambda done: log(f"evaluated {done}/{n} images, K={iwae_samples} ({time.time() - started:.0f} s)"))
    values = per_example(model, batches, seed, iwae_samples=iwae_samples, sample_chunk=sample_chunk,
                         on_batch=on_batch, strategy=strategy)
    result = {"n_examples": int(n), "image_shape": list(model.image_shape), "likelihood": model.config.likelihood,
              "units": "nats per example"}
    result.update(_summary(values, ("elbo", "reconstruction", "kl", "log_likelihood")))
    relative_variance = np.maximum(1.0 / values["effective_sample_size"].astype(np.float64) - 1.0 / iwae_samples, 0.0)
    posterior_mean_variance = unit_activity(values["posterior_mean"])
    result.update(
        log_likelihood_mc_stderr=float(np.sqrt(relative_variance.sum()) / n),
        effective_sample_size=float(values["effective_sample_size"].mean()),
        iwae_samples=iwae_samples,
        bits_per_dim=-result["log_likelihood"] * nats_to_bits_per_dim,
        bits_per_dim_stderr=result["log_likelihood_stderr"] * nats_to_bits_per_dim,
        elbo_bits_per_dim=-result["elbo"] * nats_to_bits_per_dim,
        elbo_bits_per_dim_stderr=result["elbo_stderr"] * nats_to_bits_per_dim,
        active_units=int(np.sum(active_units(posterior_mean_variance))),
        active_unit_threshold=ACTIVE_UNIT_THRESHOLD,
        latent_dim=int(posterior_mean_variance.size),
        posterior_mean_variance=posterior_mean_variance.tolist(),
        kl_per_dimension=values["kl_per_dimension"].astype(np.float64).mean(axis=0).tolist(),
        kl_total_correlation=float(values["total_correlation"].astype(np.float64).mean()),
        seed=int(seed),
        batch_size=batch_size,
        checkpoint=checkpoint,
    )
    result.update(_binarization(model, binarization_seed))
    result["seconds"] = time.time() - started
    return result


def evaluation_path(run_dir: str, split: str) -> str:
    """RUN_DIR/eval_<split>.json."""
    return os.path.join(run_dir, f"eval_{split}.json")


def evaluate_run(run_dir: str, split: str = "test", iwae_samples: int = DEFAULT_IWAE_SAMPLES,
                 batch_size: Optional[int] = None, seed: int = 0, checkpoint: Optional[str] = None,
                 sample_chunk: Optional[int] = None, binarization_seed: Optional[int] = None,
                 max_examples: Optional[int] = None, log: Optional[Callable[[str], None]] = None) -> dict:
    """Evaluate a trained run on one split and write RUN_DIR/eval_<split>.json.

    The model comes from `runs.load_run` (latest checkpoint unless named),
    the data from the run's own `DataConfig` (same split and binarization
    seed as training used, unless `binarization_seed` is given).
    `batch_size` defaults to the run's `eval_batch_size`; `max_examples`
    keeps the first N images of the split (for quick checks).

    Returns:
      The dict of `evaluate`, plus split, dataset and run_dir.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    objectives.whole_number("iwae_samples", iwae_samples)
    model, config, checkpoint = runs.open_run(run_dir, checkpoint)
    d = config.data
    splits = data_lib.load_config_dataset(config)
    images, _ = splits.split(split)
    if max_examples is not None:
        images = images[:objectives.whole_number("max_examples", max_examples)]
    result = {"split": split, "dataset": splits.name, "run_dir": os.path.abspath(run_dir)}
    result.update(evaluate(
        model, images, iwae_samples=iwae_samples,
        batch_size=config.train.eval_batch_size if batch_size is None else batch_size,
        seed=seed, binarization_seed=d.split_seed if binarization_seed is None else binarization_seed,
        sample_chunk=sample_chunk, checkpoint=os.path.basename(checkpoint), log=log,
    ))
    runs.write_json(evaluation_path(run_dir, split), result)
    return result
