"""What a network family is: an encoder and a decoder builder."""

from typing import Callable, NamedTuple, Optional, Sequence

from probvae.errors import UserError

__all__ = ["Family", "check_image_shape"]


class Family(NamedTuple):
    """A registered network (`probvae.registry.NETWORKS`): plain tf-keras bodies, no distributions.

    encoder(config) maps images [n, h, w, c] to features [n, f] (the model
    puts a dense layer and the posterior layer on top); decoder(config, k)
    maps latents [n, d] to per-pixel likelihood parameters [n, h, w, k], its
    last layers computing in float32 so that distributions stay float32
    under a mixed-precision policy. hidden(config, units), if given, is the
    family's dense hidden layer [..., f] -> [..., units], which the lower
    levels of a hierarchical latent use (`probvae.hierarchy`); without it they
    use Dense(units, "elu"). size(config) -> (parameters, activations per
    image), rough float counts of encoder and decoder together, lets a run
    refuse an image shape that cannot fit in memory before it builds
    anything (`probvae.networks.check_memory`); without it a dense-like
    estimate is used. features(config) -> f, the width of the encoder's
    output, which the estimate multiplies by the posterior's `params_size`
    (the dense layer of posterior parameters: d(d + 3)/2 outputs for a
    full covariance); without it f = 512 is assumed.

    Two options for a hierarchy (`probvae.hierarchy`), both as in the
    convHVAE (`probvae.networks.gatedconv`): level_encoder(config), if given,
    is the lower levels' own network of x, images [n, h, w, c] -> [n, f_l],
    and level_features(config) -> f_l its width; q(z_l | x, z_(l+1)) then
    joins its features with z_(l+1) mapped to the same width f_l. Without
    it the lower levels read the encoder's features. decodes_levels: the
    decoder is given the hierarchy's config and reads each level of
    z = [z_1, ..., z_L] (config.latent_dims); otherwise it is built for one
    level of D = sum_l d_l latents.

    check_precision(config, precision), if given, raises a UserError when the
    network cannot compute in `precision` on this device
    (`probvae.networks.check_precision`).
    """

    encoder: Callable
    decoder: Callable
    hidden: Optional[Callable] = None
    size: Optional[Callable] = None
    features: Optional[Callable] = None
    level_encoder: Optional[Callable] = None
    level_features: Optional[Callable] = None
    decodes_levels: bool = False
    check_precision: Optional[Callable] = None


def check_image_shape(image_shape: Sequence[int]) -> None:
    """Raise a UserError if `image_shape` is not [height, width, channels] of positive sizes."""
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise UserError(f"images must be [height, width, channels], got shape {tuple(image_shape)}")
