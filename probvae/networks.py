"""Encoder and decoder bodies: plain tf-keras networks, no distributions.

The encoder maps images [n, h, w, c] to features [n, f]; the model puts a
dense layer and the posterior layer on top. The decoder maps latents [n, d] to
per-pixel likelihood parameters [n, h, w, k], where k is what the likelihood
head asks for. Final layers compute in float32 so that distributions stay in
float32 under a mixed-precision policy.

Architectures:
- "mlp": flatten, then dense layers of `hidden_units`; the decoder mirrors them.
- "gated": flatten, then gated dense layers of `hidden_units` (Dauphin et al.
  2017; the VampPrior paper's networks), h = (W x + b) * sigmoid(V x + c);
  the decoder mirrors them. No other activation.
- "conv": one builder driven by a list of [filters, kernel, stride] triples
  (`ModelConfig.encoder_conv_layers`; by default a 3x3 stride-2 convolution
  for each entry of `conv_filters`):

    encoder: [Conv2D(f, k, s, "same") (+ BatchNorm, momentum 0.9) + activation] per triple
             -> Flatten -> Dense(dense_units) (skipped when dense_units = 0)
    decoder: Dense(dense_units) (skipped when 0) -> Dense(h0 * w0 * c0) -> Reshape
             -> [Conv2DTranspose(f, k, s, "same") (+ BatchNorm) + activation]
                per decoder triple (default: the encoder's, reversed)
             -> Conv2D(k_out, 3, "same") -> central crop to [h, w]

  with S the product of the decoder strides, h0 = ceil(h / S), w0 = ceil(w / S)
  and c0 the filters of the last encoder convolution. The decoder upsamples to
  [h0 S, w0 S] and crops the centre, so any image size works (28x28 through
  four stride-2 stages: 2x2 start, 32x32 out, cropped by 2 on each side).

Built under a tf.distribute strategy of several replicas, batch normalisation
is synchronized: its batch statistics are those of the whole global batch,
as on one device.

Example (the DCGAN-like encoder of the mnist-dcgan-2d preset):

    config = ModelConfig(conv_layers=((128, 5, 2), (256, 5, 2), (512, 5, 2), (1024, 5, 2)),
                         decoder_conv_layers=((512, 5, 2), (256, 5, 2), (128, 5, 2)),
                         batch_norm=True, dense_units=0, image_shape=(28, 28, 1))
    encoder(config)(x)          # [n, 2 * 2 * 1024]
    decoder(config, 1)(z)       # [n, 28, 28, 1]: 4x4x1024 -> 32x32 -> crop
"""

import math
from typing import Sequence

import tensorflow as tf

from probvae import replicas
from probvae._keras import keras
from probvae.errors import UserError

layers = keras.layers

__all__ = ["GatedDense", "encoder", "decoder", "check_image_shape", "decoder_start_shape"]


class GatedDense(layers.Layer):
    """h = (x W + b) * sigmoid(x V + c): a dense layer gated by a second one.

    Both halves share one kernel [in, 2 * units] (one matmul); the first
    `units` columns are W, the last `units` are V.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense = layers.Dense(2 * self.units, name="linear_and_gate")

    def call(self, inputs):
        linear, gate = tf.split(self.dense(inputs), 2, axis=-1)  # [n, units] each
        return linear * tf.sigmoid(gate)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def check_image_shape(arch: str, image_shape: Sequence[int], conv_filters: Sequence[int] = ()) -> None:
    """Raise a UserError if `image_shape` is not [height, width, channels] of positive sizes.

    Every height and width passes through every architecture (the conv
    decoder crops), so only the rank and the sizes are checked.
    """
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise UserError(f"images must be [height, width, channels], got shape {tuple(image_shape)}")


# Batch normalisation's running-average momentum. Keras's 0.99 needs several
# hundred steps before the running statistics (used for evaluation) match the
# batch statistics (used in training); at 0.9 they settle within tens of steps.
BATCH_NORM_MOMENTUM = 0.9


def _conv_block(conv, config):
    """A (transposed) convolution, then batch normalisation and the activation.

    Without batch normalisation the activation stays inside the convolution,
    so the default architecture has the same layers (and checkpoints) as ever.
    """
    if not config.batch_norm:
        return [conv(activation=config.activation)]
    normalization = layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, synchronized=replicas.replicated())
    return [conv(activation=None), normalization, layers.Activation(config.activation)]


def _dense(config, units):
    """A hidden dense layer of the "mlp" (activation) or "gated" family."""
    if config.arch == "gated":
        return GatedDense(units)
    return layers.Dense(units, activation=config.activation)


def _decoder_conv_layers(config):
    return config.decoder_conv_layers or tuple(reversed(config.encoder_conv_layers))


def decoder_start_shape(config):
    """[h0, w0, c0]: the tensor the conv decoder reshapes its dense output into."""
    height, width, _ = tuple(config.image_shape)
    factor = math.prod(stride for _, _, stride in _decoder_conv_layers(config))
    return (-(-height // factor), -(-width // factor), config.encoder_conv_layers[-1][0])


def encoder(config) -> keras.Sequential:
    """Images [n, h, w, c] -> features [n, f] for a `ModelConfig`."""
    image_shape = tuple(config.image_shape)
    check_image_shape(config.arch, image_shape)
    body = [layers.InputLayer(input_shape=image_shape)]
    if config.arch in ("mlp", "gated"):
        body.append(layers.Flatten())
        body += [_dense(config, units) for units in config.hidden_units]
    else:
        for filters, kernel, stride in config.encoder_conv_layers:
            body += _conv_block(
                lambda activation: layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                                 activation=activation),
                config,
            )
        body.append(layers.Flatten())
        if config.dense_units:
            body.append(layers.Dense(config.dense_units, activation=config.activation))
    return keras.Sequential(body, name="encoder")


def decoder(config, output_channels: int) -> keras.Sequential:
    """Latents [n, d] -> likelihood parameters [n, h, w, output_channels]."""
    height, width, _ = tuple(config.image_shape)
    check_image_shape(config.arch, config.image_shape)
    body = [layers.InputLayer(input_shape=(config.latent_dim,))]
    if config.arch in ("mlp", "gated"):
        body += [_dense(config, units) for units in reversed(config.hidden_units)]
        body += [
            layers.Dense(height * width * output_channels, dtype="float32"),
            layers.Reshape((height, width, output_channels), dtype="float32"),
        ]
        return keras.Sequential(body, name="decoder")
    start = decoder_start_shape(config)
    if config.dense_units:
        body.append(layers.Dense(config.dense_units, activation=config.activation))
    body += [
        layers.Dense(math.prod(start), activation=config.activation),
        layers.Reshape(start),
    ]
    for filters, kernel, stride in _decoder_conv_layers(config):
        body += _conv_block(
            lambda activation: layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same",
                                                      activation=activation),
            config,
        )
    body.append(layers.Conv2D(output_channels, 3, padding="same", dtype="float32"))
    factor = math.prod(stride for _, _, stride in _decoder_conv_layers(config))
    extra_height, extra_width = start[0] * factor - height, start[1] * factor - width
    if extra_height or extra_width:
        body.append(layers.Cropping2D(
            ((extra_height // 2, extra_height - extra_height // 2),
             (extra_width // 2, extra_width - extra_width // 2)),
            dtype="float32",
        ))
    return keras.Sequential(body, name="decoder")
