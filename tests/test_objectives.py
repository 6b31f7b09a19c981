import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from probvae import objectives
from probvae.distributions import (
    DiagonalGaussianPrior,
    MixturePrior,
    kl_per_dimension,
    posterior_layer,
    posterior_params_size,
)
from probvae.model import VAE

from conftest import LATENT_DIM, tiny_model_config
from test_priors import gaussian_kl

tfd = tfp.distributions


def full_posterior(d=3, n=5, seed=0):
    layer = posterior_layer(d, lambda: tfd.MultivariateNormalDiag(tf.zeros(d)), covariance="full")
    return layer(tf.random.stateless_normal([n, posterior_params_size(d)], seed=[seed, 2]))


def test_free_bits_on_marginals_plus_total_correlation_for_a_factorised_prior():
    d = 3
    prior_layer = DiagonalGaussianPrior(d)
    prior_layer.loc.assign([0.5, -0.2, 0.1])
    prior = prior_layer.distribution()
    q = full_posterior(d)
    kl = tfd.kl_divergence(q, prior)
    loc, cov = q.mean().numpy().astype(np.float64), q.covariance().numpy().astype(np.float64)
    prior_loc, prior_scale = prior.mean().numpy().astype(np.float64), prior.stddev().numpy().astype(np.float64)
    variance = np.diagonal(cov, axis1=-2, axis2=-1)  # [n, d]
    marginal = (np.log(prior_scale) - 0.5 * np.log(variance)
                + (variance + (loc - prior_loc) ** 2) / (2 * prior_scale**2) - 0.5)
    np.testing.assert_allclose(kl_per_dimension(q, prior), marginal, rtol=1e-4)
    total = gaussian_kl(loc, cov, prior_loc, np.diag(prior_scale**2))
    correlation = total - marginal.sum(-1)
    assert np.all(correlation > 1e-3)  # the full covariance correlates the dimensions
    free = 0.6  # nats per dimension
    expected = np.maximum(free, marginal.mean(0)).sum() + correlation.mean()
    assert np.any(marginal.mean(0) < free) and np.any(marginal.mean(0) > free)  # both branches of max
    np.testing.assert_allclose(objectives.free_bits_kl(q, prior, kl, free), expected, rtol=1e-4)
    np.testing.assert_allclose(objectives.free_bits_kl(q, prior, kl, 0.0), total.mean(), rtol=1e-4)


def test_free_bits_on_the_total_for_a_mixture_prior():
    d = 3
    prior = MixturePrior(d, components=2).distribution()
    q = full_posterior(d)
    kl = tf.constant([0.5, 1.0, 4.0, 2.0, 0.1])
    assert float(objectives.free_bits_kl(q, prior, kl, 0.1)) == pytest.approx(1.52)  # mean 1.52 > 3 * 0.1
    assert float(objectives.free_bits_kl(q, prior, kl, 1.0)) == pytest.approx(3.0)  # 3 dims * 1 nat


def test_training_loss_uses_free_bits_and_the_elbo_ignores_them(binary_images):
    # A diagonal posterior has no correlation term: with 50 free nats per dimension
    # every marginal KL is below the threshold, so the KL term is d * 50, times kl_weight.
    vae = VAE(tiny_model_config(posterior="diag"), kl_weight=0.5, free_bits=50.0)
    seed = tf.constant([1, 2])
    loss, parts = vae.training_loss(binary_images, seed=seed)
    np.testing.assert_allclose(loss, -np.mean(parts.reconstruction) + 0.5 * LATENT_DIM * 50.0, rtol=1e-5)
    plain = VAE(tiny_model_config(posterior="diag"))
    plain.set_weights(vae.get_weights())
    np.testing.assert_allclose(plain.elbo(binary_images, seed=seed).elbo, parts.elbo, rtol=1e-5)


@pytest.mark.parametrize("covariance", ["full", "diag", "mixture"])
def test_importance_samples_are_the_posteriors_own_draws_bit_for_bit(covariance):
    rng = np.random.default_rng(5)
    loc = tf.constant(rng.normal(size=(4, 3)), tf.float32)
    scale = tf.constant(np.tril(rng.normal(size=(4, 3, 3))) + 2 * np.eye(3), tf.float32)
    tfd = tfp.distributions
    posterior = {
        "full": tfd.MultivariateNormalTriL(loc, scale),
        "diag": tfd.MultivariateNormalDiag(loc, tf.exp(loc)),
        # Not an affine Normal: drawn by S calls of its own sampler.
        "mixture": tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros([4, 2])),
                                         tfd.MultivariateNormalDiag(tf.stack([loc, -loc], 1), tf.ones([4, 2, 3]))),
    }[covariance]
    seed = tf.constant([3, 9])
    ks = tf.constant([0, 4, 5])
    drawn = objectives.posterior_samples(posterior, seed, ks)
    assert drawn.shape == (3, 4, 3)
    for row, k in enumerate(ks.numpy()):
        np.testing.assert_array_equal(drawn[row], posterior.sample(seed=objectives.sample_seed(seed, int(k))))
    # The same draws in a compiled function, and their density where TFP computes it by solving for eps.
    compiled = tf.function(lambda: objectives.posterior_samples(posterior, seed, ks))()
    np.testing.assert_array_equal(compiled, drawn)
    np.testing.assert_allclose(posterior.log_prob(drawn), posterior.log_prob(tf.identity(drawn) + 0.0), rtol=1e-5)
