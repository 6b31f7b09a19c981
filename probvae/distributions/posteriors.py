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

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from probvae.distributions.analysis import unwrap
from probvae.registry import POSTERIORS

tfd = tfp.distributions
tfpl = tfp.layers

__all__ = [
    "SCALE_FLOOR",
    "MultivariateNormalDiag",
    "MultivariateNormalTriL",
    "posterior_distribution",
    "posterior_layer",
    "posterior_params_size",
    "sample_posterior",
]

# Smallest posterior standard deviation (the same floor tfpl.MultivariateNormalTriL uses).
SCALE_FLOOR = 1e-5


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
    regularizer = tfpl.KLDivergenceRegularizer(prior, use_exact_kl=use_exact_kl, weight=kl_weight, **kwargs)
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
