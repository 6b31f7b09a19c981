"""The VAE: a prior p(z), a posterior layer q(z|x) and a likelihood p(x|z).

    x --encoder--> features --dense--> params --posterior layer--> q(z|x)
    z ~ q(z|x) --decoder--> pixel params --likelihood head--> p(x|z)

The posterior layer carries a `KLDivergenceRegularizer` toward the prior, so
after `posterior(x)` the layer's losses hold kl_weight * mean KL; the training
loss is -mean log p(x|z) plus those losses (or, with free bits, the free-bits
KL term). `elbo(x)` always reports the true ELBO (KL weight 1, no free bits).

The prior is a layer (`prior_layer`) whose variables train with the rest;
`vae.prior` builds p(z) from their current values, and the regularizer gets
it through a callable, so it sees the prior of the current step. For the
mixture and the VampPrior (which encodes its pseudo-inputs) the KL has no
closed form: the regularizer estimates it at z ~ q(z|x) drawn with the seed
the ELBO samples with, so loss and ELBO share one z.

Posterior samples are `distributions.sample_posterior`: example n of a batch
of N draws column n of one [d, N] standard normal (the draw of TFP's own
`q.sample(seed=seed)`, so one device samples as TFP does). Under tf.distribute a replica
holds rows offset .. offset + n - 1 of the global batch (`rows`), and its
`training_loss` is its share of the global batch's loss (see
`probvae.replicas`), so any split of a batch computes what one device would.

Inputs: images in the dataset's raw form (uint8 0..255, as a NumPy array or
a tensor, or a float NumPy array in [0, 1], with or without the channel axis)
are checked and prepared as evaluation prepares them, binarized once with a
fixed seed for a Bernoulli likelihood; a float `tf.Tensor` is taken as
model-ready (float32 [n, h, w, c], binarized for a Bernoulli likelihood) and
checked for shape, emptiness and finite values (`prepare_inputs`).

Example:

    vae = VAE(ModelConfig(latent_dim=2, image_shape=(28, 28, 1)))
    q = vae.posterior(x)            # batch [n], event [2]
    p_x = vae.likelihood(q.sample())  # batch [n], event [28, 28, 1]
    parts = vae.elbo(x)             # ElboParts of [n] tensors, nats
"""

import threading
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from probvae import data as data_lib
from probvae import hierarchy, networks, objectives, replicas
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.distributions import (kl_divergence, kl_per_dimension, posterior_distribution, posterior_layer,
                                   posterior_params_size, sample_posterior, total_correlation)
from probvae.errors import UserError
from probvae.registry import LIKELIHOODS, PRIORS

tfd = tfp.distributions

__all__ = ["VAE", "ElboTerms", "LatentStatistics", "Samples", "Encoding", "encode"]

# Seed of the Monte Carlo KL sample when `posterior(x)` is called without one.
_DEFAULT_KL_SEED = (0, 0)


class _ElboTerms(NamedTuple):
    parts: objectives.ElboParts  # elbo, reconstruction, kl: [n] each, nats
    posterior: tfd.Distribution  # q(z|x): batch [n], event [d]
    prior: tfd.Distribution  # p(z): event [d]
    z: tf.Tensor  # [n, d], the sample of the reconstruction (and of a Monte Carlo KL)


class ElboTerms(_ElboTerms):
    """A one-sample ELBO and what it was computed from: (parts, posterior, prior, z).

    `levels` holds a hierarchy's `hierarchy.LevelTerms`, bottom level first
    (() for one level), `features` the encoder's output [n, f] and `top`
    q(z_L|x) (q(z|x) for one level); they are attributes, so the terms still
    unpack as four.
    """

    def __new__(cls, parts, posterior, prior, z, levels=(), features=None, top=None):
        terms = super().__new__(cls, parts, posterior, prior, z)
        terms.levels, terms.features, terms.top = tuple(levels), features, top
        return terms


class LatentStatistics(NamedTuple):
    """Per-example posterior statistics over z's D dimensions (`VAE.latent_statistics`).

    In a hierarchy a lower level's stddev and KL are those of q(z_l | x, z_(l+1))
    given the sampled z_(l+1), and its location the conditional mean at the
    location of the level above.
    """

    location: tf.Tensor  # [n, D]: the posterior mean (see `VAE.location`)
    stddev: tf.Tensor  # [n, D]
    kl_per_dimension: tf.Tensor  # [n, D], nats; sums (with total_correlation) to the KL
    total_correlation: tf.Tensor  # [n], nats


class Samples(NamedTuple):
    """Draws of the generative model (`VAE.sample`)."""

    z: tf.Tensor  # [n, D], z ~ p(z)
    mean: tf.Tensor  # [n, h, w, c], the mean of p(x|z)
    x: tf.Tensor  # [n, h, w, c], x ~ p(x|z)


class Encoding(NamedTuple):
    """Posterior parameters of a dataset as NumPy arrays (`encode`)."""

    loc: np.ndarray  # [n, D]: the posterior's location (`VAE.location`)
    scale: np.ndarray  # [n, D]: its standard deviation per dimension (in a hierarchy, given the level above)


class VAE(keras.Model):
    """A variational autoencoder built from a `ModelConfig`.

    Args:
      config: the `ModelConfig` (its image_shape must be set).
      kl_weight: initial weight of the KL term in the training loss (beta);
        the `kl_weight` variable can be changed later (warm-up).
      free_bits: nats per latent dimension the training loss's KL term leaves
        free (`objectives.free_bits_kl`); 0 for none.
      train_samples: K >= 1 trains on the importance-weighted bound of K
        samples (`objectives.iwae_bound`); 0 trains on the ELBO.
    """

    def __init__(self, config: ModelConfig, kl_weight: float = 1.0, free_bits: float = 0.0,
                 train_samples: int = 0, **kwargs):
        super().__init__(name="vae", **kwargs)
        if config.image_shape is None:
            raise UserError("ModelConfig.image_shape is not set; it comes from the data")
        self.config = config
        self.image_shape = tuple(config.image_shape)
        self.free_bits = float(free_bits)
        # K > 0: train on the importance-weighted bound of K samples (`training_loss`).
        self.train_samples = int(train_samples)
        self.latent_dims = tuple(config.latent_dims)  # [d_1, ..., d_L], bottom level first
        top = self.latent_dims[-1]
        hierarchical = len(self.latent_dims) > 1
        # Weight of the KL loss the posterior layer adds (beta, warm-up).
        self.kl_weight = tf.Variable(float(kl_weight), trainable=False, dtype=tf.float32, name="kl_weight")
        self.encoder = networks.encoder(config)
        self.posterior_params = keras.layers.Dense(
            posterior_params_size(top, config.posterior), dtype="float32", name="posterior_params"
        )
        # The prior's variables (if any) live in this layer, so they train and checkpoint.
        # In a hierarchy it is the prior of the top level, p(z_L).
        self.prior_layer = PRIORS[config.prior].load().for_model(
            config.one_level(top) if hierarchical else config, encode=self._encode_without_kl)
        # The seed and rows of the current call's posterior sample: the KL
        # regularizer draws z ~ q with those the ELBO uses, so both see one z.
        # Per thread: tf.distribute builds each replica's step in its own thread.
        self._sampling = threading.local()
        analytic = self.prior_layer.analytic_kl
        self.posterior_layer = posterior_layer(
            top, self.prior_layer.distribution, covariance=config.posterior, kl_weight=self.kl_weight,
            use_exact_kl=analytic, test_points_fn=None if analytic else self._kl_test_points,
        )
        # The lower levels of a hierarchy, bottom (z_1) first (probvae.hierarchy).
        self.levels = [hierarchy.Level(config, d, index + 1) for index, d in enumerate(self.latent_dims[:-1])]
        self.likelihood_head = LIKELIHOODS[config.likelihood].load().for_model(config)
        self.decoder = networks.decoder(config.one_level(self.latent_dim) if hierarchical else config,
                                        self.likelihood_head.decoder_channels)
        image = tf.TensorSpec([None] + list(self.image_shape), tf.float32)
        count = tf.TensorSpec([], tf.int32)
        self._importance_sampling = tf.function(
            self._importance_sampling_graph, input_signature=[image, tf.TensorSpec([2], tf.int32), count, count],
            autograph=False)
        # Create every variable now, so checkpoints restore into a complete model.
        self(tf.zeros((1,) + self.image_shape))

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) from the current prior variables: batch shape [], event shape [latent_dim]
        (in a hierarchy the joint p(z_L) p(z_(L-1) | z_L) ... over z = [z_1, ..., z_L])."""
        return self._joint_prior(self.prior_layer.distribution())

    @property
    def latent_dim(self) -> int:
        """D, the size of z: d, or d_1 + ... + d_L in a hierarchy."""
        return sum(self.latent_dims)

    def _joint_prior(self, top: tfd.Distribution) -> tfd.Distribution:
        if not self.levels:
            return top
        return hierarchy.chain(top, [level.prior for level in self.levels], self.latent_dims, "prior")

    def _joint_posterior(self, features, top: tfd.Distribution) -> tfd.Distribution:
        if not self.levels:
            return top
        return hierarchy.chain(top, [lambda z_above, level=level: level.posterior(features, z_above)
                                     for level in self.levels], self.latent_dims, "posterior")

    @tf.autograph.experimental.do_not_convert
    def prepare_inputs(self, x, binarization_seed: int = 0) -> tf.Tensor:
        """Images as the model computes on them: float32 [n, h, w, c].

        One path for NumPy arrays and eager tensors: integer images (uint8
        0..255, as the datasets store them, a `tf.Tensor` of them too) and
        float NumPy arrays in [0, 1] are scaled to [0, 1] and, for a
        Bernoulli likelihood, binarized once from `binarization_seed` (binary
        images stay as they are). A float `tf.Tensor` is taken as model-ready
        (binarized for a Bernoulli likelihood; a Normal likelihood's densities
        hold on all reals) and only checked. Either may lack the channel axis.
        Inside a `tf.function` a tensor is only cast (its values are unknown).

        Raises:
          UserError: no images, a shape that does not fit the model, NaN or
            infinite values, values out of range, or an unknown dtype.
        """
        expected = ", ".join(map(str, self.image_shape))
        if tf.is_tensor(x) and not hasattr(x, "numpy"):  # symbolic, inside a traced function
            shape = tuple(x.shape[1:])
            if len(shape) != 3 or any(s is not None and s != e for s, e in zip(shape, self.image_shape)):
                raise UserError(f"inputs must be [n, {expected}] for this model, got {tuple(x.shape)}")
            return tf.cast(x, tf.float32)
        model_ready = tf.is_tensor(x) and x.dtype.is_floating
        array = x.numpy() if tf.is_tensor(x) else np.asarray(x)
        if self.image_shape[-1] == 1 and tuple(array.shape[1:]) == self.image_shape[:-1]:
            array = array[..., np.newaxis]  # [n, h, w] of a one-channel model
        if array.ndim != len(self.image_shape) + 1 or tuple(array.shape[1:]) != self.image_shape:
            raise UserError(f"inputs must be [n, {expected}] for this model, got shape {np.shape(x)}")
        if array.shape[0] == 0:
            raise UserError(f"inputs hold no images (shape {np.shape(x)}); pass at least one")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise UserError("inputs hold NaN or infinite values; pass finite images (uint8 0..255 or floats in [0, 1])")
        if model_ready:
            return tf.cast(x, tf.float32) if x.shape.rank == 4 else tf.constant(array, tf.float32)
        images = data_lib.to_unit_interval(array, "inputs")
        if self.likelihood_head.binarize:
            return tf.constant(data_lib.binarize_fixed(images, binarization_seed))
        return tf.constant(images)

    def _encode_without_kl(self, x) -> tfd.Distribution:
        """q(z|x) without the posterior layer's KL loss (the VampPrior's components).

        Batch normalisation runs in inference mode here, so pseudo-inputs never
        change its moving statistics.
        """
        params = self.posterior_params(self.encoder(x, training=False))
        return posterior_distribution(params, self.latent_dims[-1], self.config.posterior)

    def _kl_test_points(self, posterior):
        seed = getattr(self._sampling, "seed", None)
        seed = tf.constant(_DEFAULT_KL_SEED, tf.int32) if seed is None else seed
        return sample_posterior(posterior, seed, getattr(self._sampling, "rows", None))

    def posterior(self, x, training=False, seed=None, rows=None) -> tfd.Distribution:
        """q(z|x) for images x (see `prepare_inputs`): batch [n], event [d]
        (in a hierarchy the joint q(z_L|x) q(z_(L-1)|x, z_L) ... over z = [z_1, ..., z_L]).

        Side effect: the posterior layer's `losses` hold kl_weight * mean KL
        (of the top level); for priors without an analytic KL, a one-sample
        estimate at z = sample_posterior(q, seed, rows) (seed default (0, 0)).
        """
        features, top = self._encode(self.prepare_inputs(x), training, seed, rows)
        return self._joint_posterior(features, top)

    def _encode(self, x, training=False, seed=None, rows=None):
        """(encoder features [n, f], q(z_L|x) from the posterior layer)."""
        self._sampling.seed, self._sampling.rows = seed, rows
        try:
            features = self.encoder(x, training=training)
            return features, self.posterior_layer(self.posterior_params(features))
        finally:
            self._sampling.seed = self._sampling.rows = None

    def likelihood(self, z, training=False) -> tfd.Distribution:
        """p(x|z) for latents z [n, d]: batch [n], event [h, w, c]."""
        return self.likelihood_head.distribution(self.decoder(z, training=training))

    def elbo_terms(self, x, seed=None, training=False, rows=None) -> "ElboTerms":
        """The one-sample ELBO of model-ready images x [n, h, w, c] with what it
        was computed from: q(z|x), p(z) and z ~ q [n, d], drawn with `seed`
        (`sample_posterior`; a random seed if None).

        The KL is the tensor the posterior layer's regularizer computed in
        this call (analytic, or log q(z|x) - log p(z) at the same z as the
        reconstruction), and p(z) the prior it built, so neither is computed
        twice (a VampPrior encodes its pseudo-inputs once).
        """
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        likelihood = lambda z: self.likelihood(z, training=training)  # noqa: E731
        features, top = self._encode(x, training, seed, rows)
        if not self.levels:
            kl, prior = self.posterior_layer.activity_regularizer.last()  # [n], p(z)
            z = sample_posterior(top, seed, rows)  # [n, d]
            parts = objectives.elbo_parts(x, top, prior, likelihood, z=z, kl=kl)
            return ElboTerms(parts, top, prior, z, features=features, top=top)
        kl, prior = self.posterior_layer.activity_regularizer.last()  # [n], p(z_L)
        drawn = self._sample_levels(features, top, seed, rows)  # [(q, z)], bottom first
        levels = []
        for index, (level_posterior, z) in enumerate(drawn[:-1]):
            level_prior = self.levels[index].prior(drawn[index + 1][1])
            # [n], analytic given the sampled level above
            levels.append(hierarchy.LevelTerms(level_posterior, level_prior, z,
                                               kl_divergence(level_posterior, level_prior)))
        levels.append(hierarchy.LevelTerms(top, prior, drawn[-1][1], kl))
        z = tf.concat([level.z for level in levels], axis=-1)  # [n, D]
        parts = objectives.elbo_parts(x, None, None, likelihood, z=z, kl=tf.add_n([level.kl for level in levels]))
        return ElboTerms(parts, self._joint_posterior(features, top), self._joint_prior(prior), z, tuple(levels),
                         features=features, top=top)

    def elbo(self, x, seed=None, training=False) -> objectives.ElboParts:
        """One-sample ELBO per example, [n] each, in nats (KL weight 1, no free bits).

        Without an analytic KL, the KL part is log q(z|x) - log p(z) at the
        same z as the reconstruction, so the ELBO estimate stays unbiased.
        """
        return self.elbo_terms(self.prepare_inputs(x), seed, training).parts

    def importance_sampling(self, x, num_samples, seed, sample_chunk=0) -> objectives.ImportanceEstimate:
        """`objectives.importance_sampling` of model-ready images x [n, h, w, c]
        (int32 scalars num_samples and sample_chunk, seed [2]), compiled once."""
        return self._importance_sampling(tf.convert_to_tensor(x, tf.float32), seed, num_samples, sample_chunk)

    def _importance_sampling_graph(self, x, seed, num_samples, sample_chunk):
        posterior = self.posterior(x)
        _, prior = self.posterior_layer.activity_regularizer.last()  # built once, by the call above
        return objectives.importance_sampling(x, posterior, self._joint_prior(prior), self.likelihood, seed,
                                              num_samples, sample_chunk)

    def log_likelihood(self, x, num_samples: int = 1000, seed=(0, 0)) -> tf.Tensor:
        """Importance-weighted estimate of log p(x) per example, [n], nats.

        log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), K = num_samples
        (Burda et al., 2015): the estimator `evaluate.py` uses, computed in
        chunks of samples so memory does not grow with K.
        """
        num_samples = objectives.whole_number("num_samples", num_samples)
        return self.importance_sampling(self.prepare_inputs(x), tf.constant(num_samples),
                                        objectives.as_seed(seed), tf.constant(0)).log_likelihood

    def training_loss(self, x, seed=None, rows=None):
        """(loss, ElboParts): loss = -mean log p(x|z) + kl_weight * KL term (scalar, nats).

        The KL term is the posterior layer's regularizer loss (mean KL), or
        with free bits `objectives.free_bits_kl`. The parts are the true ELBO's.

        With rows = (offset, total), x holds rows offset .. offset + n - 1 of a
        global batch of `total` (one replica's share under tf.distribute), and
        the loss is this share's part of the global batch's loss:
        -sum log p(x|z) / total + (n / total) * KL term, with the free-bits
        means taken over the global batch; summed over the shares it is the loss above.
        """
        if self.train_samples:
            return self._iwae_training_loss(x, seed, rows)
        terms = self.elbo_terms(x, seed, training=True, rows=rows)
        parts, posterior, prior, levels = terms.parts, terms.posterior, terms.prior, terms.levels
        share = 1.0 if rows is None else tf.cast(tf.shape(x)[0], tf.float32) / tf.cast(rows[1], tf.float32)
        if self.free_bits > 0:
            batch_mean = tf.reduce_mean if rows is None else replicas.global_mean
            kl_loss = self.kl_weight * objectives.free_bits_kl(posterior, prior, parts.kl, self.free_bits,
                                                               batch_mean=batch_mean)
        else:
            kl_loss = tf.add_n(self.posterior_layer.losses)
            if levels:  # the lower levels' KLs, weighted as the regularizer weights the top's
                kl_loss += self.kl_weight * tf.reduce_mean(tf.add_n([level.kl for level in levels[:-1]]))
        if rows is None:
            return -tf.reduce_mean(parts.reconstruction) + kl_loss, parts
        return -tf.reduce_sum(parts.reconstruction) / tf.cast(rows[1], tf.float32) + share * kl_loss, parts

    def location(self, x, training=False) -> tf.Tensor:
        """The posterior's location [n, D] for images x (see `prepare_inputs`): the
        mean of q(z|x); in a hierarchy each level's conditional mean at the
        location of the level above (the mean itself has no closed form)."""
        terms = self.elbo_terms(self.prepare_inputs(x), seed=tf.constant(_DEFAULT_KL_SEED), training=training)
        return self.latent_statistics(terms).location

    def latent_statistics(self, terms: "ElboTerms") -> "LatentStatistics":
        """Per-dimension statistics of the posterior behind an `elbo_terms` result."""
        if not terms.levels:
            return LatentStatistics(
                location=terms.posterior.mean(), stddev=terms.posterior.stddev(),
                kl_per_dimension=kl_per_dimension(terms.posterior, terms.prior, terms.z),
                total_correlation=total_correlation(terms.posterior))
        levels, location = terms.levels, [terms.top.mean()]  # each level's mean at the location above
        for index in range(len(self.levels) - 1, -1, -1):
            location.insert(0, self.levels[index].posterior(terms.features, location[0]).mean())
        return LatentStatistics(
            location=tf.concat(location, axis=-1),
            stddev=tf.concat([level.posterior.stddev() for level in levels], axis=-1),
            kl_per_dimension=tf.concat([kl_per_dimension(level.posterior, level.prior, level.z) for level in levels],
                                       axis=-1),
            total_correlation=tf.add_n([total_correlation(level.posterior) for level in levels]))

    def _iwae_training_loss(self, x, seed, rows):
        """(loss, ElboParts) of the importance-weighted objective: loss = -mean_n L_K(x_n)
        with the KL weight inside each weight (`objectives.iwae_bound`); the parts
        are the true ELBO's, at sample 0 (the ELBO's own z, so no extra decoder pass)."""
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        terms = self.elbo_terms(x, seed, training=True, rows=rows)
        features = terms.features
        samples = [terms.z] + [self._joint_sample(features, terms.top, objectives.sample_seed(seed, k), rows)
                               for k in range(1, self.train_samples)]
        z = tf.stack(samples)  # [K, n, D]
        more = tf.reshape(z[1:], [-1, self.latent_dim])  # [(K - 1) n, D]
        tiled = tf.tile(x, [self.train_samples - 1, 1, 1, 1])
        log_px = tf.concat([terms.parts.reconstruction[tf.newaxis],
                            tf.reshape(self.likelihood(more, training=True).log_prob(tiled),
                                       [self.train_samples - 1, tf.shape(x)[0]])], axis=0)  # [K, n]
        log_weights = log_px + terms.prior.log_prob(z) - terms.posterior.log_prob(z)  # [K, n]
        bound = objectives.iwae_bound(log_weights, self.kl_weight, log_px)  # [n]
        if rows is None:
            return -tf.reduce_mean(bound), terms.parts
        return -tf.reduce_sum(bound) / tf.cast(rows[1], tf.float32), terms.parts

    def _joint_sample(self, features, top, seed, rows=None):
        """z = [z_1, ..., z_L] [n, D] drawn as `elbo_terms` draws it."""
        return tf.concat([z for _, z in self._sample_levels(features, top, seed, rows)], axis=-1)

    def _sample_levels(self, features, top, seed, rows=None):
        """[(q(z_l | x, z_(l+1)), z_l)] for l = 1 .. L, drawn from the top level down:
        z_L with `seed`, z_l with `sample_seed(seed, l)`."""
        posterior, z = top, sample_posterior(top, seed, rows)
        drawn = [(posterior, z)]
        for index in range(len(self.levels) - 1, -1, -1):
            posterior = self.levels[index].posterior(features, z)
            z = sample_posterior(posterior, objectives.sample_seed(seed, index + 1), rows)
            drawn.insert(0, (posterior, z))
        return drawn

    def decode(self, z) -> tf.Tensor:
        """The mean of p(x|z) for latents z [n, D]: images [n, h, w, c]
        (`likelihood(z)` is the distribution itself)."""
        return self.likelihood(tf.convert_to_tensor(z, tf.float32)).mean()

    def sample(self, num_samples: int, seed=0) -> "Samples":
        """`Samples` (z, mean, x) of num_samples draws z ~ p(z), x ~ p(x|z), from
        the stateless seed `seed` (an int or a pair): the same seed, the same draws."""
        num_samples = objectives.whole_number("num_samples", num_samples)
        latent_seed, image_seed = tf.unstack(tf.random.experimental.stateless_split(objectives.as_seed(seed), 2))
        z = self.prior.sample(num_samples, seed=latent_seed)
        likelihood = self.likelihood(z)
        return Samples(z, likelihood.mean(), tf.cast(likelihood.sample(seed=image_seed), tf.float32))

    def call(self, x, training=False):
        """Mean of p(x|z) at the posterior's location: a deterministic reconstruction [n, h, w, c]."""
        if not self.levels:
            posterior = self.posterior(x, training=training)
            return self.likelihood(posterior.mean(), training=training).mean()
        return self.likelihood(self.location(x, training=training), training=training).mean()


def encode(vae: VAE, images, batch_size: int = 1000, binarization_seed: int = 0) -> Encoding:
    """The posterior parameters of every image, as arrays: `Encoding(loc, scale)`,
    [n, D] each (float32), `batch_size` images at a time.

    Args:
      vae: the model.
      images: images as `VAE.prepare_inputs` takes them (uint8 0..255, floats
        in [0, 1], NumPy or tensors); Bernoulli models binarize them once from
        `binarization_seed`, as held-out evaluation does.
    """
    batch_size = objectives.whole_number("batch_size", batch_size)
    x = vae.prepare_inputs(images, binarization_seed)
    locs, scales = [], []
    for start in range(0, int(x.shape[0]), batch_size):
        terms = vae.elbo_terms(x[start: start + batch_size], seed=tf.constant(_DEFAULT_KL_SEED))
        latent = vae.latent_statistics(terms)
        locs.append(latent.location.numpy())
        scales.append(latent.stddev.numpy())
    return Encoding(np.concatenate(locs), np.concatenate(scales))
