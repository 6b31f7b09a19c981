"""Convolutional encoder and decoder bodies ("conv").

One builder driven by a list of [filters, kernel, stride] triples
(`encoder_conv_layers(config)`: `conv_layers`, or by default a 3x3 stride-2
convolution for each entry of `conv_filters`):

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

    config = ModelConfig(arch="conv", conv_layers=((128, 5, 2), (256, 5, 2), (512, 5, 2), (1024, 5, 2)),
                         decoder_conv_layers=((512, 5, 2), (256, 5, 2), (128, 5, 2)),
                         batch_norm=True, dense_units=0, image_shape=(28, 28, 1))
    CONV.encoder(config)(x)          # [n, 2 * 2 * 1024]
    CONV.decoder(config, 1)(z)       # [n, 28, 28, 1]: 4x4x1024 -> 32x32 -> crop
"""

import math

import tensorflow as tf

from probvae import replicas
from probvae._keras import keras
from probvae.errors import UserError
from probvae.networks.family import Family, check_image_shape

layers = keras.layers

__all__ = ["BATCH_NORM_MOMENTUM", "CONV", "encoder_conv_layers", "decoder_start_shape"]


def encoder_conv_layers(config):
    """The encoder's [filters, kernel, stride] triples (conv_layers or conv_filters)."""
    return config.conv_layers or tuple((f, 3, 2) for f in config.conv_filters)


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


def _decoder_conv_layers(config):
    return config.decoder_conv_layers or tuple(reversed(encoder_conv_layers(config)))


def decoder_start_shape(config):
    """[h0, w0, c0]: the tensor the conv decoder reshapes its dense output into."""
    height, width, _ = tuple(config.image_shape)
    factor = math.prod(stride for _, _, stride in _decoder_conv_layers(config))
    return (-(-height // factor), -(-width // factor), encoder_conv_layers(config)[-1][0])


def encoder(config) -> keras.Sequential:
    """Images [n, h, w, c] -> features [n, f] for a `ModelConfig`."""
    image_shape = tuple(config.image_shape)
    check_image_shape(image_shape)
    body = [layers.InputLayer(input_shape=image_shape)]
    for filters, kernel, stride in encoder_conv_layers(config):
        body += _conv_block(
            lambda activation, filters=filters, kernel=kernel, stride=stride: layers.Conv2D(
                filters, kernel, strides=stride, padding="same", activation=activation),
            config,
        )
    body.append(layers.Flatten())
    if config.dense_units:
        body.append(layers.Dense(config.dense_units, activation=config.activation))
    return keras.Sequential(body, name="encoder")


def decoder(config, output_channels: int) -> keras.Sequential:
    """Latents [n, d] -> likelihood parameters [n, h, w, output_channels]."""
    height, width, _ = tuple(config.image_shape)
    check_image_shape(config.image_shape)
    body = [layers.InputLayer(input_shape=(config.latent_dim,))]
    start = decoder_start_shape(config)
    if config.dense_units:
        body.append(layers.Dense(config.dense_units, activation=config.activation))
    body += [
        layers.Dense(math.prod(start), activation=config.activation),
        layers.Reshape(start),
    ]
    for filters, kernel, stride in _decoder_conv_layers(config):
        body += _conv_block(
            lambda activation, filters=filters, kernel=kernel, stride=stride: layers.Conv2DTranspose(
                filters, kernel, strides=stride, padding="same", activation=activation),
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


def size(config):
    """(parameters, activations per image), rough float counts (see `Family`)."""
    height, width, channels = tuple(config.image_shape)
    weights, activations, previous, scale = 0, 4 * height * width * channels, channels, 1
    for filters, kernel, stride in encoder_conv_layers(config):
        scale *= stride
        weights += 2 * kernel * kernel * previous * filters  # and the mirrored decoder layer
        activations += 2 * -(-height // scale) * -(-width // scale) * filters
        previous = filters
    flat = -(-height // scale) * -(-width // scale) * previous
    return weights + 2 * flat * max(config.dense_units or 0, 2 * config.latent_dim), activations


def features(config) -> int:
    """f, the width of the encoder's output: dense_units, else the flattened last convolution."""
    height, width, _ = tuple(config.image_shape)
    scale = math.prod(stride for _, _, stride in encoder_conv_layers(config))
    return config.dense_units or -(-height // scale) * -(-width // scale) * encoder_conv_layers(config)[-1][0]


def check_precision(config, precision: str) -> None:
    """A UserError if an encoder convolution takes a 1x1 input in bfloat16 on a
    CPU: oneDNN's bfloat16 convolution of a 1x1 input returns non-finite
    numbers (docs/performance.md, "Precision")."""
    if precision != "bfloat16" or tf.config.list_logical_devices("GPU"):
        return
    height, width, _ = tuple(config.image_shape)
    for index, (_, _, stride) in enumerate(encoder_conv_layers(config)):
        if height == 1 and width == 1:
            raise UserError(f"encoder convolution {index + 1} of the conv network takes a 1x1 input, which bfloat16 "
                            "convolutions on a CPU turn into non-finite numbers; use --precision float32, or fewer "
                            "stride-2 convolutions (--conv-layers) for images this small")
        height, width = -(-height // stride), -(-width // stride)


CONV = Family(encoder, decoder, lambda config, units: layers.Dense(units, activation=config.activation), size,
              features, check_precision=check_precision)
