"""What a model's posterior says about each latent dimension.

`latent_statistics(model, terms)` reads the posterior behind one
`VAE.elbo_terms` result, level by level (a one-level model is a hierarchy of
one level):

    location_l   the mean of q(z_l | x, location_(l+1)): each level's
                 conditional mean at the location of the level above (the
                 joint posterior's mean has no closed form in a hierarchy)
    stddev_l     of q(z_l | x, z_(l+1)) given the sampled z_(l+1)
    KL_l,j       KL(q(z_l,j | ...) || p(z_l,j | ...)) per dimension j,
                 analytic for Normal marginals, else at the ELBO's sample
    TC_l         the total correlation of q(z_l | ...)

`encode` applies it to a whole dataset and returns NumPy arrays.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from probvae import objectives, seeds
from probvae.distributions import gaussian_approximation, kl_per_dimension, sample_posterior, total_correlation

__all__ = ["LatentStatistics", "Encoding", "latent_statistics", "location", "encode", "Inference"]


class LatentStatistics(NamedTuple):
    """Per-example posterior statistics over z's D dimensions (`VAE.latent_statistics`).

    In a hierarchy a lower level's stddev and KL are those of q(z_l | x, z_(l+1))
    given the sampled z_(l+1), and its location the conditional mean at the
    location of the level above.

    Examples:
      With the `vae` and `images` of `encode`'s example:

      >>> stats = vae.latent_statistics(vae.elbo_terms(vae.prepare_inputs(images), seed=1))
      >>> [tuple(value.shape) for value in stats]
      [(5, 2), (5, 2), (5, 2), (5,)]
    """

    location: tf.Tensor  # [n, D]: the posterior mean (see `VAE.location`)
    stddev: tf.Tensor  # [n, D]
    kl_per_dimension: tf.Tensor  # [n, D], nats; sums (with total_correlation) to the KL
    total_correlation: tf.Tensor  # [n], nats


class Encoding(NamedTuple):
    """Posterior parameters of a dataset as NumPy arrays (`encode`).

    Examples:
      With the `vae` and `images` of `encode`'s example:

      >>> encoding = encode(vae, images)
      >>> encoding._fields, type(encoding.loc).__name__
      (('loc', 'scale'), 'ndarray')
    """

    loc: np.ndarray  # [n, D]: the posterior's location (`VAE.location`)
    scale: np.ndarray  # [n, D]: its standard deviation per dimension (in a hierarchy, given the level above)


def location(model, features, top) -> tf.Tensor:
    """[n, D]: q(z_L|x)'s mean, then each lower level's conditional mean at the
    location of the level above, bottom level first.

    Examples:
      With the `vae` and `images` of `encode`'s example:

      >>> terms = vae.elbo_terms(vae.prepare_inputs(images), seed=1)
      >>> bool(tf.reduce_all(location(vae, terms.features, terms.top) == terms.top.mean()))  # one level
      True
    """
    means = [top.mean()]
    for level in reversed(model.levels):
        means.insert(0, level.posterior(features, means[0]).mean())
    return tf.concat(means, axis=-1)


def latent_statistics(model, terms) -> LatentStatistics:
    """Per-dimension statistics of the posterior behind an `elbo_terms` result.

    Examples:
      With the `vae` and `images` of `encode`'s example:

      >>> stats = latent_statistics(vae, vae.elbo_terms(vae.prepare_inputs(images), seed=1))
      >>> print(stats.kl_per_dimension.shape, (stats.total_correlation.numpy() == 0).all())  # diagonal q
      (5, 2) True
    """
    levels = terms.levels
    return LatentStatistics(
        location=location(model, terms.features, terms.top),
        stddev=tf.concat([level.posterior.stddev() for level in levels], axis=-1),
        kl_per_dimension=tf.concat([kl_per_dimension(level.posterior, level.prior, level.z) for level in levels],
                                   axis=-1),
        total_correlation=tf.add_n([total_correlation(level.posterior) for level in levels]))


def encode(model, images, batch_size: int = 1000, binarization_seed: int = 0, seed=0) -> Encoding:
    """The posterior parameters of every image, as arrays: `Encoding(loc, scale)`,
    [n, D] each (float32), `batch_size` images at a time.

    Args:
      model: the `VAE`.
      images: images as `VAE.prepare_inputs` takes them (uint8 0..255, floats
        in [0, 1], NumPy or tensors); Bernoulli models binarize them once from
        `binarization_seed`, as held-out evaluation does.
      seed: an int or a pair: the sample of the upper levels that a lower
        level's scale is conditioned on (a one-level model draws nothing).

    Examples:
      >>> from probvae import VAE, ModelConfig
      >>> vae = VAE(ModelConfig(arch="mlp", hidden_units=(8,), latent_dim=2, image_shape=(4, 4, 1)))
      >>> images = np.random.default_rng(0).integers(0, 256, (5, 4, 4), dtype=np.uint8)
      >>> loc, scale = encode(vae, images, batch_size=2)  # 3 batches: 2, 2 and 1 images
      >>> print(loc.shape, scale.shape, loc.dtype, bool(np.all(scale > 0)))
      (5, 2) (5, 2) float32 True
    """
    batch_size = objectives.whole_number("batch_size", batch_size)
    seed = seeds.as_seed(seed)
    x = model.prepare_inputs(images, binarization_seed)
    locs, scales = [], []
    for start in range(0, int(x.shape[0]), batch_size):
        terms = model.elbo_terms(x[start: start + batch_size], seed=seed)
        latent = latent_statistics(model, terms)
        locs.append(latent.location.numpy())
        scales.append(latent.stddev.numpy())
    return Encoding(np.concatenate(locs), np.concatenate(scales))


class Inference:
    """The methods of `probvae.VAE` that read its posterior's location and
    per-dimension statistics (the functions above, with a flow's top level
    linearised by `distributions.gaussian_approximation`).

    Examples:
      >>> isinstance(vae, Inference)  # the model of `encode`'s example
      True
    """

    def location(self, x, training=False) -> tf.Tensor:
        """The posterior's location [n, D] for images x (see `prepare_inputs`): the
        mean of q(z|x); in a hierarchy each level's conditional mean at the
        location of the level above (the mean itself has no closed form).

        Examples:
          >>> location = vae.location(images)
          >>> print(location.shape, bool(tf.reduce_all(location == vae.posterior(images).mean())))  # one Gaussian level
          (5, 2) True
        """
        features, below = self._encode_levels(self.prepare_inputs(x), training=training)
        return location(self, below, gaussian_approximation(self._top_posterior(features)))

    def latent_statistics(self, terms) -> LatentStatistics:
        """Per-dimension statistics of the posterior behind an `elbo_terms` result
        (`probvae.latents.latent_statistics`); a flow's top level by its
        linearisation (`distributions.gaussian_approximation`).

        Examples:
          >>> stats = vae.latent_statistics(vae.elbo_terms(vae.prepare_inputs(images), seed=1))
          >>> print(stats.location.shape, stats.stddev.shape, stats.kl_per_dimension.shape)
          (5, 2) (5, 2) (5, 2)
        """
        top = gaussian_approximation(terms.top)
        if top is not terms.top:
            levels = terms.levels[:-1] + (terms.levels[-1]._replace(posterior=top),)
            terms = type(terms)(*terms, levels=levels, features=terms.features, top=top)
        return latent_statistics(self, terms)

    def sample_levels(self, features, top, seed, rows=None) -> list:
        """[(q(z_l | x, z_(l+1)), z_l)] for l = 1 .. L, bottom first, drawn from the
        top level down: z_L with `seed`, z_l with `sample_seed(seed, l)`. Each q_l's
        density at its own z_l takes what it drew from its bijector cache (a flow
        is not inverted).

        Examples:
          >>> terms = vae.elbo_terms(vae.prepare_inputs(images), seed=(1, 2))
          >>> [(q, z)] = vae.sample_levels(terms.features, terms.top, seed=(1, 2))
          >>> print(z.shape, q.log_prob(z).shape, bool(tf.reduce_all(z == terms.z)))
          (5, 2) (5,) True
        """
        posterior, z = top, sample_posterior(top, seed, rows)
        drawn = [(posterior, z)]
        for index in range(len(self.levels) - 1, -1, -1):
            posterior = self.levels[index].posterior(features, z)
            z = sample_posterior(posterior, seeds.sample_seed(seed, index + 1), rows)
            drawn.insert(0, (posterior, z))
        return drawn

    def joint_sample(self, features, top, seed, rows=None) -> tf.Tensor:
        """z = [z_1, ..., z_L], [n, D], drawn as `elbo_terms` draws it.

        Examples:
          >>> terms = vae.elbo_terms(vae.prepare_inputs(images), seed=(1, 2))
          >>> bool(tf.reduce_all(vae.joint_sample(terms.features, terms.top, seed=(1, 2)) == terms.z))
          True
        """
        return tf.concat([z for _, z in self.sample_levels(features, top, seed, rows)], axis=-1)
