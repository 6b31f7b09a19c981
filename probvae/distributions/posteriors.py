"""Posterior layers q(z|x): Keras layers that turn encoder outputs into a
`tfd.Distribution` and add KL(q || p) to the layer's losses.

The full posterior is `tfp.layers.MultivariateNormalTriL`: from a vector of
d + d(d+1)/2 parameters it builds N(loc, L L^T) with L lower triangular and its
diagonal passed through softplus plus 1e-5 (so scales never reach 0). The
diagonal posterior is N(loc, diag(scale^2)) with scale = softplus(raw) + 1e-5.

Each layer carries a `tfp.layers.KLDivergenceRegularizer(prior, weight=w)`;
tf-keras divides the regularizer's batch total by the batch size, so after a
call `layer.losses == [w * mean_n KL(q(z|x_n) || p(z))]`, in nats.

The layers convert to a tensor through the posterior mean, so building the
layer never draws an unseeded sample; the model samples with explicit seeds
through `sample_posterior`:

    z_n = loc_n + scale_n eps_n,   eps = transpose(stateless_normal([d, N], seed)),

where n is the example's row in the whole batch of N (the global batch when
a batch is split over replicas), so an example's sample depends only on the
seed and its row, not on how the batch is split. For a whole batch this is
the distribution's own `sample(seed=seed)`.

A fix over plain `tfp.layers`: `DistributionLambda.__call__` hands Keras two
outputs (the distribution and its tensor value), and tf-keras applies the
activity regularizer to each, so the stock layer adds the KL twice
(tensorflow/probability#1215, #599). The layers here regularize the
distribution once.
"""

import threading

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from probvae.distributions.analysis import unwrap
from probvae.errors import UserError
from probvae.registry import POSTERIORS

tfd = tfp.distributions
tfpl = tfp.layers

__all__ = [
    "SCALE_FLOOR",
    "KLDivergenceRegularizer",
    "kl_divergence",
    "MultivariateNormalDiag",
    "MultivariateNormalTriL",
    "posterior_distribution",
    "posterior_layer",
    "posterior_params_size",
    "sample_posterior",
]

# Smallest posterior standard deviation (the same floor tfpl.MultivariateNormalTriL uses).
SCALE_FLOOR = 1e-5


def kl_divergence(posterior, prior, z=None) -> tf.Tensor:
    """KL(posterior || prior) per example [n], nats: analytic where TFP has
    it, else the one-sample estimate log q(z) - log p(z) at the given `z` [n, d].

    The one KL of probvae: the posterior layer's regularizer computes it once
    per call, and the ELBO, the loss and evaluation use that tensor.
    """
    try:
        return tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        if z is None:
            raise UserError("this prior has no analytic KL; pass samples z to estimate it")
        return posterior.log_prob(z) - prior.log_prob(z)


class KLDivergenceRegularizer(tfpl.KLDivergenceRegularizer):
    """`tfp.layers.KLDivergenceRegularizer` that keeps what it computed.

    Called on q(z|x) it builds the prior once (calling `distribution_b` if
    it is a callable: a learned prior, e.g. the VampPrior, which encodes its
    pseudo-inputs), computes the per-example KL [n] with `kl_divergence`
    (analytic, or at `test_points_fn(q)` without a closed form) and returns
    weight * sum_n KL_n, which tf-keras divides by n. `last()` returns that
    per-example KL and that prior, for the ELBO of the same call (per thread:
    tf.distribute builds each replica's step in a thread of its own).
    """

    def __init__(self, distribution_b, use_exact_kl=False, test_points_fn=None, weight=None, **kwargs):
        super().__init__(distribution_b, use_exact_kl=use_exact_kl,
                         test_points_fn=test_points_fn or tf.convert_to_tensor, weight=weight, **kwargs)
        self._last = threading.local()

    def __call__(self, distribution_a):
        distribution_a = getattr(distribution_a, "_tfp_distribution", distribution_a)
        prior = self.distribution_b() if callable(self.distribution_b) else self.distribution_b
        z = None if self.use_exact_kl else self.test_points_fn(distribution_a)
        kl = tfd.kl_divergence(distribution_a, prior) if self.use_exact_kl else kl_divergence(
            distribution_a, prior, z)  # [n]
        self._last.kl, self._last.prior = kl, prior
        weighted = kl if self.weight is None else tf.cast(self.weight, kl.dtype) * kl
        return tf.reduce_sum(weighted, name="batch_total_kl_divergence")

    def last(self):
        """(per-example KL [n], prior) of this thread's latest call."""
        return self._last.kl, self._last.prior


class _RegularizeOnce:
    """Apply the activity regularizer to the distribution only, not to its value too."""

    def _handle_activity_regularization(self, inputs, outputs):
        if isinstance(outputs, (tuple, list)):
            outputs = outputs[0]
        super()._handle_activity_regularization(inputs, outputs)


class MultivariateNormalTriL(_RegularizeOnce, tfpl.MultivariateNormalTriL):
    """`tfp.layers.MultivariateNormalTriL` whose KL regularizer counts once."""


class MultivariateNormalDiag(_RegularizeOnce, tfpl.DistributionLambda):
    """A d-variate Normal with diagonal covariance from 2d parameters."""

    def __init__(self, event_size, convert_to_tensor_fn=tfd.Distribution.mean, **kwargs):
        super().__init__(
            lambda params: MultivariateNormalDiag.new(params, event_size),
            convert_to_tensor_fn,
            **kwargs,
        )

    @staticmethod
    def new(params, event_size):
        """N(params[..., :d], diag(softplus(params[..., d:]) + 1e-5)^2)."""
        params = tf.convert_to_tensor(params)
        scale = tf.math.softplus(params[..., event_size:]) + np.array(
            SCALE_FLOOR, params.dtype.as_numpy_dtype
        )
        return tfd.MultivariateNormalDiag(loc=params[..., :event_size], scale_diag=scale)

    @staticmethod
    def params_size(event_size):
        return 2 * event_size


def posterior_params_size(latent_dim: int, covariance: str = "full") -> int:
    """How many encoder outputs the posterior layer takes."""
    return POSTERIORS[covariance].load().params_size(latent_dim)


def posterior_distribution(params, latent_dim: int, covariance: str = "full") -> tfd.Distribution:
    """q(z|x) from parameters [n, params_size] without the layer (no KL loss added).

    The same distribution the posterior layer returns, batch [n], event [d];
    used where a posterior must not regularize, e.g. the VampPrior's components.
    """
    return POSTERIORS[covariance].load().new(params, latent_dim)


def posterior_layer(latent_dim, prior, covariance="full", kl_weight=None, use_exact_kl=True,
                    test_points_fn=None):
    """The q(z|x) layer with its KL regularizer toward `prior`.

    Args:
      latent_dim: d, the event size of q.
      prior: a `tfd.Distribution` with event shape [d], or a callable returning one.
      covariance: a registered posterior (`probvae.registry.POSTERIORS`):
        "full" (MultivariateNormalTriL) or "diag".
      kl_weight: scalar (or non-trainable `tf.Variable`) multiplying the KL
        loss; None means 1.
      use_exact_kl: analytic KL; pass False for priors without a closed form.
      test_points_fn: with use_exact_kl=False, a function q -> z [n, d]
        drawing the sample of the Monte Carlo estimate log q(z) - log p(z);
        pass one with an explicit seed. Default: q's value (its mean), which
        is not an unbiased estimate.

    Returns:
      A Keras layer mapping params [n, params_size] to a float32 distribution
      with batch shape [n] and event shape [d].
    """
    kwargs = {} if test_points_fn is None else {"test_points_fn": test_points_fn}
    regularizer = KLDivergenceRegularizer(prior, use_exact_kl=use_exact_kl, weight=kl_weight, **kwargs)
    return POSTERIORS[covariance].load()(
        latent_dim,
        convert_to_tensor_fn=tfd.Distribution.mean,
        activity_regularizer=regularizer,
        name="posterior",
        dtype="float32",  # q(z|x) stays float32 under a mixed-precision policy
    )


def sample_posterior(posterior, seed=None, rows=None) -> tf.Tensor:
    """One reparameterized sample z ~ q(z|x) per example, [n, d].

    z_n = loc_n + scale_n eps_(offset + n), with eps the transpose of
    stateless_normal([d, total], seed): the draw for a whole batch of `total`
    examples, of which this batch holds rows offset .. offset + n - 1. For the
    whole batch (rows None) it is `posterior.sample(seed=seed)` bit for bit:
    TFP's multivariate Normals draw their [d, n] standard normal noise so.

    Args:
      posterior: q(z|x) from a posterior layer or `posterior_distribution`
        (a multivariate Normal with `loc` [n, d] and `scale`), batch [n], event [d].
      seed: a stateless seed (shape [2] int32 tensor); None draws unseeded noise.
      rows: (offset, total), ints or int32 scalars; None means (0, n).
    """
    distribution = unwrap(posterior)
    loc = tf.convert_to_tensor(distribution.loc)  # [n, d]
    shape = tf.shape(loc)
    offset, total = (0, shape[0]) if rows is None else rows
    draw_shape = tf.stack([shape[1], total])
    if seed is None:
        noise = tf.random.normal(draw_shape, dtype=loc.dtype)
    else:
        noise = tf.random.stateless_normal(draw_shape, seed=seed, dtype=loc.dtype)  # [d, total]
    noise = tf.transpose(noise[:, offset: offset + shape[0]])  # [n, d]
    return loc + distribution.scale.matvec(noise)
