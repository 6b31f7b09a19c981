"""A hierarchy of latent levels z_1, ..., z_L (the VampPrior paper's HVAE for L = 2).

    generative:  p(z_L) p(z_(L-1) | z_L) ... p(z_1 | z_2) p(x | z_1, ..., z_L)
    inference:   q(z_L | x) q(z_(L-1) | x, z_L) ... q(z_1 | x, z_2)

p(z_L) is any registered prior (the VampPrior's components are q(z_L | u_k));
q(z_L | x) is the model's posterior layer, with its `KLDivergenceRegularizer`
toward p(z_L). Each lower level l < L is a `Level` layer holding

    q(z_l | x, z_(l+1)) = N(params([f(x), h(z_(l+1))]))   (the model's posterior covariance)
    p(z_l | z_(l+1))    = N(loc, diag(scale^2)),  [loc, scale] from h(h(z_(l+1)))

with f(x) the encoder's features and h the network family's hidden layer
(`probvae.networks.hidden_layer`, gated for "gated"), `level_units` wide. A
family with its own network of x for the lower levels
(`probvae.networks.level_encoder`, the convHVAE's "gatedconv") gives f(x)
from that network, f_l wide, and maps z_(l+1) to the same width f_l (the
first h above); the model computes it once per batch and passes it as the
features.

The model's latent is the flat vector z = [z_1, ..., z_L] of D = sum_l d_l
numbers (bottom level first): p(x | z) decodes all levels together, and
`chain` states q(z|x) and p(z) as one `tfd.Distribution` over z: a
`tfd.JointDistributionSequential` over [z_L, ..., z_1] (each conditional a
distribution of the level above's sample) seen through a bijector that puts
the levels in order and concatenates them. So `log_prob` and `sample` work on
z as they do for a one-level posterior or prior, and the importance-weighted
bound needs nothing new:

    log w = log p(x | z) + log p(z) - log q(z | x)
    log p(z)     = log p(z_L) + sum_(l<L) log p(z_l | z_(l+1))
    log q(z | x) = log q(z_L | x) + sum_(l<L) log q(z_l | x, z_(l+1))

The one-sample ELBO draws z_L ~ q(z_L | x), then each z_l ~ q(z_l | x, z_(l+1)):

    ELBO = log p(x | z) - KL(q(z_L|x) || p(z_L))
           - sum_(l<L) KL(q(z_l | x, z_(l+1)) || p(z_l | z_(l+1)))

with the lower KLs analytic given the sampled z_(l+1) and the top KL
analytic, or log q - log p at z_L. A one-level model is this with L = 1. It is an unbiased estimate
of E_q[log p(x|z) + log p(z) - log q(z|x)], the ELBO of the joint.

Shapes: with features [n, f] and z_(l+1) [..., n, d_(l+1)] (leading sample
axes allowed), a level's distributions have batch [..., n] and event [d_l].

References:
  Tomczak & Welling (2018), VAE with a VampPrior, section 3.3 (HVAE). AISTATS.
  Sonderby et al. (2016), Ladder Variational Autoencoders.
"""

from typing import Callable, NamedTuple, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from probvae import networks
from probvae._keras import keras
from probvae.distributions.posteriors import MultivariateNormalDiag
from probvae.registry import POSTERIORS

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["Level", "LevelTerms", "chain"]


class LevelTerms(NamedTuple):
    """One level of a sampled hierarchy, for the ELBO and inspection."""

    posterior: tfd.Distribution  # q(z_l | x, z_(l+1)) (top: q(z_L | x)): batch [n], event [d_l]
    prior: tfd.Distribution  # p(z_l | z_(l+1)) batch [n] (top: p(z_L), batch [])
    z: tf.Tensor  # [n, d_l], the sample
    kl: tf.Tensor  # [n], KL(posterior || prior) in nats: analytic, else at z


def chain(top: tfd.Distribution, conditionals: Sequence[Callable], latent_dims: Sequence[int],
          name: str) -> tfd.Distribution:
    """One distribution over z = [z_1, ..., z_L] from the top and the conditionals.

    Args:
      top: the distribution of z_L, event [d_L].
      conditionals: for l = 1 .. L-1 (bottom first), a function z_(l+1) -> the
        distribution of z_l, event [d_l].
      latent_dims: [d_1, ..., d_L].
      name: the distribution's name.

    Returns:
      A `tfd.Distribution` with event [sum_l d_l]: sample draws the levels from
      the top down; log_prob sums the levels' log densities. For one level
      (no conditionals) that is `top` itself.
    """
    levels = len(latent_dims)
    if levels == 1:
        return top
    # JointDistributionSequential hands each callable the samples so far, latest
    # (z_(l+1)) first; *above keeps it from tying argument names to distribution names.
    parts = [top] + [(lambda *above, conditional=conditional: conditional(above[0]))
                     for conditional in reversed(list(conditionals))]
    joint = tfd.JointDistributionSequential(parts, name=f"{name}_levels")  # [z_L, ..., z_1]
    bijector = tfb.Chain([tfb.Invert(tfb.Split(list(latent_dims))),  # [z_1, ..., z_L] -> z
                          tfb.Restructure(list(reversed(range(levels))))])  # [z_L, ..., z_1] -> [z_1, ..., z_L]
    return tfd.TransformedDistribution(joint, bijector, name=name)


class Level(keras.layers.Layer):
    """Lower level l of the hierarchy: q(z_l | x, z_(l+1)) and p(z_l | z_(l+1)).

    Args:
      config: the `ModelConfig` (family, posterior covariance, level_units).
      latent_dim: d_l.
      index: l, for the layer's name.
    """

    def __init__(self, config, latent_dim: int, index: int, **kwargs):
        super().__init__(name=f"level_{index}", **kwargs)
        self.latent_dim = int(latent_dim)
        self._posterior = POSTERIORS[config.posterior].load()  # resolved once, outside compiled code
        units = config.level_units
        # z_(l+1)'s branch is as wide as the lower levels' own features of x, if the family has them.
        self.posterior_above = networks.hidden_layer(config, networks.level_features(config) or units)
        self.posterior_joint = networks.hidden_layer(config, units)
        self.posterior_params = keras.layers.Dense(
            self._posterior.params_size(self.latent_dim), dtype="float32", name="posterior_params")
        self.prior_body = [networks.hidden_layer(config, units), networks.hidden_layer(config, units)]
        self.prior_params = keras.layers.Dense(
            MultivariateNormalDiag.params_size(self.latent_dim), dtype="float32", name="prior_params")

    def posterior(self, features, z_above) -> tfd.Distribution:
        """q(z_l | x, z_(l+1)) from features of x [n, f] (the encoder's, or the level
        encoder's, `VAE.level_encoder`) and z_(l+1) [..., n, d]
        (or any shape that broadcasts against [n], e.g. [m, 1, d]): batch [..., n]."""
        above = self.posterior_above(z_above)  # [..., n or 1, units]
        features = tf.cast(features, above.dtype)
        batch = tf.broadcast_dynamic_shape(tf.shape(above)[:-1], tf.shape(features)[:-1])  # [..., n]
        above = tf.broadcast_to(above, tf.concat([batch, tf.shape(above)[-1:]], 0))
        features = tf.broadcast_to(features, tf.concat([batch, tf.shape(features)[-1:]], 0))
        params = self.posterior_params(self.posterior_joint(tf.concat([features, above], axis=-1)))
        return self._posterior.new(params, self.latent_dim)

    def prior(self, z_above) -> tfd.Distribution:
        """p(z_l | z_(l+1)) = N(loc, diag(scale^2)) for z_(l+1) [..., d]: batch [...]."""
        single = z_above.shape.rank == 1  # one z_(l+1) [d], e.g. from p(z_L).sample()
        hidden = z_above[tf.newaxis] if single else z_above
        for layer in self.prior_body:
            hidden = layer(hidden)
        params = self.prior_params(hidden)
        return MultivariateNormalDiag.new(params[0] if single else params, self.latent_dim)

    def call(self, features, z_above):
        """Build the weights: the mean of q(z_l | x, z_(l+1)) and of p(z_l | z_(l+1))."""
        return self.posterior(features, z_above).mean(), self.prior(z_above).mean()
