"""Held-out ELBO, importance-weighted log-likelihood, active units and
per-dimension KL, per example, in compiled chunks.

For each held-out image x_j (j = 1..n), with q = q(z|x_j) and z_jk ~ q:

    ELBO_j   = log p(x_j|z_j0) - KL(q || p(z))                      (analytic KL)
    log w_jk = log p(x_j|z_jk) + log p(z_jk) - log q(z_jk|x_j),      k = 0..K-1
    LL_j     = log (1/K) sum_k exp(log w_jk)                         (Burda et al., 2015)

LL_j is the K-sample importance-weighted estimate of log p(x_j): a stochastic
lower bound, E[LL_j] <= log p(x_j), whose gap shrinks as K grows. The Monte
Carlo part of its error comes from the effective sample size of the weights,
ESS_j = (sum_k w_jk)^2 / sum_k w_jk^2, by the delta method:
Var(LL_j | x_j) ~ 1/ESS_j - 1/K.

Active units (Burda et al., 2015, section 5.2): dimension i is active when
A_i = Var_x(E_q[z_i | x]) > 0.01. The per-dimension KL is the KL of each
marginal q(z_i|x) to p(z_i) plus, for a full-covariance posterior, the total
correlation of q; they add up to the KL (see `probvae.distributions.analysis`).

Memory. The log weights are computed in chunks of S samples for a batch of B
examples (S * B decoder rows at a time), and a running logsumexp of log w
(and of 2 log w, for the ESS) carries the sum from chunk to chunk, so memory
does not depend on K. Without an explicit `sample_chunk`, S = max(1, CHUNK_ROWS // B).

Randomness. An evaluation seed is an int s or a pair p. Batch b of an
evaluation uses the stateless seed (s, b) (for a pair: fold_in(p, b)), and
sample k of a batch is drawn by the posterior's own sampler from
`seeds.sample_seed(batch seed, k)`. The numbers are therefore a function of the
weights, the data (and its fixed binarization seed), seed, K and the batch
size, but not of the sample chunk. The ELBO uses sample 0, so the K = 1
estimate LL is the ELBO estimator with the KL replaced by its one-sample
estimate log q(z_0|x) - log p(z_0) at the same z_0.

The compiled functions take the batch, seed, K and chunk as tensors with a
fixed signature, so each traces once per model. Under a tf.distribute
strategy of R > 1 replicas, batch b goes to replica b mod R with the seed it
has on one device, and the per-example results are gathered in batch order
(`probvae.replicas.map_batches`): every number is the one a single device computes.

References:
  Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import weakref
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from probvae import checks, objectives, replicas, seeds
from probvae import data as data_lib
from probvae.errors import UnreadableImagesError, UserError
from probvae.evaluation.estimators import _whole
from probvae.evaluation.result import mean_and_stderr

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "unit_activity",
    "active_units",
    "BatchStatistics",
    "importance_sampling",
    "log_likelihood",
    "per_example",
    "elbo_per_example",
    "evaluate_elbo",
    "summarise",
    "estimate_elbo",
    "estimate_iwae",
]

# A latent dimension is active when Var_x(E_q[z_i|x]) exceeds this (Burda et al., 2015);
# `analysis.inspection.latent_marginals` calls the others collapsed.
ACTIVE_UNIT_THRESHOLD = 0.01


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


def _elbo_terms(model, x, seed):
    """The model's ELBO terms of batch x: its sample is sample 0 of the importance samples."""
    return model.elbo_terms(x, seeds.sample_seed(seed, 0))


def _statistics(model, terms) -> BatchStatistics:
    """`BatchStatistics` of a batch's `ElboTerms` (the per-dimension KL at the ELBO's z)."""
    latent = model.latent_statistics(terms)
    return BatchStatistics(*terms.parts, kl_per_dimension=latent.kl_per_dimension,
                           total_correlation=latent.total_correlation, posterior_mean=latent.location)


def _batch_statistics(model, x, seed) -> BatchStatistics:
    return _statistics(model, _elbo_terms(model, x, seed))


def _evaluation_seed(seed):
    """(seed [2] int32, whether it was an int): an int s draws batch b from (s, b), a pair p from fold_in(p, b)."""
    whole = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    return seeds.as_seed(seed), whole


def _batch_seed(seed, whole: bool, index):
    """The stateless seed [2] of batch `index` under an evaluation seed (see `_evaluation_seed`)."""
    if whole:
        return tf.stack([seed[0], tf.cast(index, tf.int32)])
    return seeds.sample_seed(seed, tf.cast(index, tf.int32))


class _Compiled:
    """A model's compiled evaluation functions, traced once each (kept per
    model in `_COMPILED`, which holds the model weakly)."""

    def __init__(self, model):
        image = tf.TensorSpec([None] + list(model.image_shape), tf.float32)
        seed = tf.TensorSpec([2], tf.int32)
        reference = weakref.ref(model)
        self.statistics = tf.function(
            lambda x, seed: _batch_statistics(reference(), x, seed), input_signature=[image, seed], autograph=False
        )
        self._model, self._distributed = reference, {}

    def distributed(self, strategy, with_importance_sampling: bool, whole_seed: bool) -> Callable:
        """Both functions of one batch per replica of `strategy`, gathered in
        replica order (see `probvae.replicas.gathered`); built once per strategy."""
        key = (id(strategy), with_importance_sampling, whole_seed)
        if key not in self._distributed:
            reference = self._model

            def statistics(x, index, seed, num_samples, sample_chunk):
                model = reference()
                batch_seed = _batch_seed(seed, whole_seed, index)
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


def _check_prepared(x, image_shape) -> None:
    """A UserError unless x is float images [n, h, w, c] of the model's shape (prepared inputs)."""
    dtype = tf.as_dtype(x.dtype) if hasattr(x, "dtype") else None
    shape = tuple(getattr(x, "shape", ()))
    if dtype is None or not dtype.is_floating or len(shape) != 4 or tuple(shape[1:]) != tuple(image_shape):
        what = f"{dtype.name} {shape}" if dtype is not None else type(x).__name__
        raise UserError(f"x must be prepared inputs, float32 [n, {', '.join(map(str, image_shape))}], got {what}; "
                        "pass vae.prepare_inputs(images) (it scales and binarizes raw images)")


def importance_sampling(model, x, num_samples: int, seed, sample_chunk: Optional[int] = None,
                        force: bool = False) -> objectives.ImportanceEstimate:
    """The K-sample importance-weighted log p(x) and the effective sample size.

    Args:
      model: a `VAE` (anything with `prior`, `posterior(x)`, `likelihood(z)`
        and `image_shape`).
      x: a batch of preprocessed float32 images [n, h, w, c] (binarized for a
        Bernoulli likelihood).
      num_samples: K >= 1, importance samples per example.
      seed: an int s (the pair (s, 0)) or a stateless seed pair.
      sample_chunk: samples per compiled chunk; default max(1, CHUNK_ROWS // n).
        Memory grows with sample_chunk * n, not with K; the result does not
        depend on it.
      force: run even if n K decoder passes exceed MAX_DECODER_PASSES (a
        UserError otherwise, as `probvae evaluate` refuses it).

    Returns:
      `ImportanceEstimate` of [n] tensors.
    """
    sample_chunk = 0 if sample_chunk is None else _whole("sample_chunk", sample_chunk)
    _check_prepared(x, model.image_shape)
    num_samples = checks.importance_samples(num_samples, int(x.shape[0] or 0), force)
    return model.importance_sampling(x, tf.constant(num_samples), seeds.as_seed(seed), tf.constant(sample_chunk))


def log_likelihood(model, x, num_samples: int, seed, sample_chunk: Optional[int] = None,
                   force: bool = False) -> tf.Tensor:
    """Importance-weighted estimate of log p(x) per example, [n] float32, nats.

    LL = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), with
    K = num_samples; see `importance_sampling` for the arguments.
    """
    return importance_sampling(model, x, num_samples, seed, sample_chunk, force).log_likelihood


def per_example(model, batches: tf.data.Dataset, seed, iwae_samples: int = 0,
                sample_chunk: Optional[int] = None, on_batch: Optional[Callable[[int], None]] = None,
                strategy=None) -> Dict[str, np.ndarray]:
    """Every `BatchStatistics` field over `batches`, concatenated ([n] or [n, d]);
    with `iwae_samples` K >= 1 also `log_likelihood` and `effective_sample_size`.
    `seed` is an evaluation seed (an int or a pair; see the module docstring).
    `on_batch(examples_done)` is called after each batch (each round of R
    batches under a `strategy` of R > 1 replicas, which spreads the batches
    over its replicas with the numbers of one device)."""
    if isinstance(batches, np.ndarray) or tf.is_tensor(batches):  # images, which would iterate one by one
        raise UserError(f"batches are prepared image batches (a tf.data.Dataset or a list of arrays [b, h, w, c]), "
                        f"got one {type(batches).__name__}; make them with probvae.data.evaluation_batches(images, "
                        "batch_size, ...)")
    compiled = _compiled(model)
    seed, whole = _evaluation_seed(seed)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        sample_chunk = 0 if sample_chunk is None else _whole("sample_chunk", sample_chunk)
        run = compiled.distributed(strategy, bool(iwae_samples), whole)
        return replicas.map_batches(strategy, run, batches, seed, tf.constant(int(iwae_samples)),
                                    tf.constant(sample_chunk), on_round=on_batch)
    values, done = {}, 0
    for index, x in enumerate(batches):
        batch_seed = _batch_seed(seed, whole, index)
        results = compiled.statistics(x, batch_seed)._asdict()
        if iwae_samples:
            results.update(importance_sampling(model, x, iwae_samples, batch_seed, sample_chunk, force=True)._asdict())
        for name, value in results.items():
            values.setdefault(name, []).append(value.numpy())
        done += int(x.shape[0])
        if on_batch is not None:
            on_batch(done)
    return {name: np.concatenate(parts) for name, parts in values.items()}


def elbo_per_example(model, batches: tf.data.Dataset, seed, strategy=None) -> Dict[str, np.ndarray]:
    """ELBO, reconstruction and KL of every example in `batches`, [n] each, nats
    (spread over the replicas of `strategy`, if given, with the same numbers)."""
    values = per_example(model, batches, seed, strategy=strategy)
    return {name: values[name] for name in ("elbo", "reconstruction", "kl")}


def binarization(model, binarization_seed: int) -> dict:
    """The JSON fields that say how the held-out images were binarized."""
    binarize = model.likelihood_head.binarize
    return {
        "binarization": f"fixed, seed {binarization_seed}" if binarize else "none",
        "binarization_seed": binarization_seed if binarize else None,
    }


def summarise(values: Dict[str, np.ndarray], names) -> dict:
    """{name: mean, name_stderr: standard error} of each of `names` in `values`."""
    summary = {}
    for name in names:
        summary[name], summary[f"{name}_stderr"] = mean_and_stderr(values[name])
    return summary


def latent_summary(values: Dict[str, np.ndarray]) -> dict:
    """Active units, A_i and the per-dimension KL of an evaluation's per-example values."""
    posterior_mean_variance = unit_activity(values["posterior_mean"])
    return dict(
        active_units=int(np.sum(active_units(posterior_mean_variance))),
        active_unit_threshold=ACTIVE_UNIT_THRESHOLD,
        latent_dim=int(posterior_mean_variance.size),
        posterior_mean_variance=posterior_mean_variance.tolist(),
        kl_per_dimension=values["kl_per_dimension"].astype(np.float64).mean(axis=0).tolist(),
        kl_total_correlation=float(values["total_correlation"].astype(np.float64).mean()),
    )


def held_out_images(images, image_shape):
    """`images` to evaluate, checked: an `ImageStream` or an array (NumPy or a
    tensor) of uint8 0..255 or floats in [0, 1], [n, h, w, c] (or [n, h, w] of
    one channel) of the model's `image_shape`; a UserError naming what is wrong."""
    if isinstance(images, data_lib.ImageStream):
        shape = images.image_shape
    else:
        images = data_lib.checked_images(images.numpy() if tf.is_tensor(images) else images, "images")
        shape = images.shape[1:]
    if tuple(shape) != tuple(image_shape):
        raise UserError(f"images must be [n, {', '.join(map(str, image_shape))}] for this model, got images of "
                        f"shape {tuple(shape)}")
    if len(images) == 0:
        raise UserError("images hold no examples; pass at least one image to evaluate")
    return images


def decoded(values: Dict[str, np.ndarray], images) -> Dict[str, np.ndarray]:
    """`values` of `per_example`, or an `UnreadableImagesError` if no image was
    evaluated: a stream (`images`) whose every file failed to decode in the pass."""
    if values.get("elbo") is not None and len(values["elbo"]):
        return values
    failing = images.failing() if isinstance(images, data_lib.ImageStream) else []
    names = f" ({', '.join(failing[:3])}{', ...' if len(failing) > 3 else ''})" if failing else ""
    raise UnreadableImagesError(
        f"none of the {len(images)} images could be read{names}: their files changed or were removed since "
        "the data were listed; restore them, or load the data again")


def evaluate_elbo(model, images: np.ndarray, *, seed=0, batch_size: int = 1000,
                  binarization_seed: int = 0, strategy=None, with_latents: bool = False,
                  iwae_samples: int = 0) -> dict:
    """Mean held-out ELBO and its parts, with standard errors, in nats.

    Args:
      model: a `VAE`.
      images: uint8 images [n, h, w, c], or a `probvae.data.ImageStream`
        (then images that fail to decode are left out and counted as
        `skipped_images`).
      seed: evaluation seed of the posterior samples (an int or a pair).
      batch_size: examples per evaluation step.
      binarization_seed: seed of the fixed binarization (Bernoulli models).
      strategy: a tf.distribute strategy the model was built under, or None.
      with_latents: also `active_units` and `kl_per_dimension` (mean over
        the images, [d]), as `evaluate` reports them.
      iwae_samples: K >= 1: also `iwae_bound` (and its `_stderr`), the mean
        importance-weighted bound with K samples per image (what an
        importance-weighted training objective maximises; at a small K a
        bound on log p(x), not an estimate of it), and `iwae_samples`.
    """
    images = held_out_images(images, model.image_shape)
    batches = data_lib.evaluation_batches(images, batch_size, binarize=model.likelihood_head.binarize,
                                          seed=binarization_seed)
    iwae_samples = _whole("iwae_samples", iwae_samples) if iwae_samples else 0
    parts = decoded(per_example(model, batches, seed, iwae_samples=iwae_samples, strategy=strategy), images)
    summary = {"n_examples": int(len(parts["elbo"]))}
    if isinstance(images, data_lib.ImageStream):
        summary["skipped_images"] = images.skipped
    summary.update(summarise(parts, ("elbo", "reconstruction", "kl")))
    if iwae_samples:
        summary.update(summarise({"iwae_bound": parts["log_likelihood"]}, ("iwae_bound",)), iwae_samples=iwae_samples)
    summary.update(binarization(model, binarization_seed))
    if with_latents:
        latent = latent_summary(parts)
        summary.update(active_units=latent["active_units"], kl_per_dimension=latent["kl_per_dimension"])
    return summary


def estimate_elbo(model, batches, values, settings, log=None, on_chunk=None, strategy=None) -> dict:
    """The "elbo" estimator: log p(x) >= ELBO, per image from the ELBO pass
    (one sample: no Monte Carlo error of its own is estimated)."""
    return dict(summarise({"log_likelihood": values["elbo"]}, ("log_likelihood",)),
                log_likelihood_mc_stderr=None, effective_sample_size=1.0)


def estimate_iwae(model, batches, values, settings, log=None, on_chunk=None, strategy=None) -> dict:
    """The "iwae" estimator: the K-sample importance-weighted estimate drawn in the ELBO pass."""
    n, num_samples = len(values["log_likelihood"]), settings.iwae_samples
    relative_variance = np.maximum(1.0 / values["effective_sample_size"].astype(np.float64) - 1.0 / num_samples, 0.0)
    return dict(summarise(values, ("log_likelihood",)),
                log_likelihood_mc_stderr=float(np.sqrt(relative_variance.sum()) / n),
                effective_sample_size=float(values["effective_sample_size"].mean()), iwae_samples=num_samples)
