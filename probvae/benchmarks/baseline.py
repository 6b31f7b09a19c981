"""The baseline probvae is measured against: the standard TFP-layers VAE as
the tutorials write it, trained with `model.compile` and `model.fit`.

    encoder layers -> Dense(params_size) -> tfpl.MultivariateNormalTriL
                      (activity_regularizer=tfpl.KLDivergenceRegularizer(prior))
    decoder layers -> tfpl.IndependentBernoulli
    model.compile(optimizer=Adam, loss=lambda x, p: -p.log_prob(x)); model.fit(...)

Its encoder and decoder are the layers of a probvae `ModelConfig` ("mlp" or
"conv"), written with standard tf-keras layers, so both do the same work
(a test checks that the weight counts match).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from probvae.training import precision
from probvae._keras import keras
from probvae.config import ModelConfig

tfd = tfp.distributions
tfpl = tfp.layers

__all__ = ["keras_recipe"]


def keras_recipe(config: ModelConfig, learning_rate: float, mixed_precision: bool = False) -> keras.Model:
    """The plain TFP-layers VAE as the tutorials write it, compiled for `fit`,
    with the encoder and decoder of `config` in standard tf-keras layers.

    Under mixed precision the distribution layers compute in float32, as the
    tf-keras guide advises, and `compile` adds loss scaling itself.
    Note: stock `tfpl.MultivariateNormalTriL` adds its KL regularizer twice
    (tensorflow/probability#1215); that changes the loss, not the work.
    """
    d, (height, width, channels) = config.latent_dim, tuple(config.image_shape)
    layers, act = keras.layers, config.activation
    dtype = "float32" if mixed_precision else None
    with precision.mixed_precision_policy(mixed_precision):
        prior = tfd.Independent(tfd.Normal(loc=tf.zeros(d), scale=1.0), reinterpreted_batch_ndims=1)
        if config.arch == "mlp":
            encoder = [layers.Flatten()] + [layers.Dense(u, activation=act) for u in config.hidden_units]
            decoder = [layers.Dense(u, activation=act) for u in reversed(config.hidden_units)]
            decoder.append(layers.Dense(height * width * channels, dtype=dtype))
        else:
            factor, top = 2 ** len(config.conv_filters), config.conv_filters[-1]
            encoder = [layers.Conv2D(f, 3, strides=2, padding="same", activation=act) for f in config.conv_filters]
            encoder += [layers.Flatten(), layers.Dense(config.dense_units, activation=act)]
            decoder = [layers.Dense(config.dense_units, activation=act),
                       layers.Dense((height // factor) * (width // factor) * top, activation=act),
                       layers.Reshape((height // factor, width // factor, top))]
            decoder += [layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation=act)
                        for f in reversed(config.conv_filters)]
            decoder += [layers.Conv2D(channels, 3, padding="same", dtype=dtype), layers.Flatten(dtype=dtype)]
        model = keras.Sequential(
            [layers.InputLayer(input_shape=(height, width, channels))] + encoder + [
                layers.Dense(tfpl.MultivariateNormalTriL.params_size(d), dtype=dtype),
                tfpl.MultivariateNormalTriL(d, activity_regularizer=tfpl.KLDivergenceRegularizer(prior, weight=1.0),
                                            dtype=dtype),
            ] + decoder + [tfpl.IndependentBernoulli((height, width, channels), tfd.Bernoulli.logits, dtype=dtype)]
        )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=lambda x, p: -p.log_prob(x))
    return model
