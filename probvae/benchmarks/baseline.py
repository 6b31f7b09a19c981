"""The baseline probvae is measured against: the standard TFP-layers VAE as
the tutorials write it, trained with `model.compile` and `model.fit`.

    encoder layers -> Dense(params_size) -> tfpl.MultivariateNormalTriL
                      (activity_regularizer=tfpl.KLDivergenceRegularizer(prior))
    decoder layers -> tfpl.IndependentBernoulli
    model.compile(optimizer=Adam, loss=lambda x, p: -p.log_prob(x)); model.fit(...)

Its encoder and decoder are the network bodies of a probvae `ModelConfig`
(`probvae.networks`: plain tf-keras Sequential models), so both do the same
work (a test checks that the weight counts match).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from probvae import networks
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.training import precision

tfd = tfp.distributions
tfpl = tfp.layers

__all__ = ["keras_recipe"]


def keras_recipe(config: ModelConfig, learning_rate: float, compute: str = "float32",
                 kl_weight: float = 1.0) -> keras.Model:
    """The plain TFP-layers VAE as the tutorials write it, compiled for `fit`,
    with the encoder and decoder bodies of `config`.

    The networks compute in `compute` (`probvae.training.precision.PRECISIONS`);
    below float32 the distribution layers compute in float32, as the tf-keras
    guide advises, and for float16 `compile` adds loss scaling itself.
    Note: stock `tfpl.MultivariateNormalTriL` adds its KL regularizer twice
    (tensorflow/probability#1215); that changes the loss, not the work.
    `kl_weight` = 1/2 makes the loss the negative ELBO.
    """
    d, (height, width, channels) = config.latent_dim, tuple(config.image_shape)
    layers = keras.layers
    dtype = None if compute == "float32" else "float32"
    with precision.compute_policy(compute):
        prior = tfd.Independent(tfd.Normal(loc=tf.zeros(d), scale=1.0), reinterpreted_batch_ndims=1)
        model = keras.Sequential([
            layers.InputLayer(input_shape=(height, width, channels)),
            networks.encoder(config),
            layers.Dense(tfpl.MultivariateNormalTriL.params_size(d), dtype=dtype),
            tfpl.MultivariateNormalTriL(d, activity_regularizer=tfpl.KLDivergenceRegularizer(prior, weight=kl_weight),
                                        dtype=dtype),
            networks.decoder(config, channels),
            layers.Flatten(dtype=dtype),
            tfpl.IndependentBernoulli((height, width, channels), tfd.Bernoulli.logits, dtype=dtype),
        ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=lambda x, p: -p.log_prob(x))
    return model
