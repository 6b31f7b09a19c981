"""Images as a model computes on them: checked, scaled and (for a Bernoulli
likelihood) binarized once (`prepare_inputs`, behind `VAE.prepare_inputs`).

Raw forms (uint8 0..255 as a NumPy array or a tensor, float NumPy arrays in
[0, 1], with or without the channel axis) are scaled to [0, 1] and, for a
Bernoulli likelihood, binarized once from a seed, as held-out evaluation
does. A float `tf.Tensor` is taken as model-ready: float32 [n, h, w, c],
(binary for a Bernoulli likelihood) and checked: finite, and in [0, 1]
for a likelihood over the unit interval.
"""

import numpy as np
import tensorflow as tf

from probvae import checks
from probvae import data as data_lib
from probvae.errors import UserError

__all__ = ["prepare_inputs", "latents", "check_sample_size"]


def _symbolic(x, image_shape) -> tf.Tensor:
    """A tensor inside a traced function: its values are unknown, so only its shape is checked."""
    shape = tuple(x.shape[1:])
    if len(shape) != 3 or any(s is not None and s != e for s, e in zip(shape, image_shape)):
        expected = ", ".join(map(str, image_shape))
        raise UserError(f"inputs must be [n, {expected}] for this model, got {tuple(x.shape)}")
    return tf.cast(x, tf.float32)


def _check_model_ready(array: np.ndarray, unit_interval: bool) -> None:
    """The values of a float tensor given as model-ready images."""
    if unit_interval and (array.min() < 0 or array.max() > 1):
        raise UserError(f"inputs must lie in [0, 1] for this likelihood, got values in "
                        f"[{array.min():g}, {array.max():g}]; scale them (uint8 images 0..255 are scaled for you)")


def prepare_inputs(x, image_shape, binarize: bool, unit_interval: bool, binarization_seed: int = 0) -> tf.Tensor:
    """Images as the model computes on them: float32 [n, h, w, c].

    Args:
      x: images (see the module docstring).
      image_shape: the model's (h, w, c).
      binarize: binarize raw images once (a Bernoulli likelihood).
      unit_interval: the likelihood's support is [0, 1] (its pixels must lie there).
      binarization_seed: seed of the one binarization of raw images.

    Raises:
      UserError: no images, a shape that does not fit the model, NaN or
        infinite values, values out of range, or an unknown dtype.
    """
    image_shape = tuple(image_shape)
    binarization_seed = checks.whole_number("binarization_seed", binarization_seed)
    if tf.is_tensor(x) and not hasattr(x, "numpy"):
        return _symbolic(x, image_shape)
    model_ready = tf.is_tensor(x) and x.dtype.is_floating
    array = x.numpy() if tf.is_tensor(x) else np.asarray(x)
    if image_shape[-1] == 1 and tuple(array.shape[1:]) == image_shape[:-1]:
        array = array[..., np.newaxis]  # [n, h, w] of a one-channel model
    if array.ndim != len(image_shape) + 1 or tuple(array.shape[1:]) != image_shape:
        expected = ", ".join(map(str, image_shape))
        raise UserError(f"inputs must be [n, {expected}] for this model, got shape {np.shape(x)}")
    if array.shape[0] == 0:
        raise UserError(f"inputs hold no images (shape {np.shape(x)}); pass at least one")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise UserError("inputs hold NaN or infinite values; pass finite images (uint8 0..255 or floats in [0, 1])")
    if model_ready:
        _check_model_ready(array, unit_interval)
        return tf.cast(x, tf.float32) if x.shape.rank == 4 else tf.constant(array, tf.float32)
    images = data_lib.to_unit_interval(array, "inputs")
    if binarize:
        return tf.constant(data_lib.binarize_fixed(images, binarization_seed))
    return tf.constant(images)


def latents(z, latent_dim: int) -> tf.Tensor:
    """Latents z as float32 [n, latent_dim], or a UserError saying what the model takes."""
    try:
        z = tf.convert_to_tensor(z, tf.float32)
    except (TypeError, ValueError):
        raise UserError(f"latents must be numbers of shape [n, {latent_dim}], got {type(z).__name__} "
                        f"{str(z)[:40]!r}") from None
    if z.shape.rank is not None and (z.shape.rank != 2 or z.shape[-1] not in (None, latent_dim)):
        raise UserError(f"latents must be [n, {latent_dim}] for this model (its latent_dim is {latent_dim}), "
                        f"got shape {tuple(z.shape)}")
    return z


def check_sample_size(num_samples: int, latent_dim: int, image_shape, available: int) -> None:
    """A UserError if `num_samples` draws (z [n, D], the mean and a draw x,
    float32, twice for the intermediate values) need more than `available`
    bytes of memory (0: unknown, nothing is refused)."""
    needed = 2 * 4 * num_samples * (latent_dim + 2 * int(np.prod(image_shape)))
    if available and needed > available:
        raise UserError(f"sample({num_samples}) needs at least {needed / 2**30:.3g} GiB, more than this machine's "
                        f"{available / 2**30:.3g} GiB; draw fewer samples per call (several calls with "
                        f"different seeds)")
