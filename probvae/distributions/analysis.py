"""Distributions an analyst builds from a trained model's posteriors.

- `aggregate_posterior(q)`: the aggregate (marginal) posterior over a set of
  inputs x_1..x_n, the equal-weight mixture

      q(z) = (1/n) sum_n q(z | x_n),   log q(z) = logsumexp_n log q(z | x_n) - log n,

  as a `tfd.MixtureSameFamily`, so `log_prob`, `sample`, `mean`, `covariance`
  and Monte Carlo KLs against the prior work on it.
- `marginals(q)`: the univariate Normal marginals q(z_i | x) = N(m_i, S_ii).
- `kl_per_dimension(q, p, z=None)`: KL(q(z_i | x) || p(z_i)) of each
  marginal, in nats, a one-sample estimate at z for mixture priors (whose
  marginals `prior_marginals(p)` are 1-D mixtures), closed form for a prior
  with Normal marginals:

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

from probvae.distributions.mixtures import gaussian_mixture
from probvae.errors import UserError

tfd = tfp.distributions

__all__ = ["unwrap", "aggregate_posterior", "marginals", "prior_marginals", "kl_per_dimension", "total_correlation"]


def unwrap(distribution) -> tfd.Distribution:
    """The plain `tfd.Distribution` behind a Keras distribution layer's output.

    Examples:
      >>> import tensorflow_probability as tfp
      >>> layer = tfp.layers.MultivariateNormalTriL(2)
      >>> q = layer(tf.zeros([3, 5]))  # the layer's output: a Keras tensor wrapper
      >>> type(unwrap(q)).__name__, unwrap(unwrap(q)) is unwrap(q)
      ('MultivariateNormalTriL', True)
    """
    return getattr(distribution, "tensor_distribution", distribution)


def aggregate_posterior(posterior) -> tfd.MixtureSameFamily:
    """The equal-weight mixture of a batch [n] of posteriors: batch [], event [d].

    Examples:
      >>> q = tfd.MultivariateNormalDiag(tf.constant([[0., 0.], [2., 0.], [0., 2.]]), tf.ones([3, 2]))
      >>> q_agg = aggregate_posterior(q)
      >>> print(q_agg.batch_shape, q_agg.event_shape, q_agg.mean().numpy().round(3))
      () (2,) [0.667 0.667]
    """
    components = unwrap(posterior)
    if len(components.batch_shape) != 1:
        raise UserError(
            f"aggregate_posterior needs posteriors of batch shape [n], got {components.batch_shape}"
        )
    count = tf.shape(components.mean())[0]
    return gaussian_mixture(tf.zeros([count], components.dtype), components, name="aggregate_posterior")


def marginals(posterior) -> tfd.Normal:
    """The Normal marginals N(m_i, S_ii) of a Gaussian posterior: batch [n, d].

    Examples:
      >>> q = tfd.MultivariateNormalTriL(tf.zeros([3, 2]), tf.constant([[1., 0.], [1., 1.]]))  # S = [[1, 1], [1, 2]]
      >>> m = marginals(q)
      >>> print(m.batch_shape, (m.stddev().numpy()[0] ** 2).round(3))
      (3, 2) [1. 2.]
    """
    posterior = unwrap(posterior)
    return tfd.Normal(loc=posterior.mean(), scale=posterior.stddev(), name="posterior_marginals")


def _has_normal_marginals(prior) -> bool:
    return isinstance(prior, (tfd.MultivariateNormalDiag, tfd.MultivariateNormalTriL)) or (
        isinstance(prior, tfd.Independent) and isinstance(prior.distribution, tfd.Normal))


def prior_marginals(prior):
    """The univariate marginals p(z_i) of a prior, batch [d]: Normals; the
    factors of a factorised prior (`tfd.Independent` over d univariate
    distributions, e.g. Laplace); or for a mixture of Gaussians (mixture,
    VampPrior) the mixtures of the components' i-th Normal marginals with the
    same weights.

    Raises:
      UserError: a prior whose marginals are none of these.

    Examples:
      >>> print(prior_marginals(tfd.MultivariateNormalDiag(tf.zeros(3))).batch_shape)
      (3,)
      >>> mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros(4)),
      ...                                 tfd.MultivariateNormalDiag(tf.zeros([4, 3]), tf.ones([4, 3])))
      >>> type(prior_marginals(mixture)).__name__, prior_marginals(mixture).batch_shape
      ('MixtureSameFamily', TensorShape([3]))
    """
    prior = unwrap(prior)
    if _has_normal_marginals(prior):
        return tfd.Normal(loc=prior.mean(), scale=prior.stddev())
    if (isinstance(prior, tfd.Independent) and tf.get_static_value(prior.reinterpreted_batch_ndims) == 1
            and prior.distribution.event_shape.rank == 0):
        return prior.distribution
    if isinstance(prior, tfd.MixtureSameFamily):
        components = prior.components_distribution  # batch [K], event [d]
        if _has_normal_marginals(components):
            logits = prior.mixture_distribution.logits_parameter()  # [K]
            d = tf.shape(components.mean())[-1]
            return tfd.MixtureSameFamily(
                mixture_distribution=tfd.Categorical(logits=tf.repeat(logits[tf.newaxis], d, axis=0)),  # [d, K]
                components_distribution=tfd.Normal(loc=tf.transpose(components.mean()),  # [d, K]
                                                   scale=tf.transpose(components.stddev())),
                name="prior_marginals",
            )
    raise UserError(f"per-dimension KL needs a prior with Normal or Gaussian-mixture marginals, "
                    f"not {type(prior).__name__}")


def kl_per_dimension(posterior, prior, z=None) -> tf.Tensor:
    """KL(q(z_i|x) || p(z_i)) per example and dimension, [n, d], nats.

    Closed form where TFP has the KL of a Normal to the prior's marginal
    (Normal marginals). Other marginals (a mixture prior's 1-D mixtures, a
    Laplace prior's factors) have none: pass samples z [n, d] from q(z|x) and
    get the one-sample estimate log q(z_i|x) - log p(z_i) at them (the same
    kind of estimate as the ELBO's KL for such priors; unbiased, so its mean
    over many examples is the average KL).

    Raises:
      UserError: no closed form and no `z`, or marginals of another kind.

    Examples:
      >>> q = tfd.MultivariateNormalDiag(tf.zeros([3, 2]), tf.fill([3, 2], 0.5))
      >>> kl = kl_per_dimension(q, tfd.MultivariateNormalDiag(tf.zeros(2)))
      >>> print(kl.shape, kl.numpy()[0].round(3))  # 0.5 * (0.25 - 1) - log 0.5
      (3, 2) [0.318 0.318]
    """
    marginal = prior_marginals(prior)
    try:
        return tfd.kl_divergence(marginals(posterior), marginal)
    except NotImplementedError:
        pass
    if z is None:
        raise UserError(f"a prior with {type(marginal).__name__} marginals has no closed-form per-dimension KL; "
                        "pass samples z of the posterior to estimate it")
    return marginals(posterior).log_prob(z) - marginal.log_prob(z)


def total_correlation(posterior) -> tf.Tensor:
    """TC(q) = sum_i H(q(z_i|x)) - H(q(z|x)) of a multivariate Normal posterior, [n], nats.

    Examples:
      >>> q = tfd.MultivariateNormalTriL(tf.zeros([3, 2]), tf.constant([[1., 0.], [1., 1.]]))  # correlation 1/2**0.5
      >>> print(total_correlation(q).numpy().round(4))  # -0.5 log(1 - 1/2) = 0.5 log 2
      [0.3466 0.3466 0.3466]
    """
    posterior = unwrap(posterior)
    if not isinstance(posterior, tfd.MultivariateNormalLinearOperator):
        raise UserError(f"total correlation needs a multivariate Normal posterior, not {type(posterior).__name__}")
    # 0.5 * (sum_i log S_ii - log det S) with S = L L^T, log det S = 2 log |det L|.
    return tf.reduce_sum(tf.math.log(marginals(posterior).scale), -1) - posterior.scale.log_abs_determinant()
