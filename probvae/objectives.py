"""Objectives as pure functions of distributions: the ELBO and the
importance-weighted bound. All values are per example, in nats.

With q = q(z|x), p = p(z) and z_k ~ q:

    ELBO(x)      = E_q[log p(x|z)] - KL(q || p)
                 ~ log p(x|z_1) - KL(q || p)              (analytic KL)
                 ~ log p(x|z_1) - (log q(z_1) - log p(z_1))   (otherwise)
    log w_k      = log p(x|z_k) + log p(z_k) - log q(z_k|x)
    L_K(x)       = log (1/K) sum_k exp(log w_k)   (Burda et al., 2015)

L_1 is the ELBO estimator, E[L_K] <= E[L_{K+1}] <= log p(x), and L_K -> log p(x)
as K grows. `reduce_logmeanexp` keeps the sum in log space.

Free bits (Kingma et al., 2016) with lambda nats per latent dimension change
only the training loss's KL term (`free_bits_kl`). A full-covariance q does
not split its KL over dimensions, so with a factorised Normal prior
p(z) = prod_j N(z_j; m_j, s_j^2) the KL of example n is split exactly as

    KL_n = sum_j KL(q(z_j|x_n) || p(z_j)) + TC_n,    TC_n >= 0,

marginal KLs plus the total correlation TC_n = KL(q(z|x_n) || prod_j q(z_j|x_n)),
and the term becomes sum_j max(lambda, mean_n KL_nj) + mean_n TC_n: each
dimension keeps lambda nats for free, correlations are never free. With
other priors (mixtures, VampPrior) the marginals have no closed form and the
threshold applies to the total: max(d * lambda, mean_n KL_n).

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes.
  Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
  Kingma et al. (2016), Improved Variational Inference with Inverse
    Autoregressive Flow (free bits).
"""

from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from probvae import checks
from probvae.distributions.analysis import kl_per_dimension
from probvae.distributions.flows import is_flow
from probvae.distributions.posteriors import kl_divergence
from probvae.errors import UserError
from probvae.seeds import as_seed, sample_seed

tfd = tfp.distributions

__all__ = [
    "ElboParts",
    "free_bits_kl",
    "elbo_parts",
    "importance_log_weights",
    "CHUNK_ROWS",
    "ImportanceEstimate",
    "sample_seed",
    "posterior_samples",
    "as_seed",
    "whole_number",
    "importance_sampling",
    "iwae_bound",
]

# Decoder rows (samples x examples) per chunk when no sample chunk is given.
CHUNK_ROWS = 1024


class ElboParts(NamedTuple):
    """Per-example ELBO and its parts, each [n], in nats: elbo = reconstruction - kl."""

    elbo: tf.Tensor
    reconstruction: tf.Tensor
    kl: tf.Tensor


def _marginal_kls(posterior, prior):
    """KL(q(z_j|x) || p(z_j)) [n, d] for a Gaussian posterior and a prior with Normal marginals, else None."""
    try:
        return kl_per_dimension(posterior, prior)
    except (UserError, NotImplementedError):  # NotImplementedError: a flow posterior's marginals have no closed form
        return None


def free_bits_kl(posterior, prior, kl, free_bits, batch_mean=tf.reduce_mean):
    """The training loss's KL term with `free_bits` nats per latent dimension (scalar).

    Args:
      posterior: q(z|x), batch [n], event [d].
      prior: p(z), event [d].
      kl: per-example KL(q || p) [n] (analytic or the ELBO's one-sample estimate).
      free_bits: lambda >= 0, nats per dimension.
      batch_mean: (values, axis) -> mean over the batch axis; under
        tf.distribute `probvae.replicas.global_mean`, so mean_n runs over
        the whole global batch.

    Returns:
      sum_j max(lambda, mean_n KL_nj) + mean_n (KL_n - sum_j KL_nj) for a
      factorised Normal prior, else max(d * lambda, mean_n KL_n). With
      lambda = 0 both equal mean_n KL_n.
    """
    free_bits = tf.cast(free_bits, tf.float32)
    marginal = _marginal_kls(posterior, prior)
    if marginal is None:
        latent_dim = tf.cast(posterior.event_shape_tensor()[-1], tf.float32)
        return tf.maximum(latent_dim * free_bits, batch_mean(kl, axis=0))
    total_correlation = kl - tf.reduce_sum(marginal, axis=-1)  # [n], >= 0 up to rounding
    return tf.reduce_sum(tf.maximum(free_bits, batch_mean(marginal, axis=0))) + batch_mean(
        total_correlation, axis=0
    )


def elbo_parts(x, posterior, prior, likelihood: Callable, seed=None, z=None, kl=None) -> ElboParts:
    """One-sample ELBO of images x [n, h, w, c].

    Args:
      x: images, [n, h, w, c].
      posterior: q(z|x), batch shape [n], event shape [d].
      prior: p(z), event shape [d].
      likelihood: function z [n, d] -> p(x|z) with batch [n], event [h, w, c].
      seed: a stateless seed (shape [2] int tensor) or None.
      z: the posterior sample [n, d] to use; None draws z ~ q with `seed`.
      kl: the per-example KL(q || p) [n] if already computed (a hierarchy
        sums its levels' KLs); None computes it (`distributions.kl_divergence`, at z without a closed form).
    """
    if z is None:
        z = posterior.sample(seed=seed)  # [n, d]
    reconstruction = likelihood(z).log_prob(x)  # [n]
    if kl is None:
        kl = kl_divergence(posterior, prior, z)  # [n]
    return ElboParts(reconstruction - kl, reconstruction, kl)


def importance_log_weights(x, z, posterior, prior, likelihood: Callable):
    """Log importance weights at given samples, with q(z|x) as proposal.

        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)

    Args:
      x: images, [n, h, w, c].
      z: latent samples, [num_samples, n, d].
      posterior: q(z|x), batch shape [n], event shape [d].
      prior: p(z), event shape [d].
      likelihood: function z [m, d] -> p(x|z) with batch [m], event [h, w, c].

    Returns:
      log w, [num_samples, n], nats.
    """
    num_samples, batch = tf.shape(z)[0], tf.shape(z)[1]
    flat_z = tf.reshape(z, [-1, tf.shape(z)[-1]])  # [num_samples * n, d]
    image_shape = tf.shape(x)[1:]
    tiled_x = tf.reshape(  # [num_samples * n, h, w, c]
        tf.broadcast_to(x[tf.newaxis], tf.concat([[num_samples, batch], image_shape], 0)),
        tf.concat([[-1], image_shape], 0),
    )
    log_px_z = tf.reshape(likelihood(flat_z).log_prob(tiled_x), [num_samples, batch])
    return log_px_z + prior.log_prob(z) - posterior.log_prob(z)  # [num_samples, n]


def posterior_samples(posterior, seed, ks) -> tf.Tensor:
    """z [S, n, d]: for each k of `ks` [S], the sample `posterior.sample(seed=sample_seed(seed, k))`.

    A Gaussian posterior of TFP's `MultivariateNormalLinearOperator` family
    (`MultivariateNormalTriL`, `MultivariateNormalDiag`: z = loc + scale eps,
    eps ~ N(0, I)) draws its eps [n, d] as `tf.random.stateless_normal` of
    shape [d, n] transposed. Here only that draw runs once per k; the affine
    map runs once on all S draws, through the posterior's own bijector, so z
    carries TFP's bijector cache and `posterior.log_prob(z)` takes eps from it
    instead of solving scale eps = z - loc. The values are bit for bit those
    of S calls of `sample` (`_affine_draws_are_tfps` checks that once per
    process against the installed TFP; any other posterior, or a TFP that
    draws differently, takes S calls of `sample`). A flow of such a posterior
    (`probvae.distributions.flows`) draws its Gaussian so and applies the flow
    once to all S draws, so `log_prob(z)` takes them from the flow's cache.
    """
    posterior = getattr(posterior, "tensor_distribution", posterior)  # a tfp.layers output: its distribution
    if is_flow(posterior) and _affine_normal(posterior.distribution):
        return posterior.bijector.forward(posterior_samples(posterior.distribution, seed, ks))
    if _affine_normal(posterior) and _affine_draws_are_tfps():
        n, d = tf.shape(posterior.loc)[0], tf.shape(posterior.loc)[1]
        eps = tf.map_fn(lambda k: tf.random.stateless_normal([d, n], seed=sample_seed(seed, k)), ks,
                        fn_output_signature=tf.float32)  # [S, d, n]
        return posterior.bijector.forward(tf.transpose(eps, [0, 2, 1]))
    return tf.map_fn(lambda k: posterior.sample(seed=sample_seed(seed, k)), ks, fn_output_signature=tf.float32)


def _affine_normal(posterior) -> bool:
    """A float32 MultivariateNormalLinearOperator with batch [n] and a location (the posterior layers' kind)."""
    return (isinstance(posterior, tfd.MultivariateNormalLinearOperator) and posterior.loc is not None
            and posterior.dtype == tf.float32 and posterior.batch_shape.rank == 1
            and posterior.loc.shape.rank == 2)


_AFFINE_DRAWS = []


def _affine_draws_are_tfps() -> bool:
    """Whether `posterior_samples`' draws are the installed TFP's, bit for bit
    (computed eagerly once per process, on a small full-covariance and diagonal posterior)."""
    if not _AFFINE_DRAWS:
        with tf.init_scope():
            rng = np.random.default_rng(0)
            loc = tf.constant(rng.normal(size=(3, 4)), tf.float32)
            tril = tf.constant(np.tril(rng.normal(size=(3, 4, 4))) + 2 * np.eye(4), tf.float32)
            seed = tf.constant([7, 11])
            same = True
            for q in (tfd.MultivariateNormalTriL(loc, tril), tfd.MultivariateNormalDiag(loc, tf.exp(loc))):
                eps = tf.random.stateless_normal([4, 3], seed=sample_seed(seed, 2))
                mine = q.bijector.forward(tf.transpose(eps)[tf.newaxis])[0]
                same = same and bool(np.array_equal(mine.numpy(), q.sample(seed=sample_seed(seed, 2)).numpy()))
            _AFFINE_DRAWS.append(same)
    return _AFFINE_DRAWS[0]


class ImportanceEstimate(NamedTuple):
    """The K-sample importance-weighted estimate of log p(x) and its ESS, [n] each."""

    log_likelihood: tf.Tensor  # [n], nats
    effective_sample_size: tf.Tensor  # [n], between 1 and K


def whole_number(name: str, value) -> int:
    """`value` as an int, if it is a whole number of at least 1 (NumPy integers too)."""
    if isinstance(value, np.integer):
        value = int(value)
    checks.positive_int(name, value)
    return value


def _log_add_exp(a, b):
    """log(exp a + exp b) elementwise, exact when either is -inf."""
    return tf.reduce_logsumexp(tf.stack([a, b]), axis=0)


def importance_sampling(x, posterior, prior, likelihood: Callable, seed, num_samples,
                        sample_chunk=0) -> ImportanceEstimate:
    """The K-sample importance-weighted estimate of log p(x) and its ESS, [n] each.

        LL = log (1/K) sum_k w_k,   ESS = (sum_k w_k)^2 / sum_k w_k^2,
        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),  z_k ~ q(z|x)

    Sample k is drawn by the posterior's own sampler from `sample_seed(seed, k)`.
    The samples are taken S = sample_chunk at a time (0: max(1, CHUNK_ROWS // n)),
    S * n decoder rows per chunk, with a running logsumexp of log w and of
    2 log w carrying the sums from chunk to chunk, so memory does not grow
    with K; the result does not depend on S.

    Args:
      x: model-ready images [n, h, w, c].
      posterior: q(z|x), batch [n], event [d].
      prior: p(z), event [d].
      likelihood: z [m, d] -> p(x|z), batch [m], event [h, w, c].
      seed: stateless seed, int32 [2].
      num_samples: K, an int32 scalar >= 1.
      sample_chunk: S, an int32 scalar (0: from CHUNK_ROWS).
    """
    batch = tf.shape(x)[0]
    chunk = tf.where(sample_chunk > 0, sample_chunk, tf.maximum(1, CHUNK_ROWS // tf.maximum(batch, 1)))

    def body(start, log_sum, log_sum_squares):
        stop = tf.minimum(start + chunk, num_samples)
        z = posterior_samples(posterior, seed, tf.range(start, stop))  # [S, n, d]
        log_weights = importance_log_weights(x, z, posterior, prior, likelihood)
        log_weights = tf.cast(log_weights, tf.float64)  # [S, n]
        log_sum = _log_add_exp(log_sum, tf.reduce_logsumexp(log_weights, axis=0))
        log_sum_squares = _log_add_exp(log_sum_squares, tf.reduce_logsumexp(2.0 * log_weights, axis=0))
        return stop, log_sum, log_sum_squares

    empty = tf.fill([batch], tf.constant(-np.inf, tf.float64))  # log 0
    # One chunk at a time: parallel iterations would hold several chunks in memory.
    _, log_sum, log_sum_squares = tf.while_loop(
        lambda start, *_: start < num_samples, body, (tf.constant(0), empty, empty), parallel_iterations=1
    )
    estimate = log_sum - tf.math.log(tf.cast(num_samples, tf.float64))  # [n]
    effective_sample_size = tf.exp(2.0 * log_sum - log_sum_squares)  # [n]
    return ImportanceEstimate(tf.cast(estimate, tf.float32), tf.cast(effective_sample_size, tf.float32))


def iwae_bound(log_weights, kl_weight=1.0, log_likelihoods=None):
    """The importance-weighted bound of K samples per example, [n], nats:

        L_K = log (1/K) sum_k exp(log w_k)

    Args:
      log_weights: log w [K, n] = log p(x|z_k) + log p(z_k) - log q(z_k|x).
      kl_weight: beta of a KL warm-up: with `log_likelihoods` log p(x|z_k)
        [K, n] given, each weight becomes log p(x|z_k) + beta (log w_k - log
        p(x|z_k)), so beta = 1 is the bound and beta = 0 the mean-free
        reconstruction term (the usual annealing of the IWAE objective).
    """
    if log_likelihoods is not None:
        log_weights = log_likelihoods + kl_weight * (log_weights - log_likelihoods)
    count = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(count)
