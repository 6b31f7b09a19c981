"""Gated convolutional networks ("gatedconv"): the convHVAE of the VampPrior
paper (Tomczak & Welling 2018, models/convHVAE_2level.py of its code).

A gated convolution is a convolution gated by a second one (Dauphin et al. 2017):

    GatedConv2D(f, k, s)(x) = (W * x + b) * sigmoid(V * x + c)

with W, V of shape [k, k, c_in, f], stride s and k // 2 zeros padded on every
side (PyTorch's padding: output size floor((h + 2 (k // 2) - k) / s) + 1, a
stride-2 window centred on pixels 0, 2, 4, ...; Keras's "same" would centre
it on 1, 3, 5, ...). The networks, for images [h, w, c] (28x28x1 in the paper):

    encoder (q(z_L | x)):  [GatedConv2D(f, k, s)] per `gated_conv_layers`, default
                           (32, 7, 1) (32, 3, 2) (64, 5, 1) (64, 3, 2) (6, 3, 1)
                           -> Flatten: 28x28x1 -> 7x7x6 -> [n, 294]
    level encoder (the lower levels' own features of x, q(z_l | x, z_(l+1))):
                           the same with `level_conv_layers`, default
                           (32, 3, 1) (32, 3, 2) (64, 3, 1) (64, 3, 2) (6, 3, 1) -> [n, 294]
    decoder (p(x | z_1, ..., z_L)):
                           z = [z_1, ..., z_L] -> GatedDense(u)(z_l) per level, concatenated [n, L u]
                           -> GatedDense(h w c) -> Reshape [h, w, c]
                           -> [GatedConv2D(f, 3, 1)] per `gated_decoder_filters`, default 64, 64, 64, 64
                           -> Conv2D(k_out, 1) (float32): the likelihood's parameters [n, h, w, k_out]
    hidden layer:          GatedDense (the lower levels' dense layers, `probvae.hierarchy`)

with u = `gated_decoder_units` (300). The paper's last layer is a 1x1
convolution with a sigmoid (Bernoulli means); here it gives logits.

Example:

    config = ModelConfig(arch="gatedconv", latent_dim=(40, 40), latent_layers=2, image_shape=(28, 28, 1))
    GATED_CONV.encoder(config)(x)            # [n, 294]
    GATED_CONV.level_encoder(config)(x)      # [n, 294]
    GATED_CONV.decoder(config, 1)(z)         # z [n, 80] -> [n, 28, 28, 1]
"""

import math

import tensorflow as tf

from probvae._keras import keras
from probvae.networks.dense import GatedDense
from probvae.networks.family import Family, check_image_shape

layers = keras.layers

__all__ = ["GatedConv2D", "LevelsGatedDense", "GATED_CONV", "output_size"]


class GatedConv2D(layers.Layer):
    """h = (W * x + b) * sigmoid(V * x + c), k // 2 zeros padded on every side.

    Both halves share one convolution of 2 * filters outputs (one pass over
    the image); its first `filters` output channels are W, the last V.

    Args:
      filters: f, the output channels.
      kernel_size: k (square kernels).
      strides: s.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.conv = layers.Conv2D(2 * self.filters, self.kernel_size, strides=self.strides, padding="valid",
                                  name="linear_and_gate")

    # Traced once by Keras to infer the output shape; nothing needs autograph (as GatedDense).
    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        pad = self.kernel_size // 2
        padded = tf.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # [n, h + 2p, w + 2p, c]
        linear, gate = tf.split(self.conv(padded), 2, axis=-1)  # [n, h', w', f] each
        return linear * tf.sigmoid(gate)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides}


class LevelsGatedDense(layers.Layer):
    """[z_1, ..., z_L] [n, D] -> [GatedDense(units)(z_l) for each level] concatenated [n, L * units].

    Args:
      units: the width of each level's gated layer.
      latent_dims: [d_1, ..., d_L], the sizes the input is split into (D = sum d_l).
    """

    def __init__(self, units: int, latent_dims, **kwargs):
        super().__init__(**kwargs)
        self.units, self.latent_dims = int(units), tuple(int(d) for d in latent_dims)
        self.levels = [GatedDense(self.units, name=f"level_{index + 1}") for index in range(len(self.latent_dims))]

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        parts = tf.split(inputs, list(self.latent_dims), axis=-1)  # [n, d_l] each, bottom level first
        return tf.concat([layer(part) for layer, part in zip(self.levels, parts)], axis=-1)  # [n, L * units]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "latent_dims": self.latent_dims}


def output_size(size: int, kernel: int, stride: int) -> int:
    """A gated convolution's output height (or width): floor((size + 2 (k // 2) - k) / s) + 1."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _conv_stack(config, conv_layers, name: str) -> keras.Sequential:
    image_shape = tuple(config.image_shape)
    check_image_shape(image_shape)
    body = [layers.InputLayer(input_shape=image_shape)]
    body += [GatedConv2D(filters, kernel, stride) for filters, kernel, stride in conv_layers]
    body.append(layers.Flatten())
    return keras.Sequential(body, name=name)


def encoder(config) -> keras.Sequential:
    """Images [n, h, w, c] -> features [n, f] of q(z_L | x)."""
    return _conv_stack(config, config.gated_conv_layers, "encoder")


def level_encoder(config) -> keras.Sequential:
    """Images [n, h, w, c] -> features [n, f_l], the lower levels' own network of x."""
    return _conv_stack(config, config.level_conv_layers, "level_encoder")


def decoder(config, output_channels: int) -> keras.Sequential:
    """Latents [n, D] (every level, bottom first) -> likelihood parameters [n, h, w, output_channels]."""
    check_image_shape(config.image_shape)
    height, width, channels = tuple(config.image_shape)
    dims = tuple(config.latent_dims)
    body = [layers.InputLayer(input_shape=(sum(dims),)),
            LevelsGatedDense(config.gated_decoder_units, dims),
            GatedDense(height * width * channels),
            layers.Reshape((height, width, channels))]
    body += [GatedConv2D(filters, kernel, stride) for filters, kernel, stride in _decoder_layers(config)]
    body.append(layers.Conv2D(output_channels, 1, dtype="float32"))
    return keras.Sequential(body, name="decoder")


def _decoder_layers(config):
    """The decoder's gated convolutions as [filters, kernel, stride] triples."""
    return tuple((filters, 3, 1) for filters in config.gated_decoder_filters)


def _stack_size(image_shape, conv_layers):
    """(parameters, activations per image, output [h, w, f]) of a stack of gated convolutions:
    each has W and V with their biases, and computes its linear part, its gate and their product."""
    height, width, previous = image_shape
    weights = activations = 0
    for filters, kernel, stride in conv_layers:
        height, width = output_size(height, kernel, stride), output_size(width, kernel, stride)
        weights += 2 * (kernel * kernel * previous * filters + filters)
        activations += 3 * height * width * filters
        previous = filters
    return weights, activations, (height, width, previous)


def size(config):
    """(parameters, activations per image) of the encoder, the level encoder of a
    hierarchy and the decoder (see `Family`); the parameters are exact, with a
    one-channel last layer."""
    image_shape = tuple(config.image_shape)
    pixels, dims, units = math.prod(image_shape), tuple(config.latent_dims), config.gated_decoder_units
    weights, activations, _ = _stack_size(image_shape, config.gated_conv_layers)
    if len(dims) > 1:
        level_weights, level_activations, _ = _stack_size(image_shape, config.level_conv_layers)
        weights, activations = weights + level_weights, activations + level_activations
    decoder_weights, decoder_activations, (_, _, last) = _stack_size(image_shape, _decoder_layers(config))
    dense = 2 * (sum(dims) * units + len(dims) * units) + 2 * (len(dims) * units * pixels + pixels)
    weights += decoder_weights + dense + last + 1
    activations += decoder_activations + 3 * len(dims) * units + 3 * pixels + 4 * pixels
    return weights, activations


def _features(image_shape, conv_layers) -> int:
    return math.prod(_stack_size(tuple(image_shape), conv_layers)[2])


def features(config) -> int:
    """f, the width of the encoder's output (294 for 28x28 images and the default layers)."""
    return _features(config.image_shape, config.gated_conv_layers)


def level_features(config) -> int:
    """f_l, the width of the level encoder's output."""
    return _features(config.image_shape, config.level_conv_layers)


GATED_CONV = Family(encoder, decoder, lambda config, units: GatedDense(units), size, features,
                    level_encoder=level_encoder, level_features=level_features, decodes_levels=True)
