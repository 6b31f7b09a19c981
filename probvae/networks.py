"""Encoder and decoder bodies: plain tf-keras networks, no distributions.

The encoder maps images [n, h, w, c] to features [n, f]; the model puts a
dense layer and the posterior layer on top. The decoder maps latents [n, d] to
per-pixel likelihood parameters [n, h, w, k], where k is what the likelihood
head asks for. Final layers compute in float32 so that distributions stay in
float32 under a mixed-precision policy.

Architectures:
- "mlp": flatten, then dense layers of `hidden_units`; the decoder mirrors them.
- "conv": for each entry f of `conv_filters`, a 3x3 stride-2 convolution with
  f filters, then a dense layer of `dense_units`; the decoder mirrors it with
  3x3 stride-2 transposed convolutions and ends in a 3x3 convolution to the
  likelihood parameters. Height and width must be divisible by
  2 ** len(conv_filters).
"""

from typing import Sequence

from probvae._keras import keras
from probvae.errors import UserError

layers = keras.layers

__all__ = ["encoder", "decoder", "check_image_shape"]


def check_image_shape(arch: str, image_shape: Sequence[int], conv_filters: Sequence[int]) -> None:
    """Raise a ValueError if `image_shape` cannot pass through `arch`."""
    if len(image_shape) != 3:
        raise UserError(f"images must be [height, width, channels], got shape {tuple(image_shape)}")
    if arch == "conv":
        factor = 2 ** len(conv_filters)
        height, width, _ = image_shape
        if height % factor or width % factor:
            raise UserError(
                f"the conv architecture with {len(conv_filters)} stride-2 stages needs height and "
                f"width divisible by {factor}, but the images are {height}x{width}; "
                "use --arch mlp or resize the images"
            )


def encoder(config) -> keras.Sequential:
    """Images [n, h, w, c] -> features [n, f] for a `ModelConfig`."""
    image_shape = tuple(config.image_shape)
    check_image_shape(config.arch, image_shape, config.conv_filters)
    body = [layers.InputLayer(input_shape=image_shape)]
    if config.arch == "mlp":
        body.append(layers.Flatten())
        body += [layers.Dense(units, activation=config.activation) for units in config.hidden_units]
    else:
        body += [
            layers.Conv2D(filters, 3, strides=2, padding="same", activation=config.activation)
            for filters in config.conv_filters
        ]
        body += [layers.Flatten(), layers.Dense(config.dense_units, activation=config.activation)]
    return keras.Sequential(body, name="encoder")


def decoder(config, output_channels: int) -> keras.Sequential:
    """Latents [n, d] -> likelihood parameters [n, h, w, output_channels]."""
    height, width, _ = tuple(config.image_shape)
    check_image_shape(config.arch, config.image_shape, config.conv_filters)
    body = [layers.InputLayer(input_shape=(config.latent_dim,))]
    if config.arch == "mlp":
        body += [
            layers.Dense(units, activation=config.activation)
            for units in reversed(config.hidden_units)
        ]
        body += [
            layers.Dense(height * width * output_channels, dtype="float32"),
            layers.Reshape((height, width, output_channels), dtype="float32"),
        ]
    else:
        factor = 2 ** len(config.conv_filters)
        top = config.conv_filters[-1]
        body += [
            layers.Dense(config.dense_units, activation=config.activation),
            layers.Dense(
                (height // factor) * (width // factor) * top, activation=config.activation
            ),
            layers.Reshape((height // factor, width // factor, top)),
        ]
        body += [
            layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation=config.activation)
            for filters in reversed(config.conv_filters)
        ]
        body.append(layers.Conv2D(output_channels, 3, padding="same", dtype="float32"))
    return keras.Sequential(body, name="decoder")
