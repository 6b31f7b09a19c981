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

Per-dimension KL. For a factorised prior p(z) = prod_i p(z_i) the KL splits
exactly into one term per latent dimension plus the total correlation of q:

    KL(q || p) = sum_i KL(q(z_i|x) || p(z_i)) + TC(q),
    TC(q)      = sum_i H(q(z_i|x)) - H(q(z|x))  >= 0,

where q(z_i|x) is the i-th marginal of q. For a Gaussian q = N(m, S) the
marginal is N(m_i, S_ii), so

    KL(q(z_i|x) || N(0, 1)) = 0.5 * (S_ii + m_i^2 - 1 - log S_ii),
    TC(q)                   = 0.5 * (sum_i log S_ii - log det S),

and TC = 0 for a diagonal posterior. A full-covariance posterior can move
information into the correlations of q, which no single dimension shows.

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes.
  Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
  Chen, Li, Grosse & Duvenaud (2018), Isolating Sources of Disentanglement in
    VAEs (the total-correlation term).
"""

from typing import Callable, NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp
from probvae.errors import UserError

tfd = tfp.distributions

__all__ = [
    "ElboParts",
    "kl_divergence",
    "elbo_parts",
    "importance_log_weights",
    "iwae_log_weights",
    "iwae_bound",
    "marginal_kl",
    "total_correlation",
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


def elbo_parts(x, posterior, prior, likelihood: Callable, seed=None) -> ElboParts:
    """One-sample ELBO of images x [n, h, w, c].

    Args:
      x: images, [n, h, w, c].
      posterior: q(z|x), batch shape [n], event shape [d].
      prior: p(z), event shape [d].
      likelihood: function z [n, d] -> p(x|z) with batch [n], event [h, w, c].
      seed: a stateless seed (shape [2] int tensor) or None.
    """
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


_DIAGONAL_OPERATORS = (
    tf.linalg.LinearOperatorDiag,
    tf.linalg.LinearOperatorIdentity,
    tf.linalg.LinearOperatorScaledIdentity,
)


def _gaussian(distribution, what: str):
    """The TFP distribution behind a layer output, checked to be a multivariate Normal."""
    distribution = getattr(distribution, "tensor_distribution", distribution)
    if not isinstance(distribution, tfd.MultivariateNormalLinearOperator):
        raise UserError(
            f"per-dimension KL needs a multivariate Normal {what}, got {type(distribution).__name__}"
        )
    return distribution


def marginal_kl(posterior, prior):
    """KL(q(z_i|x) || p(z_i)) of each marginal, [n, d], nats.

    Args:
      posterior: a multivariate Normal q(z|x), batch [n], event [d], any covariance.
      prior: a multivariate Normal p(z) with diagonal covariance, event [d].

    Returns:
      [n, d]; with `total_correlation(posterior)` it sums to KL(q || p).
    """
    posterior, prior = _gaussian(posterior, "posterior"), _gaussian(prior, "prior")
    if not isinstance(prior.scale, _DIAGONAL_OPERATORS):
        raise UserError("per-dimension KL needs a prior with independent dimensions (diagonal covariance)")
    posterior_marginals = tfd.Normal(posterior.mean(), posterior.stddev())  # [n, d]
    prior_marginals = tfd.Normal(prior.mean(), prior.stddev())  # [d]
    return tfd.kl_divergence(posterior_marginals, prior_marginals)


def total_correlation(posterior):
    """TC(q) = sum_i H(q(z_i|x)) - H(q(z|x)) of a multivariate Normal q, [n], nats (0 if diagonal)."""
    posterior = _gaussian(posterior, "posterior")
    # 0.5 * (sum_i log S_ii - log det S) with S = L L^T: log det S = 2 log |det L|.
    return tf.reduce_sum(tf.math.log(posterior.stddev()), -1) - posterior.scale.log_abs_determinant()
