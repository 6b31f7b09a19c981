"""Posterior layers q(z|x): Keras layers that turn encoder outputs into a
`tfd.Distribution` and add KL(q || p) to the layer's losses.

The full posterior is `tfp.layers.MultivariateNormalTriL`: from a vector of
d + d(d+1)/2 parameters it builds N(loc, L L^T) with L lower triangular and its
diagonal passed through softplus plus 1e-5 (so scales never reach 0). The
diagonal posterior is N(loc, diag(scale^2)) with scale = softplus(raw) + 1e-5.

Each layer carries a `tfp.layers.KLDivergenceRegularizer(prior, weight=w)`
and applies it in its call, from explicit inputs:

    q = layer(params, seed=None, rows=None, prior=None)
    layer.losses == [w * mean_n KL(q(z|x_n) || p(z))]      (nats)

The KL is analytic where the pair has a closed form; otherwise it is the
one-sample estimate log q(z|x) - log p(z) at z = sample_posterior(q, seed,
rows), the sample the ELBO draws from the same seed, so loss and ELBO share
one z. Nothing is kept between calls, so the same params, seed and prior give
the same KL in any thread. `prior` saves building p(z) twice when the caller
has it (a VampPrior encodes its pseudo-inputs to build it).

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
distribution once, in `call`.
"""

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
    "posterior_input_size",
    "posterior_params_size",
    "sample_posterior",
]

# Smallest posterior standard deviation (the same floor tfpl.MultivariateNormalTriL uses).
SCALE_FLOOR = 1e-5


def kl_divergence(posterior, prior, z=None) -> tf.Tensor:
    """KL(posterior || prior) per example [n], nats: analytic where TFP has
    it, else the one-sample estimate log q(z) - log p(z) at the given `z` [n, d].

    The one KL of probvae: the posterior layer's regularizer, the ELBO and
    evaluation all compute it with this function, from q, p and z.

    Examples:
      >>> q = posterior_distribution(tf.zeros([3, 4]), 2, "diag")  # N(0, s^2 I), s = softplus(0) + 1e-5
      >>> p = tfd.MultivariateNormalDiag(tf.zeros(2))
      >>> print(np.round(kl_divergence(q, p).numpy(), 3))  # 2 * 0.5 * (s^2 - 1 - 2 log s)
      [0.213 0.213 0.213]
    """
    try:
        return tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        if z is None:
            raise UserError("this prior has no analytic KL; pass samples z to estimate it") from None
        return posterior.log_prob(z) - prior.log_prob(z)


def _is_flow(distribution) -> bool:
    """A transformed multivariate Normal that is not itself one (a flow posterior). Duck-typed:
    `tfd.TransformedDistribution(...)` of a bijector that is no `CompositeTensor` is TFP's private
    `_TransformedDistribution`, not an instance of the public class."""
    return (isinstance(getattr(distribution, "bijector", None), tfp.bijectors.Bijector)
            and not isinstance(distribution, tfd.MultivariateNormalLinearOperator)
            and isinstance(distribution.distribution, tfd.MultivariateNormalLinearOperator))


class KLDivergenceRegularizer(tfpl.KLDivergenceRegularizer):
    """`tfp.layers.KLDivergenceRegularizer` whose inputs are explicit.

    `regularizer(q, prior=None, seed=None, rows=None)` returns
    weight * sum_n KL(q(z|x_n) || p(z)), with the per-example KL of `kl`:
    analytic when `use_exact_kl`, else log q(z|x) - log p(z) at
    z = `sample_posterior(q, seed, rows)`, the sample the ELBO draws with the
    same seed and rows. `prior` is p(z) if the caller has built it already (a
    VampPrior encodes its pseudo-inputs to build it), else `distribution_b`
    (called if it is a callable). The same inputs give the same KL in any
    thread: nothing is kept between calls.

    Examples:
      >>> regularizer = KLDivergenceRegularizer(tfd.MultivariateNormalDiag(tf.zeros(2)), use_exact_kl=True)
      >>> q = posterior_distribution(tf.zeros([3, 4]), 2, "diag")
      >>> print(np.round(regularizer.kl(q).numpy(), 3), f"{float(regularizer(q)):.2f}")  # per example; sum
      [0.213 0.213 0.213] 0.64
    """

    def __init__(self, distribution_b, use_exact_kl=False, weight=None, **kwargs):
        super().__init__(distribution_b, use_exact_kl=use_exact_kl, weight=weight, **kwargs)

    def prior(self, prior=None) -> tfd.Distribution:
        """p(z): the given one, else `distribution_b` (called if it is a callable)."""
        if prior is not None:
            return prior
        return self.distribution_b() if callable(self.distribution_b) else self.distribution_b

    def kl(self, distribution_a, prior=None, seed=None, rows=None) -> tf.Tensor:
        """Per-example KL(q || p) [n], nats (see the class docstring).

        Raises:
          UserError: no closed form and no seed to draw the Monte Carlo sample from.
        """
        distribution_a = unwrap(getattr(distribution_a, "_tfp_distribution", distribution_a))
        prior = self.prior(prior)
        if self.use_exact_kl:
            return tfd.kl_divergence(distribution_a, prior)
        if seed is None:
            raise UserError("the KL toward this prior has no closed form: call the posterior layer with a seed "
                            "(layer(params, seed=[s1, s2])) so its Monte Carlo sample is reproducible")
        return kl_divergence(distribution_a, prior, sample_posterior(distribution_a, seed, rows))

    def __call__(self, distribution_a, prior=None, seed=None, rows=None):
        kl = self.kl(distribution_a, prior, seed, rows)  # [n]
        weighted = kl if self.weight is None else tf.cast(self.weight, kl.dtype) * kl
        return tf.reduce_sum(weighted, name="batch_total_kl_divergence")


class _ExplicitKL:
    """The layer applies its KL regularizer in `call`, once, to the distribution.

    `layer(params, seed=None, rows=None, prior=None)`: q(z|x) from `params`
    [n, params_size]; the layer's `losses` then hold
    `regularizer(q, prior, seed, rows) / n` (tf-keras's activity-regularizer
    convention: the batch total over the batch size), that is
    weight * mean_n KL. Keras's own activity regularization is turned off for
    these layers: it would see neither the seed nor the prior, and the stock
    `DistributionLambda` would count the KL twice (once for the distribution,
    once for its tensor value; tensorflow/probability#1215, #599).
    """

    def __call__(self, inputs, *args, **kwargs):
        # Keras sees (distribution, value), as `DistributionLambda.__call__` arranges,
        # without its per-instance flag, so concurrent calls from several threads are safe.
        distribution, _ = super(tfpl.DistributionLambda, self).__call__(inputs, *args, **kwargs)
        return distribution

    def call(self, inputs, seed=None, rows=None, prior=None):
        distribution, value = super(tfpl.DistributionLambda, self).call(inputs)
        if self.activity_regularizer is not None:
            total = self.activity_regularizer(distribution, prior=prior, seed=seed, rows=rows)
            self.add_loss(total / tf.cast(tf.shape(inputs)[0], total.dtype))
        return distribution, value

    def _handle_activity_regularization(self, inputs, outputs):
        """Applied in `call`, where the seed, rows and prior are known."""

    def distribution(self, inputs) -> tfd.Distribution:
        """q(z|x) from the layer's inputs [n, input_size], without the KL loss: batch [n], event [d]."""
        return self._make_distribution_fn(inputs)


class MultivariateNormalTriL(_ExplicitKL, tfpl.MultivariateNormalTriL):
    """`tfp.layers.MultivariateNormalTriL` whose KL regularizer counts once, from explicit inputs.

    Examples:
      >>> layer = MultivariateNormalTriL(2)  # d + d (d + 1) / 2 = 5 parameters
      >>> q = layer.distribution(tf.zeros([3, 5]))
      >>> print(type(q).__name__, q.batch_shape, q.event_shape, q.covariance().shape)
      MultivariateNormalTriL (3,) (2,) (3, 2, 2)
    """


class MultivariateNormalDiag(_ExplicitKL, tfpl.DistributionLambda):
    """A d-variate Normal with diagonal covariance from 2d parameters.

    Examples:
      >>> q = MultivariateNormalDiag(2).distribution(tf.zeros([3, 4]))  # [loc, raw scale]
      >>> print(MultivariateNormalDiag.params_size(2), q.batch_shape, q.event_shape)
      4 (3,) (2,)
      >>> print(np.round(q.stddev().numpy()[0], 4))  # softplus(0) + 1e-5
      [0.6932 0.6932]
    """

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
    """How many parameters the posterior's Gaussian takes (`new`; a flow's context comes on top).

    Examples:
      >>> posterior_params_size(3, "full"), posterior_params_size(3, "diag")  # 3 + 6, 3 + 3
      (9, 6)
    """
    return POSTERIORS[covariance].load().params_size(latent_dim)


def posterior_input_size(latent_dim: int, config) -> int:
    """How many encoder outputs the posterior layer of a `ModelConfig` takes: its
    `params_size`, plus a flow's context (`flows.IAFPosterior.input_size`).

    Examples:
      >>> from probvae.config import ModelConfig
      >>> posterior_input_size(2, ModelConfig(posterior="diag"))
      4
      >>> posterior_input_size(2, ModelConfig(posterior="iaf", iaf_units=8))  # 2 d + the context
      12
    """
    cls = POSTERIORS[config.posterior].load()
    size = getattr(cls, "input_size", None)
    return cls.params_size(latent_dim) if size is None else size(latent_dim, config)


def posterior_distribution(params, latent_dim: int, covariance: str = "full") -> tfd.Distribution:
    """q(z|x) from parameters [n, params_size] without the layer (no KL loss added).

    The same distribution the posterior layer returns, batch [n], event [d];
    used where a posterior must not regularize, e.g. the VampPrior's components.

    Examples:
      >>> q = posterior_distribution(tf.zeros([3, 5]), 2, "full")
      >>> print(type(q).__name__, q.batch_shape, q.event_shape)
      MultivariateNormalTriL (3,) (2,)
    """
    return POSTERIORS[covariance].load().new(params, latent_dim)


def posterior_layer(latent_dim, prior, covariance="full", kl_weight=None, use_exact_kl=True, config=None):
    """The q(z|x) layer with its KL regularizer toward `prior`.

    Call it as `layer(params, seed=None, rows=None, prior=None)` (`_ExplicitKL`):
    the seed (and rows) of the Monte Carlo KL when `use_exact_kl` is False,
    and p(z) if the caller has already built it.

    Args:
      latent_dim: d, the event size of q.
      prior: a `tfd.Distribution` with event shape [d], or a callable returning one.
      covariance: a registered posterior (`probvae.registry.POSTERIORS`):
        "full" (MultivariateNormalTriL) or "diag".
      kl_weight: scalar (or non-trainable `tf.Variable`) multiplying the KL
        loss; None means 1.
      use_exact_kl: analytic KL; pass False for priors without a closed form
        (the layer then needs a seed when called). A posterior whose class
        says it has none (`analytic_kl(config)`, a flow) never uses it.
      config: the `ModelConfig`, for a posterior with fields of its own
        (`for_config(config)`: the flow's steps and units); None: their defaults.

    Returns:
      A Keras layer mapping params [n, params_size] to a float32 distribution
      with batch shape [n] and event shape [d].

    Examples:
      >>> layer = posterior_layer(2, tfd.MultivariateNormalDiag(tf.zeros(2)), covariance="diag")
      >>> q = layer(tf.zeros([3, 4]))
      >>> print(q.batch_shape, q.event_shape, f"{float(layer.losses[0]):.3f}")  # mean KL, nats
      (3,) (2,) 0.213
    """
    cls = POSTERIORS[covariance].load()
    options = {}
    if hasattr(cls, "for_config"):
        options = cls.for_config(config) if config is not None else {}
        use_exact_kl = use_exact_kl and config is not None and cls.analytic_kl(config)
    regularizer = KLDivergenceRegularizer(prior, use_exact_kl=use_exact_kl, weight=kl_weight)
    return cls(
        latent_dim,
        convert_to_tensor_fn=tfd.Distribution.mean,
        activity_regularizer=regularizer,
        name="posterior",
        dtype="float32",  # q(z|x) stays float32 under a mixed-precision policy
        **options,
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
        (a multivariate Normal with `loc` [n, d] and `scale`, or a flow of one,
        `probvae.distributions.flows`: z = f(u), u the Normal's sample), batch [n], event [d].
      seed: a stateless seed (shape [2] int32 tensor); None draws unseeded noise.
      rows: (offset, total), ints or int32 scalars; None means (0, n).

    Examples:
      >>> q = posterior_distribution(tf.reshape(tf.range(12.), [3, 4]) / 10, 2, "diag")
      >>> z = sample_posterior(q, seed=(1, 2))
      >>> print(z.shape, bool(tf.reduce_all(z == q.sample(seed=(1, 2)))))
      (3, 2) True
      >>> tail = sample_posterior(q[1:], seed=(1, 2), rows=(1, 3))  # rows 1 and 2 of the batch of 3
      >>> bool(tf.reduce_all(tail == z[1:]))
      True
    """
    distribution = unwrap(posterior)
    if _is_flow(distribution):  # z = f(u), u the Gaussian's sample: f(u) carries the flow's cache of u
        return distribution.bijector.forward(sample_posterior(distribution.distribution, seed, rows))
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
