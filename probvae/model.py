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

Inputs: a `tf.Tensor` is taken as model-ready (float32 [n, h, w, c] in [0, 1],
binarized for a Bernoulli likelihood). A NumPy array may be in the dataset's
raw form (uint8 0..255 or float 0..1, with or without the channel axis): the
model checks its shape and range and prepares it as evaluation does, binarizing
it once with a fixed seed for a Bernoulli likelihood (`prepare_inputs`).

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
from probvae import networks, objectives, replicas
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.distributions import posterior_distribution, posterior_layer, posterior_params_size, sample_posterior
from probvae.errors import UserError
from probvae.registry import LIKELIHOODS, PRIORS

tfd = tfp.distributions

__all__ = ["VAE", "ElboTerms"]

# Seed of the Monte Carlo KL sample when `posterior(x)` is called without one.
_DEFAULT_KL_SEED = (0, 0)


class ElboTerms(NamedTuple):
    """A one-sample ELBO and what it was computed from."""

    parts: objectives.ElboParts  # elbo, reconstruction, kl: [n] each, nats
    posterior: tfd.Distribution  # q(z|x): batch [n], event [d]
    prior: tfd.Distribution  # p(z): event [d]
    z: tf.Tensor  # [n, d], the sample of the reconstruction (and of a Monte Carlo KL)


class VAE(keras.Model):
    """A variational autoencoder built from a `ModelConfig`.

    Args:
      config: the `ModelConfig` (its image_shape must be set).
      kl_weight: initial weight of the KL term in the training loss (beta);
        the `kl_weight` variable can be changed later (warm-up).
      free_bits: nats per latent dimension the training loss's KL term leaves
        free (`objectives.free_bits_kl`); 0 for none.
    """

    def __init__(self, config: ModelConfig, kl_weight: float = 1.0, free_bits: float = 0.0, **kwargs):
        super().__init__(name="vae", **kwargs)
        if config.image_shape is None:
            raise UserError("ModelConfig.image_shape is not set; it comes from the data")
        self.config = config
        self.image_shape = tuple(config.image_shape)
        self.free_bits = float(free_bits)
        d = config.latent_dim
        # Weight of the KL loss the posterior layer adds (beta, warm-up).
        self.kl_weight = tf.Variable(float(kl_weight), trainable=False, dtype=tf.float32, name="kl_weight")
        self.encoder = networks.encoder(config)
        self.posterior_params = keras.layers.Dense(
            posterior_params_size(d, config.posterior), dtype="float32", name="posterior_params"
        )
        # The prior's variables (if any) live in this layer, so they train and checkpoint.
        self.prior_layer = PRIORS[config.prior].load().for_model(config, encode=self._encode_without_kl)
        # The seed and rows of the current call's posterior sample: the KL
        # regularizer draws z ~ q with those the ELBO uses, so both see one z.
        # Per thread: tf.distribute builds each replica's step in its own thread.
        self._sampling = threading.local()
        analytic = self.prior_layer.analytic_kl
        self.posterior_layer = posterior_layer(
            d, lambda: self.prior, covariance=config.posterior, kl_weight=self.kl_weight,
            use_exact_kl=analytic, test_points_fn=None if analytic else self._kl_test_points,
        )
        self.likelihood_head = LIKELIHOODS[config.likelihood].load().for_model(config)
        self.decoder = networks.decoder(config, self.likelihood_head.decoder_channels)
        image = tf.TensorSpec([None] + list(self.image_shape), tf.float32)
        count = tf.TensorSpec([], tf.int32)
        self._importance_sampling = tf.function(
            self._importance_sampling_graph, input_signature=[image, tf.TensorSpec([2], tf.int32), count, count])
        # Create every variable now, so checkpoints restore into a complete model.
        self(tf.zeros((1,) + self.image_shape))

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) from the current prior variables: batch shape [], event shape [latent_dim]."""
        return self.prior_layer.distribution()

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def prepare_inputs(self, x, binarization_seed: int = 0) -> tf.Tensor:
        """Images as the model computes on them: float32 [n, h, w, c] in [0, 1].

        Tensors pass through (after a shape check). NumPy arrays (uint8 0..255
        or float 0..1, [n, h, w] or [n, h, w, c]) are scaled and, for a
        Bernoulli likelihood, binarized once from `binarization_seed`.

        Raises:
          UserError: the shape does not fit the model or values are out of range.
        """
        if tf.is_tensor(x):
            shape = tuple(x.shape[1:])
            if len(shape) != 3 or any(s is not None and s != e for s, e in zip(shape, self.image_shape)):
                raise UserError(f"inputs must be [n, {', '.join(map(str, self.image_shape))}] for this model, got {tuple(x.shape)}")
            return tf.cast(x, tf.float32)
        images = data_lib.to_unit_interval(x, "inputs")
        if images.shape[1:] != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise UserError(f"inputs must be [n, {expected}] for this model, got shape {np.shape(x)}")
        if self.likelihood_head.binarize:
            return tf.constant(data_lib.binarize_fixed(images, binarization_seed))
        return tf.constant(images)

    def _encode_without_kl(self, x) -> tfd.Distribution:
        """q(z|x) without the posterior layer's KL loss (the VampPrior's components).

        Batch normalisation runs in inference mode here, so pseudo-inputs never
        change its moving statistics.
        """
        params = self.posterior_params(self.encoder(x, training=False))
        return posterior_distribution(params, self.latent_dim, self.config.posterior)

    def _kl_test_points(self, posterior):
        seed = getattr(self._sampling, "seed", None)
        seed = tf.constant(_DEFAULT_KL_SEED, tf.int32) if seed is None else seed
        return sample_posterior(posterior, seed, getattr(self._sampling, "rows", None))

    def posterior(self, x, training=False, seed=None, rows=None) -> tfd.Distribution:
        """q(z|x) for images x (see `prepare_inputs`): batch [n], event [d].

        Side effect: the posterior layer's `losses` hold kl_weight * mean KL;
        for priors without an analytic KL, a one-sample estimate at
        z = sample_posterior(q, seed, rows) (seed default (0, 0)).
        """
        self._sampling.seed, self._sampling.rows = seed, rows
        try:
            features = self.encoder(self.prepare_inputs(x), training=training)
            return self.posterior_layer(self.posterior_params(features))
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
        posterior = self.posterior(x, training=training, seed=seed, rows=rows)
        kl, prior = self.posterior_layer.activity_regularizer.last()  # [n], p(z)
        z = sample_posterior(posterior, seed, rows)  # [n, d]
        parts = objectives.elbo_parts(x, posterior, prior, lambda z: self.likelihood(z, training=training), z=z,
                                      kl=kl)
        return ElboTerms(parts, posterior, prior, z)

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
        return objectives.importance_sampling(x, posterior, prior, self.likelihood, seed, num_samples, sample_chunk)

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
        parts, posterior, prior, _ = self.elbo_terms(x, seed, training=True, rows=rows)
        share = 1.0 if rows is None else tf.cast(tf.shape(x)[0], tf.float32) / tf.cast(rows[1], tf.float32)
        if self.free_bits > 0:
            batch_mean = tf.reduce_mean if rows is None else replicas.global_mean
            kl_loss = self.kl_weight * objectives.free_bits_kl(posterior, prior, parts.kl, self.free_bits,
                                                               batch_mean=batch_mean)
        else:
            kl_loss = tf.add_n(self.posterior_layer.losses)
        if rows is None:
            return -tf.reduce_mean(parts.reconstruction) + kl_loss, parts
        return -tf.reduce_sum(parts.reconstruction) / tf.cast(rows[1], tf.float32) + share * kl_loss, parts

    def call(self, x, training=False):
        """Mean of p(x|z) at the posterior mean: a deterministic reconstruction [n, h, w, c]."""
        posterior = self.posterior(x, training=training)
        return self.likelihood(posterior.mean(), training=training).mean()
