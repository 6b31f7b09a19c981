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

import tensorflow as tf
import tensorflow_probability as tfp
from probvae.errors import UserError

tfd = tfp.distributions

__all__ = [
    "ElboParts",
    "kl_divergence",
    "free_bits_kl",
    "elbo_parts",
    "importance_log_weights",
    "iwae_log_weights",
    "iwae_bound",
]


class ElboParts(NamedTuple):
    """Per-example ELBO and its parts, each [n], in nats: elbo = reconstruction - kl."""

    elbo: tf.Tensor
    reconstruction: tf.Tensor
    kl: tf.Tensor


def kl_divergence(posterior, prior, z=None):
    """KL(posterior || prior) per example [n]: analytic where TFP has it, else
    the one-sample estimate log q(z) - log p(z) at the given `z` [n, d]."""
    try:
        return tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        if z is None:
            raise UserError("this prior has no analytic KL; pass samples z to estimate it")
        return posterior.log_prob(z) - prior.log_prob(z)


def _marginal_kls(posterior, prior):
    """KL(q(z_j|x) || p(z_j)) [n, d] for a prior with Normal marginals, else None."""
    from probvae.distributions.analysis import kl_per_dimension

    try:
        return kl_per_dimension(posterior, prior)
    except UserError:
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
        latent_dim = tf.cast(tf.shape(posterior.mean())[-1], tf.float32)
        return tf.maximum(latent_dim * free_bits, batch_mean(kl, axis=0))
    total_correlation = kl - tf.reduce_sum(marginal, axis=-1)  # [n], >= 0 up to rounding
    return tf.reduce_sum(tf.maximum(free_bits, batch_mean(marginal, axis=0))) + batch_mean(
        total_correlation, axis=0
    )


def elbo_parts(x, posterior, prior, likelihood: Callable, seed=None, z=None) -> ElboParts:
    """One-sample ELBO of images x [n, h, w, c].

    Args:
      x: images, [n, h, w, c].
      posterior: q(z|x), batch shape [n], event shape [d].
      prior: p(z), event shape [d].
      likelihood: function z [n, d] -> p(x|z) with batch [n], event [h, w, c].
      seed: a stateless seed (shape [2] int tensor) or None.
      z: the posterior sample [n, d] to use; None draws z ~ q with `seed`.
    """
    if z is None:
        z = posterior.sample(seed=seed)  # [n, d]
    reconstruction = likelihood(z).log_prob(x)  # [n]
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


def iwae_log_weights(x, posterior, prior, likelihood: Callable, num_samples, seed=None):
    """Log importance weights log w_k [num_samples, n] with q(z|x) as proposal."""
    z = posterior.sample(num_samples, seed=seed)  # [K, n, d]
    return importance_log_weights(x, z, posterior, prior, likelihood)


def iwae_bound(log_weights, axis=0):
    """log mean_k exp(log w_k): the K-sample importance-weighted bound."""
    return tfp.math.reduce_logmeanexp(log_weights, axis=axis)

