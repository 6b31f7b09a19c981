"""Encoder and decoder bodies, one module per family, chosen by name through
`probvae.registry.NETWORKS` (the encoder by `arch`, the decoder by
`decoder_arch`, default the same):

- `dense`: "mlp" (dense layers) and "gated" (gated dense layers);
- `conv`: "conv" (strided convolutions, transposed-convolution decoder).
"""

from probvae._keras import keras
from probvae.networks.family import Family, check_image_shape
from probvae.registry import NETWORKS

__all__ = ["Family", "check_image_shape", "encoder", "decoder", "hidden_layer"]


def encoder(config):
    """Images [n, h, w, c] -> features [n, f]: the encoder of `config.arch`."""
    return NETWORKS[config.arch].load().encoder(config)


def decoder(config, output_channels: int):
    """Latents [n, d] -> likelihood parameters [n, h, w, output_channels]: the
    decoder of `config.decoder_arch` (default `config.arch`)."""
    return NETWORKS[config.decoder_arch or config.arch].load().decoder(config, output_channels)


def hidden_layer(config, units: int):
    """[..., f] -> [..., units]: the dense hidden layer of `config.arch`'s family
    (a gated layer for "gated"; Dense(units, "elu") for a family without one)."""
    family = NETWORKS[config.arch].load()
    if getattr(family, "hidden", None) is None:
        return keras.layers.Dense(units, activation="elu")
    return family.hidden(config, units)
