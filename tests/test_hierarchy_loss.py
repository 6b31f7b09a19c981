"""The two-level model's training loss, as the compiled train step computes it:

    loss = -mean_n log p(x_n|z_n) + beta * mean_n [KL_top(n) + KL_lower(n)]

with KL_top = KL(q(z_2|x) || p(z_2)) and KL_lower = KL(q(z_1|x, z_2) || p(z_1|z_2))
at the sampled z_2. At beta = 1 this is -mean ELBO. The KLs here are computed
per level from the distributions with `tfd.kl_divergence`, and the
reconstruction from the likelihood at the sampled z, not through the model's
own KL bookkeeping, so counting one level twice or leaving one out of the
beta weighting fails."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from probvae import seeds
from probvae._keras import keras
from probvae.model import VAE
from probvae.training import StepTotals, make_train_step

from conftest import IMAGE_SHAPE, tiny_model_config

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

tfd = tfp.distributions

RUN_SEED = 11
BATCH = 3


def _images():
    rng = np.random.default_rng(4)
    return (rng.uniform(size=(BATCH,) + IMAGE_SHAPE) < 0.4).astype(np.float32)


def _model(beta):
    keras.utils.set_random_seed(2)
    # Two levels of distinct sizes: z_1 [3] below z_2 [2].
    return VAE(tiny_model_config(arch="mlp", latent_dim=(3, 2), latent_layers=2, level_units=6), kl_weight=beta)


def _step_loss(vae, x, jit_compile):
    """The loss of the first compiled train step (seed (RUN_SEED, 0)), before its update."""
    step = tf.Variable(0, dtype=tf.int64)
    train_step = make_train_step(vae, keras.optimizers.Adam(1e-3), StepTotals(), step, RUN_SEED,
                                 (BATCH,) + IMAGE_SHAPE, jit_compile=jit_compile)
    return float(train_step(tf.constant(x)))


def _independent_terms(vae, x, jit_compile):
    """(-mean ELBO, mean reconstruction, mean KL_top, mean KL_lower) at the first step's seed,
    compiled as the step is (XLA draws its samples with another algorithm than the graph)."""
    def terms(x):
        sampled = vae.elbo_terms(x, seeds.step_seed(RUN_SEED, 0))
        assert len(sampled.levels) == 2
        lower, top = sampled.levels  # bottom level first
        z = tf.concat([lower.z, top.z], axis=-1)  # [n, 3 + 2]
        reconstruction = vae.likelihood(z).log_prob(x)  # [n]
        kl_top = tfd.kl_divergence(top.posterior, top.prior)  # [n]
        kl_lower = tfd.kl_divergence(lower.posterior, lower.prior)  # [n]
        return [-tf.reduce_mean(sampled.parts.elbo)] + [tf.reduce_mean(t) for t in (reconstruction, kl_top, kl_lower)]

    return [float(t) for t in tf.function(terms, jit_compile=jit_compile, autograph=False)(tf.constant(x))]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_at_beta_one_the_step_loss_is_minus_the_mean_elbo(jit_compile):
    x = _images()
    vae = _model(beta=1.0)
    negative_elbo, reconstruction, kl_top, kl_lower = _independent_terms(vae, x, jit_compile)
    loss = _step_loss(vae, x, jit_compile)
    # float32 sums of about 45 nats in another order: measured within 1e-7 relative.
    assert loss == pytest.approx(negative_elbo, rel=1e-5)
    assert loss == pytest.approx(-reconstruction + kl_top + kl_lower, rel=1e-5)
    assert kl_lower > 1e-3 and kl_top > 1e-3  # both levels count, so dropping either would show


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_beta_weights_the_kl_of_every_level(jit_compile):
    x = _images()
    beta = 0.3
    vae = _model(beta=beta)
    negative_elbo, reconstruction, kl_top, kl_lower = _independent_terms(vae, x, jit_compile)
    loss = _step_loss(vae, x, jit_compile)
    assert loss == pytest.approx(-reconstruction + beta * (kl_top + kl_lower), rel=1e-5)
    # What the usual one-line bugs would give instead, each far outside that tolerance:
    for wrong in (-reconstruction + beta * kl_top + kl_lower,  # the lower KL left out of the weighting
                  -reconstruction + beta * 2 * kl_top,  # the top KL counted again instead of the lower
                  negative_elbo):  # no weighting at all
        assert abs(wrong - loss) > 1e-4 * abs(loss)
