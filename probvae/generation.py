"""What a VAE generates: draws of p(z) p(x|z), decoded latents, reconstructions.

    z ~ p(z),  x ~ p(x|z)              `sample`: `Samples` (z, mean of p(x|z), x)
    decode(z)  = E[x | z]              the mean of p(x|z)
    vae(x)     = E[x | z = location]   a deterministic reconstruction

`Generation` holds these methods of `probvae.VAE` (which mixes it in); they
use only the model's prior, likelihood and posterior location.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from probvae import inputs, networks, objectives, seeds

__all__ = ["Samples", "Generation"]


class Samples(NamedTuple):
    """Draws of the generative model (`VAE.sample`).

    Examples:
      >>> vae.sample(2, seed=3)._fields
      ('z', 'mean', 'x')
    """

    z: tf.Tensor  # [n, D], z ~ p(z)
    mean: tf.Tensor  # [n, h, w, c], the mean of p(x|z)
    x: tf.Tensor  # [n, h, w, c], x ~ p(x|z)


class Generation:
    """The generative methods of `probvae.VAE`.

    Examples:
      A tiny model and three raw images, which the examples below use:

      >>> import numpy as np
      >>> from probvae import ModelConfig, VAE
      >>> vae = VAE(ModelConfig(arch="mlp", hidden_units=(8,), latent_dim=2, image_shape=(4, 4, 1)))
      >>> x = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
      >>> isinstance(vae, Generation)
      True
    """

    def decode(self, z) -> tf.Tensor:
        """The mean of p(x|z) for latents z [n, D]: images [n, h, w, c]
        (`likelihood(z)` is the distribution itself).

        Raises:
          UserError: z is not numbers of shape [n, D].

        Examples:
          >>> images = vae.decode(np.zeros([2, 2], np.float32))
          >>> print(images.shape, bool(tf.reduce_all((images > 0) & (images < 1))))  # Bernoulli means
          (2, 4, 4, 1) True
        """
        return self.likelihood(inputs.latents(z, self.latent_dim)).mean()

    def sample(self, num_samples: int, seed=0) -> "Samples":
        """`Samples` (z, mean, x) of num_samples draws z ~ p(z), x ~ p(x|z), from
        the stateless seed `seed` (an int or a pair): the same seed, the same draws.

        Raises:
          UserError: num_samples is not a whole number of at least 1, or its
            draws cannot fit in this machine's memory.

        Examples:
          >>> samples = vae.sample(4, seed=0)  # Samples(z, mean, x); the same seed, the same draws:
          >>> print(samples.z.shape, samples.x.shape, bool(tf.reduce_all(vae.sample(4, seed=(0, 0)).x == samples.x)))
          (4, 2) (4, 4, 4, 1) True
        """
        num_samples = objectives.whole_number("num_samples", num_samples)
        inputs.check_sample_size(num_samples, self.latent_dim, self.image_shape, networks.machine_memory())
        latent_seed, image_seed = seeds.split(seed, 2)
        z = self.prior.sample(num_samples, seed=latent_seed)
        likelihood = self.likelihood(z)
        return Samples(z, likelihood.mean(), tf.cast(likelihood.sample(seed=image_seed), tf.float32))

    def call(self, x, training=False):
        """Mean of p(x|z) at the posterior's location: a deterministic reconstruction [n, h, w, c].

        Examples:
          >>> print(vae(vae.prepare_inputs(x)).shape)
          (3, 4, 4, 1)
        """
        return self.likelihood(self.location(x, training=training), training=training).mean()
