"""The VAE: a prior p(z), a posterior layer q(z|x) and a likelihood p(x|z).

    x --encoder--> features --dense--> params --posterior layer--> q(z|x)
    z ~ q(z|x) --decoder--> pixel params --likelihood head--> p(x|z)

The posterior layer carries a `KLDivergenceRegularizer` toward the prior, so
after `posterior(x)` the layer's losses hold kl_weight * mean KL; the training
loss is -mean log p(x|z) plus those losses. `elbo(x)` always reports the true
ELBO (KL weight 1).

Inputs: a `tf.Tensor` is taken as model-ready (float32 [n, h, w, c] in [0, 1],
binarized for a Bernoulli likelihood). A NumPy array may be in the dataset's
raw form (uint8 0..255 or float 0..1, with or without the channel axis): the
model checks its shape and range and prepares it as evaluation does, binarizing
it once with a fixed seed for a Bernoulli likelihood (`prepare_inputs`).

Example:

    vae = VAE(ModelConfig(latent_dim=2, image_shape=(28, 28, 1)))
    q = vae.posterior(x)            # batch [n], event [2]
    p_x = vae.likelihood(q.sample())  # batch [n], event [28, 28, 1]
    parts = vae.elbo(x)             # ElboParts of [n] tensors, nats
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from probvae import data as data_lib
from probvae import networks, objectives
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.distributions import (
    make_likelihood_head,
    make_prior,
    posterior_layer,
    posterior_params_size,
)
from probvae.errors import UserError

tfd = tfp.distributions

__all__ = ["VAE"]


class VAE(keras.Model):
    """A variational autoencoder built from a `ModelConfig`."""

    def __init__(self, config: ModelConfig, kl_weight: float = 1.0, **kwargs):
        super().__init__(name="vae", **kwargs)
        if config.image_shape is None:
            raise UserError("ModelConfig.image_shape is not set; it comes from the data")
        self.config = config
        self.image_shape = tuple(config.image_shape)
        d = config.latent_dim
        self._prior = make_prior(config.prior, d)
        # Weight of the KL loss the posterior layer adds (beta, warm-up).
        self.kl_weight = tf.Variable(float(kl_weight), trainable=False, dtype=tf.float32, name="kl_weight")
        self.encoder = networks.encoder(config)
        self.posterior_params = keras.layers.Dense(
            posterior_params_size(d, config.posterior), dtype="float32", name="posterior_params"
        )
        self.posterior_layer = posterior_layer(
            d, self._prior, covariance=config.posterior, kl_weight=self.kl_weight
        )
        self.likelihood_head = make_likelihood_head(
            config.likelihood, self.image_shape, normal_scale=config.normal_scale
        )
        self.decoder = networks.decoder(config, self.likelihood_head.decoder_channels)
        # Create every variable now, so checkpoints restore into a complete model.
        self(tf.zeros((1,) + self.image_shape))

    @property
    def prior(self) -> tfd.Distribution:
        """p(z): batch shape [], event shape [latent_dim]."""
        return self._prior

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def prepare_inputs(self, x, binarization_seed: int = 0) -> tf.Tensor:
        """Images as the model computes on them: float32 [n, h, w, c] in [0, 1].

        Tensors pass through (after a shape check). NumPy arrays (uint8 0..255
        or float 0..1, [n, h, w] or [n, h, w, c]) are scaled and, for a
        Bernoulli likelihood, binarized once from `binarization_seed`.

        Raises:
          UserError: the shape does not fit the model or values are out of range.
        """
        if tf.is_tensor(x):
            shape = tuple(x.shape[1:])
            if len(shape) != 3 or any(s is not None and s != e for s, e in zip(shape, self.image_shape)):
                raise UserError(f"inputs must be [n, {', '.join(map(str, self.image_shape))}] for this model, got {tuple(x.shape)}")
            return tf.cast(x, tf.float32)
        images = data_lib.to_unit_interval(x, "inputs")
        if images.shape[1:] != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise UserError(f"inputs must be [n, {expected}] for this model, got shape {np.shape(x)}")
        if self.likelihood_head.binarize:
            return tf.constant(data_lib.binarize_fixed(images, binarization_seed))
        return tf.constant(images)

    def posterior(self, x, training=False) -> tfd.Distribution:
        """q(z|x) for images x (see `prepare_inputs`): batch [n], event [d].

        Side effect: the posterior layer's `losses` hold kl_weight * mean KL.
        """
        features = self.encoder(self.prepare_inputs(x), training=training)
        return self.posterior_layer(self.posterior_params(features))

    def likelihood(self, z, training=False) -> tfd.Distribution:
        """p(x|z) for latents z [n, d]: batch [n], event [h, w, c]."""
        return self.likelihood_head.distribution(self.decoder(z, training=training))

    def elbo(self, x, seed=None, training=False) -> objectives.ElboParts:
        """One-sample ELBO per example, [n] each, in nats (KL weight 1)."""
        x = self.prepare_inputs(x)
        posterior = self.posterior(x, training=training)
        return objectives.elbo_parts(
            x, posterior, self.prior, lambda z: self.likelihood(z, training=training), seed=seed
        )

    def training_loss(self, x, seed=None):
        """(loss, ElboParts): loss = -mean log p(x|z) + kl_weight * mean KL (scalar, nats)."""
        parts = self.elbo(x, seed=seed, training=True)
        kl_loss = tf.add_n(self.posterior_layer.losses)
        loss = -tf.reduce_mean(parts.reconstruction) + kl_loss
        return loss, parts

    def call(self, x, training=False):
        """Mean of p(x|z) at the posterior mean: a deterministic reconstruction [n, h, w, c]."""
        posterior = self.posterior(x, training=training)
        return self.likelihood(posterior.mean(), training=training).mean()
