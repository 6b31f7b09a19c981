"""Three components of one's own, registered from outside the package:
a factorised Laplace prior, a Beta likelihood and a residual convolutional
encoder. docs/extending.md walks through this file; tests/test_extending.py
trains and evaluates a model with each.

Import this module (or put the same code in yours) before building or loading
a model that names these components:

    import custom_components  # registers "laplace", "beta" and "resnet"
    config = probvae.RunConfig().replace(model={"prior": "laplace", "laplace_scale": 0.5})
"""

import tensorflow as tf
import tensorflow_probability as tfp

from probvae import checks
from probvae.distributions import LikelihoodHead, Prior
from probvae.networks import Family
from probvae.networks.dense import MLP
from probvae.registry import LIKELIHOODS, NETWORKS, PRIORS, Field, int_list

import tf_keras as keras

tfd = tfp.distributions


# --- a prior: p(z) = prod_i Laplace(z_i; 0, b) ------------------------------------------------------

class LaplacePrior(Prior):
    """A fixed factorised Laplace prior: batch [], event [d]. TFP has no
    KL(Normal || Laplace), so the KL is the one-sample estimate at the ELBO's z."""

    analytic_kl = False

    def __init__(self, latent_dim, scale=1.0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.scale = float(scale)

    @classmethod
    def for_model(cls, config, encode=None):
        return cls(config.latent_dim, scale=config.laplace_scale)

    def distribution(self):
        return tfd.Independent(tfd.Laplace(loc=tf.zeros([self.latent_dim]), scale=self.scale),
                               reinterpreted_batch_ndims=1, name="laplace_prior")


def _positive(name, value):
    checks.finite_number(name, value)
    checks.require(value > 0, f"{name} must be positive (got {value!r})")


PRIORS.register("laplace", LaplacePrior, summary="factorised Laplace(0, b), fixed",
                fields=[Field("laplace_scale", 1.0, _positive, "b of every latent dimension", float)])


# --- a likelihood: p(x|z) = prod_pixels Beta(x; a, b) -----------------------------------------------

class BetaHead(LikelihoodHead):
    """Grey levels strictly inside (0, 1) (a Beta density is 0 or infinite at
    the ends): the decoder gives 2 parameters per channel, a = softplus + 1e-3,
    b likewise."""

    binarize = False

    @property
    def decoder_channels(self):
        return 2 * self.image_shape[-1]

    def distribution(self, params):
        concentration1, concentration0 = tf.split(tf.math.softplus(params) + 1e-3, 2, axis=-1)
        return tfd.Independent(tfd.Beta(concentration1, concentration0), reinterpreted_batch_ndims=3,
                               name="beta_likelihood")


LIKELIHOODS.register("beta", BetaHead, summary="grey levels in (0, 1), Beta", binarize=False)


# --- an encoder: strided convolutions with residual blocks ------------------------------------------

class ResidualBlock(keras.layers.Layer):
    """x + conv(relu(conv(relu(x)))), 3x3 convolutions keeping the channels."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Conv2D(filters, 3, padding="same")
        self.second = keras.layers.Conv2D(filters, 3, padding="same")

    def call(self, x):
        return x + self.second(tf.nn.relu(self.first(tf.nn.relu(x))))


def resnet_encoder(config):
    """Images [n, h, w, c] -> features [n, f]: per entry of `resnet_filters`
    a stride-2 convolution and a residual block, then flatten."""
    body = [keras.layers.InputLayer(input_shape=tuple(config.image_shape))]
    for filters in config.resnet_filters:
        body += [keras.layers.Conv2D(filters, 3, strides=2, padding="same"), ResidualBlock(filters)]
    body += [keras.layers.ReLU(), keras.layers.Flatten()]
    return keras.Sequential(body, name="encoder")


def _filters(name, value):
    checks.positive_ints(name, value)
    checks.require(len(value) >= 1, f"{name} needs one entry or more")


# The decoder is the dense one ("mlp"'s); pass decoder_arch to choose another.
NETWORKS.register("resnet", Family(resnet_encoder, MLP.decoder), summary="strided convolutions with residual blocks",
                  fields=[Field("resnet_filters", (8, 16), _filters, "filters of each stage, e.g. 8,16", int_list)])
