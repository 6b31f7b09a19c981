"""Encoder and decoder bodies, one module per family, chosen by name through
`probvae.registry.NETWORKS` (the encoder by `arch`, the decoder by
`decoder_arch`, default the same):

- `dense`: "mlp" (dense layers) and "gated" (gated dense layers);
- `conv`: "conv" (strided convolutions, transposed-convolution decoder);
- `gatedconv`: "gatedconv" (gated convolutions, the convHVAE's networks).
"""

import math
import os

from probvae._keras import keras
from probvae.errors import UserError
from probvae.networks.family import Family, check_image_shape
from probvae.registry import NETWORKS, POSTERIORS

__all__ = ["Family", "check_image_shape", "encoder", "level_encoder", "level_features", "decoder", "hidden_layer",
           "memory_estimate", "machine_memory", "check_memory", "check_precision"]


def encoder(config):
    """Images [n, h, w, c] -> features [n, f]: the encoder of `config.arch`."""
    return NETWORKS[config.arch].load().encoder(config)


def level_encoder(config):
    """Images [n, h, w, c] -> features [n, f_l] that the lower levels of a
    hierarchy read (the family's `level_encoder`), or None: they read the
    encoder's features (so does a model of one level)."""
    family = NETWORKS[config.arch].load()
    if len(config.latent_dims) == 1 or getattr(family, "level_encoder", None) is None:
        return None
    return family.level_encoder(config)


def level_features(config):
    """f_l, the width of `level_encoder(config)`'s output, or None without one."""
    family = NETWORKS[config.arch].load()
    if len(config.latent_dims) == 1 or getattr(family, "level_encoder", None) is None:
        return None
    return family.level_features(config)


def decoder(config, output_channels: int):
    """Latents [n, D] (D = sum_l d_l, every level) -> likelihood parameters
    [n, h, w, output_channels]: the decoder of `config.decoder_arch` (default
    `config.arch`), built for one level of D latents unless the family
    `decodes_levels`."""
    family = NETWORKS[config.decoder_arch or config.arch].load()
    if not getattr(family, "decodes_levels", False):
        config = config.one_level(sum(config.latent_dims))
    return family.decoder(config, output_channels)


def hidden_layer(config, units: int):
    """[..., f] -> [..., units]: the dense hidden layer of `config.arch`'s family
    (a gated layer for "gated"; Dense(units, "elu") for a family without one)."""
    family = NETWORKS[config.arch].load()
    if getattr(family, "hidden", None) is None:
        return keras.layers.Dense(units, activation="elu")
    return family.hidden(config, units)


def memory_estimate(config, rows: int) -> int:
    """Bytes a training step of `rows` images of `config.image_shape` needs at
    the least: float32 weights with their gradients and Adam's two moments,
    and one forward pass's activations (the backward pass needs more): the
    network family's `size` and the dense layer from the encoder's `features`
    to the posterior's `params_size` parameters. A floor, not a forecast: a
    config above the machine's memory cannot run."""
    family = NETWORKS[config.arch].load()
    if getattr(family, "size", None) is not None:
        weights, activations = family.size(config)
    else:
        pixels = math.prod(config.image_shape)
        weights, activations = 2 * 512 * pixels, 4 * pixels
    posterior, top = POSTERIORS[config.posterior].load(), config.latent_dims[-1]
    # A flow posterior takes a context besides its Gaussian's parameters, and has networks of its own.
    params = posterior.input_size(top, config) if hasattr(posterior, "input_size") else posterior.params_size(top)
    flow = posterior.flow_size(top, config) if hasattr(posterior, "flow_size") else (0, 0)
    features = family.features(config) if getattr(family, "features", None) is not None else 512
    weights, activations = weights + (features + 1) * params + flow[0], activations + params + flow[1]
    return 4 * (4 * weights + rows * activations)


def check_precision(config, precision: str) -> None:
    """A UserError if the encoder of `config` cannot compute in `precision`
    on this device (its family's `check_precision`)."""
    family = NETWORKS[config.arch].load()
    if getattr(family, "check_precision", None) is not None:
        family.check_precision(config, precision)


def machine_memory() -> int:
    """This machine's physical memory in bytes (0 if the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(config, rows: int, flag: str = "--batch-size") -> None:
    """A UserError naming the flags to change if `rows` images of the model's
    shape cannot fit in this machine's memory (`memory_estimate`)."""
    needed, available = memory_estimate(config, rows), machine_memory()
    if available and needed > available:
        diagonal = " or --posterior diag" if config.posterior == "full" else ""
        shape = "x".join(map(str, config.image_shape))
        raise UserError(f"{rows} images of shape {shape} through the {config.arch} network and the "
                        f"{config.posterior} posterior of {config.latent_dims[-1]} latent dimensions need at least "
                        f"{needed / 2**30:.3g} GiB, more than this machine's {available / 2**30:.3g} GiB; lower "
                        f"{flag}, --latent-dim or --image-shape, or use a smaller network{diagonal}")
