"""Bidirectional Monte Carlo against log p(x) computed by numerical integration.

A VAE with a 2-D latent and a Bernoulli likelihood (an MLP decoder with set
weights) has

    log p(x) = log int p(x|z) p(z) dz ~= logsumexp_g [log p(x|z_g) + log p(z_g)] + log h^2

over the centres z_g of a grid of cells of side h covering the prior's mass
(the posterior p(z|x) lies inside it). BDMC's forward AIS must stay below it
and its backward AIS above it, within Monte Carlo error, whatever q(z|x) is.

How tight the sandwich is depends on the path, not only on T. On the
geometric path q(z|x)^(1 - b) f(z)^b, a q(z|x) far from p(z|x) and very
narrow (as an encoder after a few training steps: locations near (-12, 9),
scales near 0.003) keeps every intermediate density at q until 1 - b is
about the ratio of the posterior's precision to q's; and the backward chain,
started at the generating z, thousands of q-standard deviations from q's
location, is weighted by (b_t - b_(t-1)) (log f - log q) with log q in the
millions. The bounds stay valid, the gap is huge: BDMC reports that forward
AIS from such a q is unreliable, and from the prior it is tight.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from probvae import annealing, evaluation
from probvae.config import ModelConfig
from probvae.model import VAE

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

SHAPE = (3, 5, 1)  # 15 pixels
LATENT = 2
HIDDEN = 6
EXAMPLES = 12


def set_decoder(model, seed=0):
    """Decoder weights from a NumPy generator: logits of 15 pixels from z through 6 tanh units."""
    rng = np.random.default_rng(seed)
    for layer in model.decoder.layers:
        layer.set_weights([rng.normal(scale=1.0, size=w.shape).astype(np.float32) for w in layer.get_weights()])


def set_posterior(model, loc, scale):
    """q(z|x) = N(loc, diag(scale^2)) for every x: a zero kernel and a bias."""
    kernel, _ = model.posterior_params.get_weights()
    raw = np.log(np.expm1(np.asarray(scale, np.float64) - 1e-5))  # softplus(raw) + 1e-5 = scale
    model.posterior_params.set_weights([np.zeros_like(kernel), np.concatenate([loc, raw]).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def model():
    model = VAE(ModelConfig(arch="mlp", hidden_units=(HIDDEN,), activation="tanh", latent_dim=LATENT,
                            posterior="diag", likelihood="bernoulli", image_shape=SHAPE))
    set_decoder(model)
    return model


def grid_log_evidence(model, x, half_width=8.0, cell=0.02):
    """log p(x) [n] by the grid sum above, float64."""
    centres = np.arange(-half_width + cell / 2, half_width, cell)
    z = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, LATENT)  # [G, 2]
    log_prior = stats.norm.logpdf(z).sum(-1)  # [G]
    logits = tf.reshape(model.likelihood(tf.constant(z, tf.float32)).distribution.logits, [len(z), -1])
    logits = logits.numpy().astype(np.float64)  # [G, 15]
    pixels = np.reshape(x, (len(x), -1)).astype(np.float64)  # [n, 15]
    # log Bernoulli(x; logits) = x * logits - softplus(logits)
    log_likelihood = pixels @ logits.T - np.logaddexp(0.0, logits).sum(-1)  # [n, G]
    return special.logsumexp(log_likelihood + log_prior, axis=1) + 2 * np.log(cell)


def test_the_grid_is_fine_enough(model):
    x = evaluation.simulate(model, 5, seed=9)[1].numpy()
    np.testing.assert_allclose(grid_log_evidence(model, x), grid_log_evidence(model, x, 10.0, 0.05), atol=1e-6)


@pytest.mark.parametrize("initial", ["posterior", "prior"])
def test_bdmc_brackets_the_integrated_log_likelihood_with_a_small_gap(model, initial):
    set_posterior(model, [0.3, -0.2], [0.8, 0.9])
    result = evaluation.bdmc(model, EXAMPLES, num_steps=200, num_chains=4, seed=3, initial=initial)
    exact = grid_log_evidence(model, result.images)
    lower, lower_stderr = evaluation.mean_and_stderr(result.lower - exact)
    upper, upper_stderr = evaluation.mean_and_stderr(result.upper - exact)
    assert lower < 3 * lower_stderr + 0.01 and upper > -3 * upper_stderr - 0.01, (lower, upper)
    assert np.all(np.abs(result.lower - exact) < 0.5) and np.all(np.abs(result.upper - exact) < 0.5)
    summary = result.summary()  # measured gap: -0.04 +- 0.05 (posterior), -0.01 +- 0.08 (prior) nats
    assert -3 * summary["gap_stderr"] < summary["gap"] < 0.2, result.gap


def test_a_narrow_posterior_far_from_the_truth_keeps_the_bounds_and_widens_the_gap(model):
    loc, scale = np.array([-12.0, 9.0]), np.array([0.003, 0.1])
    set_posterior(model, loc, scale)
    result = evaluation.bdmc(model, EXAMPLES, num_steps=50, num_chains=4, seed=4)
    exact = grid_log_evidence(model, result.images)
    # Measured: log p(x) -7.07 on average, lower 82.7 below it, upper 121 192 above it.
    assert np.all(result.lower < exact) and np.all(result.upper > exact)
    # The first backward weight alone is -(1 - b_(T-1)) (log p(x, z) - log q(z|x)) at the generating z,
    # so the upper bound is at least about that far above log p(x).
    z, x = result.latents, result.images
    log_joint = model.likelihood(z).log_prob(x).numpy() + stats.norm.logpdf(z).sum(-1)
    first = (1 - annealing.sigmoid_schedule(50)[-2]) * (log_joint - stats.norm.logpdf(z, loc, scale).sum(-1))
    assert np.mean(result.upper - exact) > 0.5 * np.mean(first) > 1000, (np.mean(result.upper - exact), np.mean(first))
    # Measured: a mean first weight of 23 608 nats (log q(z|x) = -7.4e6 at the generating z).
    # From the prior, on the same images, the sandwich is tight (both within 0.05 nats of log p(x)).
    prior = evaluation.bdmc(model, EXAMPLES, num_steps=50, num_chains=4, seed=4, initial="prior")
    np.testing.assert_array_equal(prior.images, result.images)
    assert np.all(np.abs(prior.upper - exact) < 1.0) and np.mean(prior.gap) < 0.5, prior.gap
