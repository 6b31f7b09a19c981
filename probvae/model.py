"""The VAE: a prior p(z), a posterior layer q(z|x) and a likelihood p(x|z).

    x --encoder--> features --dense--> params --posterior layer--> q(z_L|x)
    z_L ~ q(z_L|x), z_l ~ q(z_l|x, z_(l+1)) for l < L (probvae.hierarchy)
    z = [z_1, ..., z_L] --decoder--> pixel params --likelihood head--> p(x|z)

A one-level model is a hierarchy of one level (L = 1): every method below
walks the levels the same way, whatever their number.

The posterior layer carries a `KLDivergenceRegularizer` toward the prior of
the top level. `elbo_terms` calls it with everything it needs, explicitly:
the step's stateless seed and replica rows (for a prior without a closed-form
KL, whose one-sample estimate log q(z|x) - log p(z) is taken at the very z the
ELBO's reconstruction uses) and p(z_L), built once per call (a VampPrior
encodes its pseudo-inputs to build it). The layer's `losses` then hold
kl_weight * mean KL, which the training loss uses (`probvae.losses`); the
ELBO's per-example KL is `kl_divergence(q, p, z)` of the same q, p and z.
`elbo(x)` always reports the true ELBO (KL weight 1, no free bits).

Posterior samples are `distributions.sample_posterior`: example n of a batch
of N draws column n of one [d, N] standard normal (the draw of TFP's own
`q.sample(seed=seed)`, so one device samples as TFP does). Under
tf.distribute a replica holds rows offset .. offset + n - 1 of the global
batch (`rows`), so any split of a batch computes what one device would.

Seeds: every method that draws takes `seed` as an int or a pair of ints (or
an int32 tensor [2]), as TFP does; None draws a fresh one.

Inputs: images in the dataset's raw form are checked and prepared as
evaluation prepares them (`probvae.inputs.prepare_inputs`).

Example:

    vae = VAE(ModelConfig(latent_dim=2, image_shape=(28, 28, 1)))
    q = vae.posterior(x)              # tfd.Distribution: batch [n], event [2]
    p_x = vae.likelihood(q.sample())  # batch [n], event [28, 28, 1]
    parts = vae.elbo(x, seed=1)       # ElboParts of [n] tensors, nats
"""

from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from probvae import checks, hierarchy, inputs, losses, networks, objectives, seeds
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.distributions import (
    kl_divergence,
    posterior_distribution,
    posterior_input_size,
    posterior_layer,
)
from probvae.distributions.analysis import unwrap
from probvae.errors import UserError
from probvae.generation import Generation, Samples
from probvae.latents import Encoding, Inference, LatentStatistics, encode
from probvae.registry import LIKELIHOODS, PRIORS

tfd = tfp.distributions

__all__ = ["VAE", "ElboTerms", "LatentStatistics", "Samples", "Encoding", "encode"]


class _ElboTerms(NamedTuple):
    parts: objectives.ElboParts  # elbo, reconstruction, kl: [n] each, nats
    posterior: tfd.Distribution  # q(z|x): batch [n], event [D]
    prior: tfd.Distribution  # p(z): event [D]
    z: tf.Tensor  # [n, D], the sample of the reconstruction (and of a Monte Carlo KL)


class ElboTerms(_ElboTerms):
    """A one-sample ELBO and what it was computed from: (parts, posterior, prior, z).

    `levels` holds the `hierarchy.LevelTerms` of every level, bottom level
    first (one for a one-level model), `features` the features of x the lower
    levels read [n, f] (the encoder's output, or `level_encoder`'s if the network has one)
    and `top` q(z_L|x); they are attributes, so the terms still unpack as four.

    Examples:
      >>> terms = vae.elbo_terms(vae.prepare_inputs(x), seed=1)
      >>> print(terms._fields, len(terms.levels), terms.features.shape, terms.top.event_shape)
      ('parts', 'posterior', 'prior', 'z') 1 (3, 8) (2,)
    """

    def __new__(cls, parts, posterior, prior, z, levels=(), features=None, top=None):
        terms = super().__new__(cls, parts, posterior, prior, z)
        terms.levels, terms.features, terms.top = tuple(levels), features, top
        return terms


def _seed(seed) -> tf.Tensor:
    """A stateless seed [2] from an int, a pair or a tensor; a fresh one for None."""
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    return seeds.as_seed(seed)


class VAE(Inference, Generation, keras.Model):
    """A variational autoencoder built from a `ModelConfig`.

    Args:
      config: the `ModelConfig` (its image_shape must be set).
      kl_weight: initial weight of the KL term in the training loss (beta);
        the `kl_weight` variable can be changed later (warm-up).
      free_bits: nats per latent dimension the training loss's KL term leaves
        free (`objectives.free_bits_kl`); 0 for none.
      train_samples: K >= 1 trains on the importance-weighted bound of K
        samples (`objectives.iwae_bound`); 0 trains on the ELBO.

    Its generative methods (`sample`, `decode`, `call`) are
    `probvae.generation.Generation`'s; `location`, `latent_statistics` and
    `joint_sample` are `probvae.latents.Inference`'s.

    Examples:
      A tiny model and three raw images, which the examples of its methods use:

      >>> import numpy as np
      >>> from probvae import ModelConfig, VAE
      >>> vae = VAE(ModelConfig(arch="mlp", hidden_units=(8,), latent_dim=2, image_shape=(4, 4, 1)))
      >>> x = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
      >>> vae.latent_dims, vae.image_shape, vae.config.prior
      ((2,), (4, 4, 1), 'standard_normal')
    """

    def __init__(self, config: ModelConfig, kl_weight: float = 1.0, free_bits: float = 0.0,
                 train_samples: int = 0, **kwargs):
        super().__init__(name="vae", **kwargs)
        checks.require(isinstance(config, ModelConfig), f"VAE takes a ModelConfig, got {type(config).__name__}; "
                       "e.g. VAE(ModelConfig(latent_dim=2, image_shape=(28, 28, 1)))")
        checks.non_negative_number("kl_weight", kl_weight)
        checks.non_negative_number("free_bits", free_bits)
        checks.non_negative("train_samples", train_samples, whole=True)
        if config.image_shape is None:
            raise UserError("ModelConfig.image_shape is not set; it comes from the data")
        self.config = config
        self.image_shape = tuple(config.image_shape)
        self.free_bits = float(free_bits)
        self.train_samples = int(train_samples)  # K > 0: the importance-weighted objective
        self.latent_dims = tuple(config.latent_dims)  # [d_1, ..., d_L], bottom level first
        top = self.latent_dims[-1]
        # Weight of the KL loss the posterior layer adds (beta, warm-up).
        self.kl_weight = tf.Variable(float(kl_weight), trainable=False, dtype=tf.float32, name="kl_weight")
        self.encoder = networks.encoder(config)
        # The lower levels' own network of x, if the network family has one (None: they read the encoder's).
        self.level_encoder = networks.level_encoder(config)
        self.posterior_params = keras.layers.Dense(
            posterior_input_size(top, config), dtype="float32", name="posterior_params")
        # p(z_L): its variables (if any) live in this layer, so they train and checkpoint.
        self.prior_layer = PRIORS[config.prior].load().for_model(config.one_level(top), encode=self._encode_top)
        self.posterior_layer = posterior_layer(top, self.prior_layer.distribution, covariance=config.posterior,
                                               kl_weight=self.kl_weight, use_exact_kl=self.prior_layer.analytic_kl,
                                               config=config)
        # The levels below the top, bottom (z_1) first (probvae.hierarchy); none for one level.
        self.levels = [hierarchy.Level(config, d, index + 1) for index, d in enumerate(self.latent_dims[:-1])]
        self.likelihood_head = LIKELIHOODS[config.likelihood].load().for_model(config)
        self.decoder = networks.decoder(config, self.likelihood_head.decoder_channels)
        image = tf.TensorSpec([None] + list(self.image_shape), tf.float32)
        count = tf.TensorSpec([], tf.int32)
        self._importance_sampling = tf.function(
            self._importance_sampling_graph, input_signature=[image, tf.TensorSpec([2], tf.int32), count, count],
            autograph=False)
        # Create every variable now (in the order of one ELBO pass), so checkpoints restore completely.
        self.elbo_terms(tf.zeros((1,) + self.image_shape), seed=(0, 0))
        self(tf.zeros((1,) + self.image_shape))

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) from the current prior variables: batch shape [], event shape [D]
        (the joint p(z_L) p(z_(L-1) | z_L) ... over z = [z_1, ..., z_L]).

        Examples:
          >>> print(type(vae.prior).__name__, vae.prior.batch_shape, vae.prior.event_shape)
          MultivariateNormalDiag () (2,)
        """
        return self._joint_prior(self.prior_layer.distribution())

    @property
    def latent_dim(self) -> int:
        """D, the size of z: d_1 + ... + d_L (d for one level).

        Examples:
          >>> vae.latent_dim, vae.latent_dims
          (2, (2,))
        """
        return sum(self.latent_dims)

    def _joint_prior(self, top: tfd.Distribution) -> tfd.Distribution:
        return hierarchy.chain(top, [level.prior for level in self.levels], self.latent_dims, "prior")

    def _joint_posterior(self, features, top: tfd.Distribution) -> tfd.Distribution:
        return hierarchy.chain(top, [lambda z_above, level=level: level.posterior(features, z_above)
                                     for level in self.levels], self.latent_dims, "posterior")

    @tf.autograph.experimental.do_not_convert
    def prepare_inputs(self, x, binarization_seed: int = 0) -> tf.Tensor:
        """Images as the model computes on them, float32 [n, h, w, c]
        (`probvae.inputs.prepare_inputs`, binarized once from `binarization_seed`
        for a Bernoulli likelihood).

        Raises:
          UserError: no images, a shape that does not fit the model, NaN or
            infinite values, values out of range, or an unknown dtype.

        Examples:
          >>> prepared = vae.prepare_inputs(x)  # uint8 [3, 4, 4], binarized for the Bernoulli likelihood
          >>> print(prepared.shape, prepared.dtype.name, np.unique(prepared.numpy()))
          (3, 4, 4, 1) float32 [0. 1.]
        """
        head = self.likelihood_head
        return inputs.prepare_inputs(x, self.image_shape, head.binarize, head.unit_interval, binarization_seed)

    def _top_posterior(self, features) -> tfd.Distribution:
        """q(z_L|x) from encoder features [n, f], without the posterior layer's KL loss."""
        return self.posterior_layer.distribution(self.posterior_params(features))

    def _encode_levels(self, x, training=False):
        """(features, below) of model-ready images x [n, h, w, c]: the encoder's
        features [n, f], which give q(z_L|x), and the features of x the lower
        levels read [n, f_l]: the level encoder's, else the same features."""
        features = self.encoder(x, training=training)
        if self.level_encoder is None:
            return features, features
        return features, self.level_encoder(x, training=training)

    def _encode_top(self, x, training=False) -> tfd.Distribution:
        """(q(z_L|x) without the posterior layer's KL loss): the VampPrior's components
        (batch normalisation in inference mode, so pseudo-inputs never move its statistics);
        for a flow posterior its Gaussian (`flows.IAFPosterior.new`)."""
        params = self.posterior_params(self.encoder(x, training=training))
        return posterior_distribution(params, self.latent_dims[-1], self.config.posterior)

    def posterior(self, x, training=False) -> tfd.Distribution:
        """q(z|x) for images x (see `prepare_inputs`): a `tfd.Distribution` with batch
        [n], event [D] (the joint q(z_L|x) q(z_(L-1)|x, z_L) ... over z = [z_1, ..., z_L]).
        Adds no loss and draws nothing.

        Examples:
          >>> q = vae.posterior(x)
          >>> print(type(q).__name__, q.batch_shape, q.event_shape, q.sample(seed=(1, 2)).shape)
          MultivariateNormalDiag (3,) (2,) (3, 2)
        """
        features, below = self._encode_levels(self.prepare_inputs(x), training=training)
        return self._joint_posterior(below, self._top_posterior(features))

    def likelihood(self, z, training=False) -> tfd.Distribution:
        """p(x|z) for latents z [n, D]: batch [n], event [h, w, c].

        Examples:
          >>> p_x = vae.likelihood(tf.zeros([5, 2]))
          >>> print(type(p_x).__name__, p_x.batch_shape, p_x.event_shape, p_x.log_prob(vae.prepare_inputs(x)[:1]).shape)
          Independent (5,) (4, 4, 1) (5,)
        """
        return self.likelihood_head.distribution(self.decoder(z, training=training))

    def elbo_terms(self, x, seed=None, training=False, rows=None) -> "ElboTerms":
        """The one-sample ELBO of model-ready images x [n, h, w, c] with what it
        was computed from: q(z|x), p(z) and z ~ q [n, D], drawn with `seed` (an
        int, a pair or an int32 tensor [2]; a fresh one if None), z_L by
        `sample_posterior` and each lower level from `sample_seed(seed, l)`.

        Calls the posterior layer, whose `losses` then hold kl_weight * mean KL
        of the top level at this seed and rows (`probvae.losses`).

        Examples:
          >>> parts, q, p, z = vae.elbo_terms(vae.prepare_inputs(x), seed=(1, 2))
          >>> print(parts.elbo.shape, z.shape, len(vae.elbo_terms(vae.prepare_inputs(x), seed=1).levels))
          (3,) (3, 2) 1
        """
        seed = _seed(seed)
        features, below = self._encode_levels(x, training=training)
        prior_top = self.prior_layer.distribution()  # built once (a VampPrior encodes its pseudo-inputs)
        top = unwrap(self.posterior_layer(self.posterior_params(features), seed=seed, rows=rows, prior=prior_top))
        drawn = self.sample_levels(below, top, seed, rows)  # [(q_l, z_l)], bottom first
        priors = [level.prior(above) for level, (_, above) in zip(self.levels, drawn[1:])] + [prior_top]
        levels = tuple(hierarchy.LevelTerms(q, p, z, kl_divergence(q, p, z)) for (q, z), p in zip(drawn, priors))
        z = tf.concat([level.z for level in levels], axis=-1)  # [n, D]
        likelihood = lambda z: self.likelihood(z, training=training)  # noqa: E731
        parts = objectives.elbo_parts(x, None, None, likelihood, z=z, kl=tf.add_n([level.kl for level in levels]))
        return ElboTerms(parts, self._joint_posterior(below, top), self._joint_prior(prior_top), z, levels,
                         features=below, top=top)

    def elbo(self, x, seed=None, training=False) -> objectives.ElboParts:
        """One-sample ELBO per example, [n] each, in nats (KL weight 1, no free bits).

        Without an analytic KL, the KL part is log q(z|x) - log p(z) at the
        same z as the reconstruction, so the ELBO estimate stays unbiased.

        Examples:
          >>> parts = vae.elbo(x, seed=1)  # ElboParts(elbo, reconstruction, kl)
          >>> print(parts.elbo.shape, parts.elbo.dtype.name, bool(tf.reduce_all(parts.elbo <= 0)))  # binary pixels
          (3,) float32 True
          >>> bool(tf.reduce_all(parts.elbo == vae.elbo(x, seed=(1, 0)).elbo))  # an int s is the pair (s, 0)
          True
        """
        return self.elbo_terms(self.prepare_inputs(x), seed, training).parts

    def training_loss(self, x, seed=None, rows=None):
        """(loss, ElboParts) of the training objective, scalar loss in nats
        (`probvae.losses.training_loss`; rows = (offset, total) under tf.distribute).

        Examples:
          >>> loss, parts = vae.training_loss(vae.prepare_inputs(x), seed=1)
          >>> loss.shape, abs(float(loss) + float(tf.reduce_mean(parts.elbo))) < 1e-3  # kl_weight 1: -mean ELBO
          (TensorShape([]), True)
        """
        return losses.training_loss(self, x, seed, rows)

    def importance_sampling(self, x, num_samples, seed, sample_chunk=0) -> objectives.ImportanceEstimate:
        """`objectives.importance_sampling` of model-ready images x [n, h, w, c]
        (int32 scalars num_samples and sample_chunk, seed an int or a pair), compiled once.

        Examples:
          >>> estimate = vae.importance_sampling(vae.prepare_inputs(x), num_samples=4, seed=0)
          >>> print(estimate.log_likelihood.shape)
          (3,)
        """
        return self._importance_sampling(tf.convert_to_tensor(x, tf.float32), seeds.as_seed(seed),
                                         tf.convert_to_tensor(num_samples, tf.int32),
                                         tf.convert_to_tensor(sample_chunk, tf.int32))

    def _importance_sampling_graph(self, x, seed, num_samples, sample_chunk):
        features, below = self._encode_levels(x)
        top = self._top_posterior(features)
        return objectives.importance_sampling(x, self._joint_posterior(below, top), self.prior, self.likelihood,
                                              seed, num_samples, sample_chunk)

    def log_likelihood(self, x, num_samples: int = 1000, seed=0) -> tf.Tensor:
        """Importance-weighted estimate of log p(x) per example, [n], nats.

        log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), K = num_samples
        (Burda et al., 2015): the estimator `evaluate.py` uses, computed in
        chunks of samples so memory does not grow with K.

        Examples:
          >>> log_px = vae.log_likelihood(x, num_samples=5, seed=0)
          >>> print(log_px.shape, log_px.dtype.name, bool(tf.reduce_all(log_px == vae.log_likelihood(x, 5, seed=0))))
          (3,) float32 True
        """
        x = self.prepare_inputs(x)
        num_samples = checks.importance_samples(num_samples, int(x.shape[0] or 0), fix="ask for fewer, or call "
                                                "probvae.evaluation.log_likelihood(..., force=True)")
        return self.importance_sampling(x, num_samples, seed, 0).log_likelihood
