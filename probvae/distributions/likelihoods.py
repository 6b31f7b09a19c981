"""Likelihoods p(x|z) over whole images.

A likelihood head turns the decoder's output, a tensor of per-pixel parameters
[n, height, width, channels], into a distribution with batch shape [n] and
event shape [height, width, channels]: the pixels are folded into the event
with `tfd.Independent`, so `log_prob(x)` is the log-density of a whole image in
nats.

- Bernoulli: x in {0, 1}; the decoder gives logits. log p(x|z) = sum over pixels
  of x * logit - softplus(logit).
- Normal: x in [0, 1] treated as continuous; the decoder gives the mean and the
  standard deviation is a learned parameter, one shared value, one per channel
  or one per pixel: scale = softplus(raw) + 1e-3, so it cannot underflow.
  Its log_prob is a density and is not comparable with Bernoulli log-probs.
- Continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019): x in [0, 1] treated
  as continuous; the decoder gives logits, lambda = sigmoid(logit), and

      p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x),
      C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)   (C(1/2) = 2),

  a proper density on [0, 1] (the Bernoulli "log-likelihood" of grey levels
  that plain VAEs use lacks log C). Its mean is not lambda:
  lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda)).

The likelihood decides the preprocessing: its registry entry's `binarize`
trait (`probvae.registry.LIKELIHOODS`) is True only for the Bernoulli; the
head's `binarize` reads that trait for the model, training and evaluation,
and the model config records it (`ModelConfig.binarize`).

References:
  Loaiza-Ganem & Cunningham (2019), The continuous Bernoulli: fixing a
  pervasive error in variational autoencoders. NeurIPS.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.errors import UserError
from probvae.registry import LIKELIHOODS

tfd = tfp.distributions

__all__ = [
    "NORMAL_SCALE_FLOOR",
    "LogitBernoulli",
    "bernoulli",
    "continuous_bernoulli",
    "normal",
    "LikelihoodHead",
    "BernoulliHead",
    "ContinuousBernoulliHead",
    "NormalHead",
    "make_likelihood_head",
]

# Smallest standard deviation of the Normal likelihood.
NORMAL_SCALE_FLOOR = 1e-3


class LogitBernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli` with a log-density that costs one softplus per pixel.

    TFP's Bernoulli computes both log p(0) = -softplus(l) and log p(1) =
    -softplus(-l) for every pixel and mixes them; over a decoder's 784 logits
    per image, for thousands of importance samples, those transcendentals
    cost as much as the decoder. Here, with b = [x > 1/2],

        log p(x | l) = -softplus(l if b = 0 else -l) + (x - b) * l,

    which for binary x is bit for bit TFP's value (the second term is an
    exact zero, also for infinite logits) and for x in [0, 1] its
    interpolation x * l - softplus(l) (to rounding). Everything else is
    `tfd.Bernoulli`'s.

    Examples:
      >>> logits, x = tf.constant([-30.0, -1.5, 0.0, 2.0]), tf.constant([1.0, 0.0, 1.0, 1.0])
      >>> ours = LogitBernoulli(logits=logits, dtype=tf.float32).log_prob(x)
      >>> bool(tf.reduce_all(ours == tfd.Bernoulli(logits=logits, dtype=tf.float32).log_prob(x)))
      True
    """

    def _log_prob(self, event):
        logits = self._logits_parameter_no_checks()
        event = tf.cast(event, logits.dtype)
        binary = event > 0.5
        return -tf.math.softplus(tf.where(binary, -logits, logits)) + tf.math.multiply_no_nan(
            logits, event - tf.cast(binary, logits.dtype))


def bernoulli(logits) -> tfd.Distribution:
    """Independent Bernoulli pixels from logits [n, h, w, c]; event shape [h, w, c].

    Examples:
      >>> p = bernoulli(tf.zeros([3, 4, 4, 1]))
      >>> print(p.batch_shape, p.event_shape, np.round(p.log_prob(tf.ones([3, 4, 4, 1])).numpy(), 2))  # 16 log 1/2
      (3,) (4, 4, 1) [-11.09 -11.09 -11.09]
    """
    logits = tf.cast(logits, tf.float32)
    return tfd.Independent(
        LogitBernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=3
    )


def continuous_bernoulli(logits) -> tfd.Distribution:
    """Independent continuous Bernoulli pixels from logits [n, h, w, c]; event shape [h, w, c].

    Examples:
      >>> p = continuous_bernoulli(tf.fill([3, 4, 4, 1], np.log(3.0)))  # lambda = 3/4
      >>> # log p(1/2) = 16 (log C + log(3/4 * 1/4) / 2), C = 2 artanh(1/2) / (1/2) = 2 log 3
      >>> print(p.batch_shape, p.event_shape, np.round(p.log_prob(tf.fill([3, 4, 4, 1], 0.5)).numpy(), 2))
      (3,) (4, 4, 1) [-0.8 -0.8 -0.8]
    """
    logits = tf.cast(logits, tf.float32)
    return tfd.Independent(tfd.ContinuousBernoulli(logits=logits), reinterpreted_batch_ndims=3)


def normal(loc, scale) -> tfd.Distribution:
    """Independent Normal pixels; `scale` broadcasts against `loc` [n, h, w, c].

    Examples:
      >>> p = normal(tf.fill([3, 4, 4, 1], 0.5), 0.1)
      >>> # at the mean: 16 * (-log 0.1 - log(2 pi) / 2) nats, a density
      >>> print(p.batch_shape, p.event_shape, np.round(p.log_prob(tf.fill([3, 4, 4, 1], 0.5)).numpy(), 2))
      (3,) (4, 4, 1) [22.14 22.14 22.14]
    """
    loc = tf.cast(loc, tf.float32)
    scale = tf.broadcast_to(tf.cast(scale, tf.float32), tf.shape(loc))
    return tfd.Independent(tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=3)


class LikelihoodHead(keras.layers.Layer):
    """Maps decoder outputs [n, h, w, c] to p(x|z).

    Examples:
      >>> head = make_likelihood_head("bernoulli", (4, 4, 1))  # a LikelihoodHead subclass
      >>> isinstance(head, LikelihoodHead), head.binarize, head.unit_interval, head.decoder_channels
      (True, True, True, 1)
    """

    # Whether the likelihood's pixels lie in [0, 1] (model-ready inputs are checked against it).
    unit_interval = False

    @property
    def binarize(self) -> bool:
        """Whether the data this likelihood models are binarized pixels: the
        `binarize` trait of the registry entry that names this class."""
        return any(entry.trait("binarize", False) for entry in LIKELIHOODS.entries() if entry.load() is type(self))

    def __init__(self, image_shape, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.image_shape = tuple(int(s) for s in image_shape)

    @property
    def decoder_channels(self) -> int:
        """How many channels of parameters the decoder must output per pixel."""
        return self.image_shape[-1]

    @classmethod
    def for_model(cls, config) -> "LikelihoodHead":
        """The head a `ModelConfig` asks for (images of `config.image_shape`)."""
        return cls(config.image_shape, name="likelihood")

    def distribution(self, params) -> tfd.Distribution:
        raise NotImplementedError


class BernoulliHead(LikelihoodHead):
    """p(x|z) = prod Bernoulli(x_i; sigmoid(logit_i)).

    Examples:
      >>> p = BernoulliHead((4, 4, 1)).distribution(tf.zeros([3, 4, 4, 1]))  # logits
      >>> print(p.batch_shape, p.event_shape, np.round(p.mean().numpy().max(), 2))
      (3,) (4, 4, 1) 0.5
    """

    unit_interval = True

    def distribution(self, params):
        return bernoulli(params)


class ContinuousBernoulliHead(LikelihoodHead):
    """p(x|z) = prod CB(x_i; sigmoid(logit_i)), for grey levels in [0, 1].

    Examples:
      >>> head = ContinuousBernoulliHead((4, 4, 1))
      >>> p = head.distribution(tf.zeros([3, 4, 4, 1]))  # logits
      >>> print(head.binarize, p.batch_shape, p.event_shape)
      False (3,) (4, 4, 1)
    """

    unit_interval = True

    def distribution(self, params):
        return continuous_bernoulli(params)


class NormalHead(LikelihoodHead):
    """p(x|z) = prod N(x_i; loc_i, scale), scale learned: shared, per channel or per pixel.

    Examples:
      >>> head = NormalHead((4, 4, 3), scale="channel")  # one scale per channel, starting at 0.1
      >>> p = head.distribution(tf.zeros([2, 4, 4, 3]))  # the mean
      >>> print(head.raw_scale.shape, np.round(head.scale.numpy(), 3), p.event_shape)
      (3,) [0.1 0.1 0.1] (4, 4, 3)
    """

    _SCALE_SHAPES = {
        "shared": lambda shape: (),
        "channel": lambda shape: (shape[-1],),
        "pixel": lambda shape: tuple(shape),
    }

    def __init__(self, image_shape, scale="shared", initial_scale=0.1, **kwargs):
        super().__init__(image_shape, **kwargs)
        if scale not in self._SCALE_SHAPES:
            raise UserError(
                f"unknown normal_scale {scale!r}; choose one of: {', '.join(self._SCALE_SHAPES)}"
            )
        self.scale_kind = scale
        raw = np.log(np.expm1(initial_scale - NORMAL_SCALE_FLOOR)).astype(np.float32)
        self.raw_scale = self.add_weight(
            name="raw_scale",
            shape=self._SCALE_SHAPES[scale](self.image_shape),
            initializer=keras.initializers.Constant(raw),
            trainable=True,
            dtype="float32",
        )

    @classmethod
    def for_model(cls, config):
        return cls(config.image_shape, scale=config.normal_scale, name="likelihood")

    @property
    def scale(self):
        """The likelihood standard deviation, softplus(raw) + 1e-3."""
        return tf.math.softplus(self.raw_scale) + NORMAL_SCALE_FLOOR

    def distribution(self, params):
        return normal(params, self.scale)


def make_likelihood_head(name, image_shape, normal_scale="shared") -> LikelihoodHead:
    """The likelihood head registered as `name` (`probvae.registry.LIKELIHOODS`)
    for images of `image_shape`.

    Raises:
      UserError: for an unknown name, listing the known ones.

    Examples:
      >>> head = make_likelihood_head("normal", (4, 4, 1), normal_scale="pixel")
      >>> type(head).__name__, head.raw_scale.shape
      ('NormalHead', TensorShape([4, 4, 1]))
    """
    config = ModelConfig(likelihood=name, image_shape=tuple(image_shape), normal_scale=normal_scale)
    return LIKELIHOODS[name].load().for_model(config)
