"""Priors p(z) over the latent space.

Every prior is a `tfd.Distribution` with batch shape [] and event shape [d].
Learned priors live in a Keras layer (`Prior`) that holds their variables, so
the VAE that owns the layer trains and checkpoints them; `layer.distribution()`
builds p(z) from the current values (call it again after an update).

    | name            | p(z)                                          | KL(q(z|x) || p(z)) |
    |-----------------|-----------------------------------------------|--------------------|
    | standard_normal | N(0, I), fixed                                | analytic           |
    | diag_gaussian   | N(m, diag(s^2)), m and s learned              | analytic           |
    | mixture         | sum_k pi_k N(m_k, diag(s_k^2)), all learned   | Monte Carlo        |
    | vamp            | (1/K) sum_k q(z | u_k), pseudo-inputs u learned | Monte Carlo        |

Scales are softplus(raw) + 1e-5. With a Normal posterior q = N(m_q, S):

    KL(q || N(m, D)) = 0.5 * (tr(D^-1 S) + (m - m_q)^T D^-1 (m - m_q) - d
                              + log det D - log det S)

For a mixture there is no closed form, and the KL is estimated at a sample
z ~ q(z|x): KL ~ log q(z|x) - log p(z), unbiased.

The VampPrior (Tomczak & Welling, 2018) is the aggregate posterior of K
learned pseudo-inputs u_k = sigmoid(raw_k), images of the data's shape:

    p(z) = (1/K) sum_k q(z | u_k)

so it needs the encoder: the VAE passes `encode`, a function from images
[K, h, w, c] to the posterior q(z|u) with batch shape [K].

Examples:

    >>> prior = standard_normal(2)
    >>> print(f"{float(prior.log_prob([0., 0.])):.4f}")  # -log(2 pi) nats
    -1.8379

References:
  Tomczak & Welling (2018), VAE with a VampPrior. AISTATS.
"""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.distributions.mixtures import gaussian_mixture
from probvae.errors import UserError
from probvae.registry import PRIORS

tfd = tfp.distributions

__all__ = [
    "PRIOR_SCALE_FLOOR",
    "Prior",
    "StandardNormalPrior",
    "DiagonalGaussianPrior",
    "MixturePrior",
    "VampPrior",
    "standard_normal",
    "make_prior",
    "prior_layer",
]

# Smallest standard deviation of a learned prior component.
PRIOR_SCALE_FLOOR = 1e-5
# softplus^-1(1 - floor): raw value of an initial scale of 1.
_RAW_UNIT_SCALE = float(np.log(np.expm1(1.0 - PRIOR_SCALE_FLOOR)))


def standard_normal(latent_dim: int) -> tfd.Distribution:
    """N(0, I_d) as a `MultivariateNormalDiag`: batch shape [], event shape [d].

    Examples:
      >>> prior = standard_normal(3)
      >>> print(prior.batch_shape, prior.event_shape, prior.dtype.name)
      () (3,) float32
    """
    return tfd.MultivariateNormalDiag(
        loc=tf.zeros([latent_dim], tf.float32),
        scale_diag=tf.ones([latent_dim], tf.float32),
        name="standard_normal_prior",
    )


def _scale(raw):
    return tf.math.softplus(raw) + PRIOR_SCALE_FLOOR


class Prior(keras.layers.Layer):
    """A layer holding a prior's variables; `distribution()` returns p(z).

    Attributes:
      latent_dim: d.
      analytic_kl: whether KL(Normal q || p) has a closed form; if not, the
        posterior layer's regularizer estimates it by Monte Carlo.

    Examples:
      >>> layer = prior_layer("diag_gaussian", 2)  # a Prior subclass
      >>> isinstance(layer, Prior), layer.analytic_kl, len(layer.trainable_weights)
      (True, True, 2)
    """

    analytic_kl = True

    def __init__(self, latent_dim: int, **kwargs):
        kwargs.setdefault("name", "prior")
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim = int(latent_dim)

    @classmethod
    def for_model(cls, config, encode: Optional[Callable] = None) -> "Prior":
        """The prior a `ModelConfig` asks for; `encode` is the model's
        images -> q(z|x) without KL loss (the VampPrior's components)."""
        return cls(config.latent_dim)

    def distribution(self) -> tfd.Distribution:
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I): no variables.

    Examples:
      >>> layer = StandardNormalPrior(2)
      >>> print(layer.distribution().event_shape, layer.weights)
      (2,) []
    """

    def distribution(self):
        return standard_normal(self.latent_dim)


class DiagonalGaussianPrior(Prior):
    """p(z) = N(loc, diag(scale^2)), loc and scale learned, starting at N(0, I).

    Examples:
      >>> prior = DiagonalGaussianPrior(3).distribution()
      >>> print(prior.event_shape, np.round(prior.stddev().numpy(), 3))
      (3,) [1. 1. 1.]
    """

    def __init__(self, latent_dim, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.loc = self.add_weight(name="loc", shape=[self.latent_dim], initializer="zeros")
        self.raw_scale = self.add_weight(
            name="raw_scale", shape=[self.latent_dim],
            initializer=keras.initializers.Constant(_RAW_UNIT_SCALE),
        )

    def distribution(self):
        return tfd.MultivariateNormalDiag(loc=self.loc, scale_diag=_scale(self.raw_scale),
                                          name="diag_gaussian_prior")


class MixturePrior(Prior):
    """p(z) = sum_k softmax(logits)_k N(loc_k, diag(scale_k^2)), all learned.

    Components start with equal weights, unit scales and locations drawn from
    N(0, I) (so they differ); tfd.MixtureSameFamily sums them in log space.

    Examples:
      >>> prior = MixturePrior(2, components=4).distribution()
      >>> print(prior.event_shape, np.round(prior.mixture_distribution.probs_parameter().numpy(), 2))
      (2,) [0.25 0.25 0.25 0.25]
    """

    analytic_kl = False

    def __init__(self, latent_dim, components=10, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.components = int(components)
        self.logits = self.add_weight(name="logits", shape=[self.components], initializer="zeros")
        self.locs = self.add_weight(
            name="locs", shape=[self.components, self.latent_dim],
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )
        self.raw_scales = self.add_weight(
            name="raw_scales", shape=[self.components, self.latent_dim],
            initializer=keras.initializers.Constant(_RAW_UNIT_SCALE),
        )

    @classmethod
    def for_model(cls, config, encode=None):
        return cls(config.latent_dim, components=config.prior_components)

    def distribution(self):
        components = tfd.MultivariateNormalDiag(loc=self.locs, scale_diag=_scale(self.raw_scales))
        return gaussian_mixture(self.logits, components, name="mixture_prior")


class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k), the posteriors of K learned pseudo-inputs.

    Args:
      latent_dim: d.
      image_shape: [h, w, c] of the pseudo-inputs (the data's shape).
      encode: function images [K, h, w, c] -> q(z|u), batch [K], event [d].
        It must not add regularization losses (the VAE passes the encoder and
        `posterior_layer.new`, not the layer call).
      components: K.

    Examples:
      >>> def encode(images):  # images [K, 4, 4, 1] -> q(z|u): batch [K], event [2]
      ...     loc = tf.reshape(images, [-1, 16])[:, :2]
      ...     return tfd.MultivariateNormalDiag(loc, tf.ones_like(loc))
      >>> layer = VampPrior(2, (4, 4, 1), encode, components=3)
      >>> print(layer.pseudo_inputs.shape, layer.distribution().event_shape)
      (3, 4, 4, 1) (2,)
    """

    analytic_kl = False

    def __init__(self, latent_dim, image_shape, encode: Callable, components=10, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.components = int(components)
        self.encode = encode
        # sigmoid(raw) near 0.5 with small differences between pseudo-inputs.
        self.raw_pseudo_inputs = self.add_weight(
            name="raw_pseudo_inputs", shape=[self.components] + [int(s) for s in image_shape],
            initializer=keras.initializers.RandomNormal(stddev=0.1),
        )

    @classmethod
    def for_model(cls, config, encode=None):
        if config.image_shape is None or encode is None:
            raise UserError("the vamp prior needs the image shape and the encoder; build it through VAE")
        return cls(config.latent_dim, config.image_shape, encode, components=config.prior_components)

    @property
    def pseudo_inputs(self):
        """u = sigmoid(raw): images [K, h, w, c] in (0, 1)."""
        return tf.math.sigmoid(self.raw_pseudo_inputs)

    def distribution(self):
        components = self.encode(self.pseudo_inputs)  # batch [K], event [d]
        return gaussian_mixture(tf.zeros([self.components], tf.float32), components, name="vamp_prior")


def prior_layer(name: str, latent_dim: int, components: int = 10, image_shape=None,
                encode: Optional[Callable] = None) -> Prior:
    """The `Prior` layer registered as `name` (`probvae.registry.PRIORS`);
    `vamp` also needs `image_shape` and `encode`.

    Raises:
      UserError: for an unknown name, listing the known ones.

    Examples:
      >>> layer = prior_layer("mixture", 2, components=4)
      >>> type(layer).__name__, layer.components, layer.analytic_kl
      ('MixturePrior', 4, False)
    """
    config = ModelConfig(latent_dim=latent_dim, prior=name, prior_components=components, image_shape=image_shape)
    return PRIORS[name].load().for_model(config, encode=encode)


def make_prior(name: str, latent_dim: int) -> tfd.Distribution:
    """The prior registered as `name` as a distribution, if it has no variables
    (learned priors need `prior_layer` inside a model).

    Raises:
      UserError: for an unknown name, listing the known ones, or a learned prior.

    Examples:
      >>> print(make_prior("standard_normal", 3).event_shape)
      (3,)
      >>> make_prior("mixture", 3)
      Traceback (most recent call last):
      ...
      probvae.errors.UserError: the mixture prior is learned; build it with prior_layer() inside a model ...
    """
    layer = prior_layer(name, latent_dim)
    if layer.weights:
        raise UserError(
            f"the {name} prior is learned; build it with prior_layer() inside a model so its variables train"
        )
    return layer.distribution()
