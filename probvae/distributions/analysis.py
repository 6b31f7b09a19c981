"""Distributions an analyst builds from a trained model's posteriors.

- `aggregate_posterior(q)`: the aggregate (marginal) posterior over a set of
  inputs x_1..x_n, the equal-weight mixture

      q(z) = (1/n) sum_n q(z | x_n),   log q(z) = logsumexp_n log q(z | x_n) - log n,

  as a `tfd.MixtureSameFamily`, so `log_prob`, `sample`, `mean`, `covariance`
  and Monte Carlo KLs against the prior work on it.
- `marginals(q)`: the univariate Normal marginals q(z_i | x) = N(m_i, S_ii).
- `kl_per_dimension(q, p)`: KL(q(z_i | x) || p(z_i)) of each marginal, in nats,
  closed form for a prior with Normal marginals:

      KL_i = log(s_i / S_ii^0.5) + (S_ii + (m_i - mu_i)^2) / (2 s_i^2) - 1/2

  For a diagonal posterior and a factorised prior these add up to the full KL.
  For a full-covariance posterior they add up to less: the full KL exceeds
  their sum by KL(q || prod_i q_i) = -0.5 log det(correlation of q) >= 0.
- `total_correlation(q)`: that excess, the total correlation of q,

      TC(q) = sum_i H(q(z_i|x)) - H(q(z|x)) = 0.5 (sum_i log S_ii - log det S) >= 0,

  zero for a diagonal posterior; for a factorised prior
  KL(q || p) = sum_i KL_i + TC(q) exactly (Chen et al., 2018, Isolating
  Sources of Disentanglement in VAEs).

Example:

    q = vae.posterior(x_test)                 # batch [n], event [d]
    q_agg = aggregate_posterior(q)            # batch [], event [d]
    z = q_agg.sample(1000, seed=(1, 2))
    kl_agg = tf.reduce_mean(q_agg.log_prob(z) - vae.prior.log_prob(z))  # MC estimate, nats
"""

import tensorflow as tf
import tensorflow_probability as tfp

from probvae.errors import UserError

tfd = tfp.distributions

__all__ = ["unwrap", "aggregate_posterior", "marginals", "kl_per_dimension", "total_correlation"]


def unwrap(distribution) -> tfd.Distribution:
    """The plain `tfd.Distribution` behind a Keras distribution layer's output."""
    return getattr(distribution, "tensor_distribution", distribution)


def aggregate_posterior(posterior) -> tfd.MixtureSameFamily:
    """The equal-weight mixture of a batch [n] of posteriors: batch [], event [d]."""
    components = unwrap(posterior)
    if len(components.batch_shape) != 1:
        raise UserError(
            f"aggregate_posterior needs posteriors of batch shape [n], got {components.batch_shape}"
        )
    count = tf.shape(components.mean())[0]
    return tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(logits=tf.zeros([count], components.dtype)),
        components_distribution=components,
        name="aggregate_posterior",
    )


def marginals(posterior) -> tfd.Normal:
    """The Normal marginals N(m_i, S_ii) of a Gaussian posterior: batch [n, d]."""
    posterior = unwrap(posterior)
    return tfd.Normal(loc=posterior.mean(), scale=posterior.stddev(), name="posterior_marginals")


def kl_per_dimension(posterior, prior) -> tf.Tensor:
    """KL(q(z_i|x) || p(z_i)) per example and dimension, [n, d], nats.

    Raises:
      UserError: the prior's marginals are not Normal (e.g. a mixture prior).
    """
    prior = unwrap(prior)
    if not isinstance(prior, (tfd.MultivariateNormalDiag, tfd.MultivariateNormalTriL)) and not (
        isinstance(prior, tfd.Independent) and isinstance(prior.distribution, tfd.Normal)
    ):
        raise UserError(
            f"per-dimension KL needs a prior with Normal marginals, not {type(prior).__name__}; "
            "estimate the KL by sampling instead"
        )
    prior_marginals = tfd.Normal(loc=prior.mean(), scale=prior.stddev())
    return tfd.kl_divergence(marginals(posterior), prior_marginals)


def total_correlation(posterior) -> tf.Tensor:
    """TC(q) = sum_i H(q(z_i|x)) - H(q(z|x)) of a multivariate Normal posterior, [n], nats."""
    posterior = unwrap(posterior)
    if not isinstance(posterior, tfd.MultivariateNormalLinearOperator):
        raise UserError(f"total correlation needs a multivariate Normal posterior, not {type(posterior).__name__}")
    # 0.5 * (sum_i log S_ii - log det S) with S = L L^T, log det S = 2 log |det L|.
    return tf.reduce_sum(tf.math.log(marginals(posterior).scale), -1) - posterior.scale.log_abs_determinant()
