"""Dense encoder and decoder bodies: "mlp" (dense layers with an activation)
and "gated" (gated dense layers, Dauphin et al. 2017, the networks of the
VampPrior paper, Tomczak & Welling 2018):

    mlp:    flatten -> [Dense(u, activation)] for u in hidden_units
    gated:  flatten -> [GatedDense(u)] for u in hidden_units,
            GatedDense(u)(x) = (x W + b) * sigmoid(x V + c)

The decoder mirrors the hidden layers and ends in a float32 Dense layer of
h * w * channels parameters reshaped to [h, w, channels].

Example:

    config = ModelConfig(arch="gated", hidden_units=(300, 300), latent_dim=40, image_shape=(28, 28, 1))
    GATED.encoder(config)(x)      # [n, 300]
    GATED.decoder(config, 1)(z)   # [n, 28, 28, 1]
"""

import math

import tensorflow as tf

from probvae._keras import keras
from probvae.networks.family import Family, check_image_shape

layers = keras.layers

__all__ = ["GatedDense", "MLP", "GATED"]


class GatedDense(layers.Layer):
    """h = (x W + b) * sigmoid(x V + c): a dense layer gated by a second one.

    Both halves share one kernel [in, 2 * units] (one matmul); the first
    `units` columns are W, the last `units` are V.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense = layers.Dense(2 * self.units, name="linear_and_gate")

    # Keras traces `call` once to infer the output shape when a Sequential is
    # built; nothing here needs autograph's conversion (see docs/performance.md).
    # (`training` is unused; Keras passes it to a wrapped call.)
    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        linear, gate = tf.split(self.dense(inputs), 2, axis=-1)  # [n, units] each
        return linear * tf.sigmoid(gate)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _dense_family(hidden_layer, width: int = 1):
    """A `Family` whose hidden layers are `hidden_layer(config, units)`
    (`width` weight matrices per layer, for the size estimate)."""

    def encoder(config) -> keras.Sequential:
        image_shape = tuple(config.image_shape)
        check_image_shape(image_shape)
        body = [layers.InputLayer(input_shape=image_shape), layers.Flatten()]
        body += [hidden_layer(config, units) for units in config.hidden_units]
        return keras.Sequential(body, name="encoder")

    def decoder(config, output_channels: int) -> keras.Sequential:
        height, width, _ = tuple(config.image_shape)
        check_image_shape(config.image_shape)
        body = [layers.InputLayer(input_shape=(config.latent_dim,))]
        body += [hidden_layer(config, units) for units in reversed(config.hidden_units)]
        body += [
            layers.Dense(height * width * output_channels, dtype="float32"),
            layers.Reshape((height, width, output_channels), dtype="float32"),
        ]
        return keras.Sequential(body, name="decoder")

    def size(config):
        pixels, hidden = math.prod(config.image_shape), tuple(config.hidden_units)
        weights = width * pixels * (hidden[0] if hidden else config.latent_dim) * 2  # first and last layer
        return weights, width * 2 * sum(hidden) + 4 * pixels

    def features(config) -> int:
        return config.hidden_units[-1] if config.hidden_units else math.prod(config.image_shape)

    return Family(encoder, decoder, hidden_layer, size, features)


MLP = _dense_family(lambda config, units: layers.Dense(units, activation=config.activation))
GATED = _dense_family(lambda config, units: GatedDense(units), width=2)  # two matrices per layer
