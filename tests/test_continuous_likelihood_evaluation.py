"""Held-out evaluation of grey-level models (Normal and continuous Bernoulli
likelihoods) against a direct computation.

The pixels are the images' grey levels x / 255 (no binarization). The
likelihood's density is checked against scipy.stats.norm.logpdf and the
continuous Bernoulli formula with its normaliser C(lambda); the whole
evaluation against the estimators written out in NumPy from the documented
samples (batch b of an evaluation with seed s draws sample k from
fold_in((s, b), k); the ELBO uses sample 0), and

    bits/dim = -mean_j LL_j / (D ln 2),   D = 8 * 8 * 1 = 64.
"""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from scipy import special

from probvae import evaluation
from probvae._keras import keras
from probvae.model import VAE

from conftest import (
    IMAGE_SHAPE,
    continuous_bernoulli_log_density_from_logits,
    gaussian_kl_to_standard_normal,
    iwae_reference,
    pixel_log_likelihood,
    reparameterized_sample,
    tiny_model_config,
)

PIXELS = 64
K = 6
SEED = 4
BATCH_SIZE = 3  # 5 images: batches of 3 and 2


@pytest.fixture(scope="module", params=["normal", "continuous_bernoulli"])
def model(request):
    keras.utils.set_random_seed(2)
    model = VAE(tiny_model_config(arch="mlp", hidden_units=(6,), likelihood=request.param, normal_scale="pixel"))
    if request.param == "normal":  # per-pixel scales from 0.05 to 0.5, so each pixel's scale matters
        scale = np.linspace(0.05, 0.5, PIXELS).reshape(IMAGE_SHAPE)
        model.likelihood_head.raw_scale.assign(np.log(np.expm1(scale - 1e-3)).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def images():
    return (np.random.default_rng(6).uniform(size=(5,) + IMAGE_SHAPE) * 255).astype(np.uint8)


def test_the_likelihood_density_is_the_closed_form(model, images):
    x = (images / 255.0).astype(np.float32)
    z = np.random.default_rng(3).normal(size=(len(x), 2)).astype(np.float32)
    params = model.decoder(z).numpy().astype(np.float64)
    if model.config.likelihood == "normal":
        raw = model.likelihood_head.raw_scale.numpy().astype(np.float64)
        expected = scipy.stats.norm.logpdf(x, loc=params, scale=np.logaddexp(0.0, raw) + 1e-3).sum(axis=(1, 2, 3))
    else:
        # log C(lambda) + x log lambda + (1 - x) log(1 - lambda), lambda = sigmoid(logit),
        # C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda), from probabilities this time.
        lam, grey = special.expit(params), x.astype(np.float64)
        constant = 2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam)
        expected = (np.log(constant) + grey * np.log(lam) + (1 - grey) * np.log1p(-lam)).sum(axis=(1, 2, 3))
        np.testing.assert_allclose(continuous_bernoulli_log_density_from_logits(x, params).sum(axis=(1, 2, 3)),
                                   expected, rtol=1e-9)
    np.testing.assert_allclose(model.likelihood(z).log_prob(x), expected, rtol=1e-5, atol=1e-5)  # float32 sums
    np.testing.assert_allclose(pixel_log_likelihood(model, z, x), expected, rtol=1e-9)


def test_evaluate_is_the_direct_computation(model, images):
    result = evaluation.evaluate(model, images, iwae_samples=K, batch_size=BATCH_SIZE, seed=SEED)
    assert result["binarization"] == "none" and result["likelihood"] == model.config.likelihood
    x = (images / 255.0).astype(np.float32)
    log_likelihood, log_weights, elbo, reconstruction, kl = [], [], [], [], []
    for b, rows in enumerate((slice(0, 3), slice(3, 5))):
        values, weights = iwae_reference(model, x[rows], K, seed=[SEED, b])
        log_likelihood.append(values)
        log_weights.append(weights)
        q = model.posterior(tf.constant(x[rows]))
        z = reparameterized_sample(q, tf.random.experimental.stateless_fold_in(tf.constant([SEED, b]), 0))
        reconstruction.append(pixel_log_likelihood(model, z, x[rows]))
        kl.append(gaussian_kl_to_standard_normal(q.mean().numpy(), q.covariance().numpy()))
        elbo.append(reconstruction[-1] - kl[-1])
    log_likelihood, log_weights = np.concatenate(log_likelihood), np.concatenate(log_weights, axis=1)
    elbo, reconstruction, kl = np.concatenate(elbo), np.concatenate(reconstruction), np.concatenate(kl)
    assert result["n_examples"] == 5

    def close(name, expected, rtol=1e-5):
        assert result[name] == pytest.approx(expected, rel=rtol, abs=1e-6), name

    close("log_likelihood", log_likelihood.mean())
    close("log_likelihood_stderr", log_likelihood.std(ddof=1) / np.sqrt(5), rtol=1e-4)
    close("elbo", elbo.mean())
    close("reconstruction", reconstruction.mean())
    close("kl", kl.mean(), rtol=1e-4)
    close("bits_per_dim", -log_likelihood.mean() / (PIXELS * np.log(2)))
    close("bits_per_dim_stderr", log_likelihood.std(ddof=1) / np.sqrt(5) / (PIXELS * np.log(2)), rtol=1e-4)
    close("elbo_bits_per_dim", -elbo.mean() / (PIXELS * np.log(2)))
    # The effective sample size (sum w)^2 / sum w^2 and the delta-method Monte Carlo error.
    ess = np.exp(2 * special.logsumexp(log_weights, axis=0) - special.logsumexp(2 * log_weights, axis=0))
    close("effective_sample_size", ess.mean(), rtol=1e-4)
    close("log_likelihood_mc_stderr", np.sqrt(np.maximum(1 / ess - 1 / K, 0).sum()) / 5, rtol=1e-3)
    # Densities of grey levels: bits/dim can be negative for a sharp Normal, never NaN.
    assert np.isfinite(result["bits_per_dim"])
