"""A mixture prior of one component N(0, I) is the standard normal prior.

With the same encoder, decoder and seeds, everything that uses log p(z) at
samples must agree to float rounding: the prior's density, the importance
weights and so the IWAE bound, and the ELBO's reconstruction (the same z).
The ELBO's KL differs in kind: analytic for the standard prior, the
one-sample estimate log q(z|x) - log p(z) at the ELBO's z for the mixture;
the two agree on average over samples.
"""

import numpy as np
import pytest
import tensorflow as tf

from probvae import data, evaluation
from probvae._keras import keras
from probvae.model import VAE

from conftest import (
    BATCH,
    IMAGE_SHAPE,
    LATENT_DIM,
    gaussian_kl_to_standard_normal,
    iwae_reference,
    mvn_log_density,
    reparameterized_sample,
    standard_normal_log_density,
    tiny_model_config,
)


@pytest.fixture(scope="module")
def twins():
    """(mixture-prior VAE with its one component set to N(0, I), standard-prior VAE with the same weights)."""
    keras.utils.set_random_seed(3)
    mixture = VAE(tiny_model_config(arch="mlp", hidden_units=(6,), prior="mixture", prior_components=1))
    prior = mixture.prior_layer
    prior.locs.assign(np.zeros((1, LATENT_DIM), np.float32))
    # scale = softplus(raw) + 1e-5 = 1
    prior.raw_scales.assign(np.full((1, LATENT_DIM), np.log(np.expm1(1.0 - 1e-5)), np.float32))
    standard = VAE(tiny_model_config(arch="mlp", hidden_units=(6,)))
    for part in ("encoder", "posterior_params", "decoder"):
        getattr(standard, part).set_weights(getattr(mixture, part).get_weights())
    return mixture, standard


def _images(n=5, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n,) + IMAGE_SHAPE) * 255).astype(np.uint8)


def test_the_priors_have_one_density(twins):
    mixture, standard = twins
    z = np.random.default_rng(1).normal(scale=2.0, size=(7, LATENT_DIM)).astype(np.float32)
    np.testing.assert_allclose(mixture.prior.log_prob(z), standard_normal_log_density(z), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(standard.prior.log_prob(z), standard_normal_log_density(z), rtol=1e-6, atol=1e-6)
    # Same encoder: the same posterior.
    x = tf.constant(data.binarize_fixed(_images(BATCH), seed=0))
    np.testing.assert_array_equal(mixture.posterior(x).mean(), standard.posterior(x).mean())


def test_the_iwae_bounds_agree(twins):
    mixture, standard = twins
    x = data.binarize_fixed(_images(), seed=0)
    seed = tf.constant([5, 2])
    from_mixture = evaluation.log_likelihood(mixture, x, 40, seed).numpy()
    from_standard = evaluation.log_likelihood(standard, x, 40, seed).numpy()
    np.testing.assert_allclose(from_mixture, from_standard, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(from_mixture, iwae_reference(standard, x, 40, seed=[5, 2])[0], rtol=1e-5, atol=1e-4)
    # Through the whole evaluation (two batches): the same log p(x) and reconstruction.
    images = _images(8, seed=2)
    results = [evaluation.evaluate(model, images, iwae_samples=6, batch_size=5, seed=9) for model in twins]
    assert results[0]["log_likelihood"] == pytest.approx(results[1]["log_likelihood"], rel=1e-6)
    assert results[0]["reconstruction"] == pytest.approx(results[1]["reconstruction"], rel=1e-6)


def test_the_elbos_share_the_reconstruction_and_differ_only_in_the_kl_estimate(twins):
    mixture, standard = twins
    x = tf.constant(data.binarize_fixed(_images(), seed=0))
    seed = tf.constant([8, 3])
    with_mixture, with_standard = mixture.elbo(x, seed=seed), standard.elbo(x, seed=seed)
    np.testing.assert_array_equal(with_mixture.reconstruction, with_standard.reconstruction)
    q = standard.posterior(x)
    loc, covariance = q.mean().numpy(), q.covariance().numpy()
    z = reparameterized_sample(q, seed)  # the ELBO's sample
    # Standard prior: the closed form; mixture: log q(z|x) - log N(z; 0, I) at that z.
    np.testing.assert_allclose(with_standard.kl, gaussian_kl_to_standard_normal(loc, covariance), rtol=1e-4,
                               atol=1e-5)
    one_sample = mvn_log_density(z, loc, covariance) - standard_normal_log_density(z)
    np.testing.assert_allclose(with_mixture.kl, one_sample, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(with_mixture.elbo - with_standard.elbo, with_standard.kl - with_mixture.kl,
                               rtol=1e-5, atol=1e-4)
    assert np.abs(with_mixture.kl - with_standard.kl).max() > 1e-3  # the estimate is not the closed form
    # On average over samples they agree: 5 images each 400 times, one sample each.
    many = tf.constant(np.tile(x.numpy(), [400, 1, 1, 1]))
    difference = (mixture.elbo(many, seed=seed).kl - standard.elbo(many, seed=seed).kl).numpy().astype(np.float64)
    assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(difference.size)
