"""The importance-weighted log-likelihood in sample chunks, compiled for speed.

For images x_j with q = q(z|x_j), K samples z_jk ~ q are drawn S at a time
(a chunk: S x n decoder rows), and a running logsumexp carries the sum, so
memory depends on S x n, never on K:

    log w_jk = log p(x_j|z_jk) + log p(z_jk) - log q(z_jk|x_j)
    LL_j     = logsumexp_k(log w_jk) - log K            (Burda et al., 2015)

What keeps a chunk close to the cost of the decoder alone:

- q draws the chunk's S samples in one call, with their log-density from the
  same draw (`experimental_sample_and_log_prob`: log q from the standard
  Normal noise and the log-determinant of the scale, so no triangular solve);
- log p(x|z) broadcasts the decoder's [S, n, ...] output against x [n, ...]
  instead of copying x S times;
- a Bernoulli log-density is summed in closed form from the logits l,

      log p(x|l) = sum_i x_i l_i - max(l_i, 0) - log(1 + exp(-|l_i|)),

  one exp and one log per pixel (TFP's `Bernoulli.log_prob` computes the
  same value with more passes over the S x n x pixels logits);
- the loop is one compiled graph, without XLA: at S x n = 1000 decoder rows
  TensorFlow's kernels run the decoder as fast as XLA does and the
  log-density faster (docs/performance.md).

The chunk size is static: K need not be a multiple of S, the samples of the
last chunk beyond K get weight 0 (log w = -inf).

Chunk c draws from the stateless seed fold_in(seed, c), so the estimate
depends on the seed, K and S.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from probvae.distributions import BernoulliHead
from probvae.errors import UserError

__all__ = ["CHUNK_ROWS", "bernoulli_log_prob", "chunk_log_weights", "chunked_log_likelihood"]

# Decoder rows (samples x images) per chunk when no sample chunk is given.
CHUNK_ROWS = 1024


def bernoulli_log_prob(logits, x):
    """log p(x|logits) of independent Bernoulli pixels, summed over [h, w, c]:
    x l - softplus(l) per pixel (also for x in [0, 1]), nats."""
    logits = tf.cast(logits, tf.float32)
    per_pixel = x * logits - tf.maximum(logits, 0.0) - tf.math.log(1.0 + tf.exp(-tf.abs(logits)))
    return tf.reduce_sum(per_pixel, axis=[-3, -2, -1])


def chunk_log_weights(model, x, posterior, num_samples: int, seed):
    """Log importance weights of `num_samples` fresh samples, [num_samples, n], nats."""
    z, log_q = posterior.experimental_sample_and_log_prob(num_samples, seed=seed)  # [S, n, d], [S, n]
    params = model.decoder(tf.reshape(z, [-1, z.shape[-1]]))  # [S * n, h, w, k]
    params = tf.reshape(params, tf.concat([[num_samples, tf.shape(x)[0]], tf.shape(params)[1:]], 0))
    if type(model.likelihood_head) is BernoulliHead:
        log_px_z = bernoulli_log_prob(params, x)  # [S, n]
    else:
        log_px_z = model.likelihood_head.distribution(params).log_prob(x)  # [S, n]
    return log_px_z + model.prior.log_prob(z) - log_q


def _log_likelihood(model, x, num_samples, seed, chunk: int):
    posterior = model.posterior(x)
    num_chunks = (num_samples + chunk - 1) // chunk

    def body(index, log_sum):
        log_weights = chunk_log_weights(model, x, posterior, chunk, tf.random.experimental.stateless_fold_in(seed, index))
        valid = index * chunk + tf.range(chunk) < num_samples  # [S]
        log_weights = tf.where(valid[:, tf.newaxis], log_weights, -np.inf)
        return index + 1, tf.reduce_logsumexp(tf.stack([log_sum, tf.reduce_logsumexp(log_weights, 0)]), 0)

    empty = tf.fill([tf.shape(x)[0]], tf.constant(-np.inf, tf.float32))  # log 0
    _, log_sum = tf.while_loop(lambda index, _: index < num_chunks, body, (tf.constant(0), empty),
                               parallel_iterations=1)
    return log_sum - tf.math.log(tf.cast(num_samples, tf.float32))


def _compiled(model, chunk: int):
    cache = model.__dict__.setdefault("_probvae_chunked_iwae", {})
    if chunk not in cache:
        cache[chunk] = tf.function(
            lambda x, num_samples, seed: _log_likelihood(model, x, num_samples, seed, chunk),
            input_signature=[tf.TensorSpec([None] + list(model.image_shape), tf.float32),
                             tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32)],
        )
    return cache[chunk]


def chunked_log_likelihood(model, x, num_samples: int, seed, sample_chunk: Optional[int] = None) -> tf.Tensor:
    """Importance-weighted estimate of log p(x) per example, [n] float32, nats.

    Args:
      model: a `VAE`.
      x: preprocessed float32 images [n, h, w, c] (binarized for a Bernoulli likelihood).
      num_samples: K >= 1.
      seed: an int s (the pair [s, 0]) or a stateless seed pair.
      sample_chunk: samples per chunk S; default max(1, CHUNK_ROWS // n).
        Memory grows with S * n, not with K.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise UserError(f"the number of importance samples must be a whole number of at least 1 (got {num_samples!r})")
    if sample_chunk is not None and (not isinstance(sample_chunk, (int, np.integer)) or sample_chunk < 1):
        raise UserError(f"sample_chunk must be a whole number of at least 1 (got {sample_chunk!r})")
    x = tf.convert_to_tensor(x, tf.float32)
    chunk = sample_chunk or max(1, CHUNK_ROWS // max(int(x.shape[0]), 1))
    seed = tf.constant([seed, 0] if np.ndim(seed) == 0 else seed, tf.int32)
    return _compiled(model, int(min(chunk, num_samples)))(x, tf.constant(int(num_samples), tf.int32), seed)
