"""The training losses of a `VAE` (`VAE.training_loss`), scalars in nats.

ELBO objective, for a model with KL weight beta (warm-up) and levels
z_1 .. z_L (L = 1 for a one-level model):

    loss = -mean_n log p(x_n|z_n) + beta * mean_n KL(q(z_L|x_n) || p(z_L))
           + beta * mean_n sum_(l<L) KL(q(z_l|x_n, z_(l+1)) || p(z_l|z_(l+1)))

The top level's term is the posterior layer's regularizer loss, which the
layer adds when `elbo_terms` calls it (with the step's seed, rows and the
prior built for the step), so that KL is computed once and counted once.
With free bits lambda > 0 the KL term is `objectives.free_bits_kl` instead.

Importance-weighted objective (K = train_samples):

    loss = -mean_n log (1/K) sum_k exp(log p(x_n|z_k) + beta (log p(z_k) - log q(z_k|x_n)))

Under tf.distribute, with rows = (offset, total), x holds rows
offset .. offset + n - 1 of a global batch of `total`, and the loss is this
share's part of the global batch's loss (the shares sum to the loss above):
-sum_n log p(x_n|z_n) / total + (n / total) * KL term, the free-bits means
taken over the global batch.
"""

import tensorflow as tf

from probvae import objectives, replicas, seeds

__all__ = ["training_loss"]


def _random_seed() -> tf.Tensor:
    """A fresh stateless seed, for callers that give none (as TFP does with seed=None)."""
    return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)


def elbo_loss(model, x, seed=None, rows=None):
    """(loss, ElboParts) of the ELBO objective (see the module docstring)."""
    terms = model.elbo_terms(x, seed, training=True, rows=rows)
    parts = terms.parts
    if model.free_bits > 0:
        batch_mean = tf.reduce_mean if rows is None else replicas.global_mean
        kl_loss = model.kl_weight * objectives.free_bits_kl(terms.posterior, terms.prior, parts.kl,
                                                            model.free_bits, batch_mean=batch_mean)
    else:
        kl_terms = list(model.posterior_layer.losses)  # beta * mean KL of the top level, added by this call
        lower = [level.kl for level in terms.levels[:-1]]  # [n] each, the levels below the top
        if lower:
            kl_terms.append(model.kl_weight * tf.reduce_mean(tf.add_n(lower)))
        kl_loss = tf.add_n(kl_terms)
    if rows is None:
        return -tf.reduce_mean(parts.reconstruction) + kl_loss, parts
    share = tf.cast(tf.shape(x)[0], tf.float32) / tf.cast(rows[1], tf.float32)
    return -tf.reduce_sum(parts.reconstruction) / tf.cast(rows[1], tf.float32) + share * kl_loss, parts


def iwae_loss(model, x, seed=None, rows=None):
    """(loss, ElboParts) of the importance-weighted objective: loss = -mean_n L_K(x_n)
    with the KL weight inside each weight (`objectives.iwae_bound`); the parts
    are the true ELBO's, at sample 0 (the ELBO's own z, so no extra decoder pass).

    log q(z_k|x) is summed level by level at the very tensors the levels drew:
    a flow posterior then takes its Gaussian's draw from its bijector cache
    (one parallel pass), where the density of the stacked samples would invert
    the flow sequentially, d network passes per step and, with nearly closed
    gates, an inverse that amplifies float32 rounding."""
    seed = _random_seed() if seed is None else seeds.as_seed(seed)
    count = model.train_samples
    terms = model.elbo_terms(x, seed, training=True, rows=rows)
    drawn = [[(level.posterior, level.z) for level in terms.levels]] + [
        model.sample_levels(terms.features, terms.top, seeds.sample_seed(seed, k), rows) for k in range(1, count)]
    z = tf.stack([terms.z] + [tf.concat([z for _, z in levels], axis=-1) for levels in drawn[1:]])  # [K, n, D]
    log_q = tf.stack([tf.add_n([q.log_prob(z) for q, z in levels]) for levels in drawn])  # [K, n]
    more = tf.reshape(z[1:], [-1, model.latent_dim])  # [(K - 1) n, D]
    tiled = tf.tile(x, [count - 1, 1, 1, 1])
    log_px = tf.concat([terms.parts.reconstruction[tf.newaxis],
                        tf.reshape(model.likelihood(more, training=True).log_prob(tiled),
                                   [count - 1, tf.shape(x)[0]])], axis=0)  # [K, n]
    log_weights = log_px + terms.prior.log_prob(z) - log_q  # [K, n]
    bound = objectives.iwae_bound(log_weights, model.kl_weight, log_px)  # [n]
    if rows is None:
        return -tf.reduce_mean(bound), terms.parts
    return -tf.reduce_sum(bound) / tf.cast(rows[1], tf.float32), terms.parts


def training_loss(model, x, seed=None, rows=None):
    """(loss, ElboParts) of the model's objective: the importance-weighted bound
    when `model.train_samples` > 0, else the ELBO (see the module docstring)."""
    return (iwae_loss if model.train_samples else elbo_loss)(model, x, seed, rows)
