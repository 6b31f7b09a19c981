import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

from probvae.distributions.mixtures import GaussianMixture, gaussian_mixture

tfd = tfp.distributions


def _random_tril(rng, k, d):
    tril = np.tril(rng.normal(size=(k, d, d)) * 0.4)
    tril[:, np.arange(d), np.arange(d)] = np.exp(rng.normal(size=(k, d)) * 0.3)
    return tril


@pytest.mark.parametrize("full", [True, False])
def test_log_prob_matches_scipy_and_tfps_broadcasting_path(full):
    rng = np.random.default_rng(0)
    k, d = 5, 3
    loc, logits = rng.normal(size=(k, d)), rng.normal(size=k)
    if full:
        tril = _random_tril(rng, k, d)
        components = tfd.MultivariateNormalTriL(loc=loc.astype(np.float32), scale_tril=tril.astype(np.float32))
        covariances = tril @ np.swapaxes(tril, -1, -2)
    else:
        scales = np.exp(rng.normal(size=(k, d)) * 0.3)
        components = tfd.MultivariateNormalDiag(loc=loc.astype(np.float32), scale_diag=scales.astype(np.float32))
        covariances = np.stack([np.diag(s ** 2) for s in scales])
    mixture = gaussian_mixture(logits.astype(np.float32), components)
    assert isinstance(mixture, GaussianMixture)
    assert mixture.batch_shape == () and mixture.event_shape == (d,)
    x = rng.normal(size=(4, 6, d)) * 2  # any batch of points
    log_weights = logits - special.logsumexp(logits)
    per_component = np.stack([stats.multivariate_normal(loc[j], covariances[j]).logpdf(x) for j in range(k)], -1)
    expected = special.logsumexp(per_component + log_weights, axis=-1)
    got = mixture.log_prob(x.astype(np.float32)).numpy()
    assert got.shape == (4, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    plain = tfd.MixtureSameFamily(tfd.Categorical(logits=logits.astype(np.float32)), components)
    np.testing.assert_allclose(got, plain.log_prob(x.astype(np.float32)).numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("full", [True, False])
def test_gradients_and_samples_are_the_mixtures(full):
    rng = np.random.default_rng(1)
    loc = tf.Variable(rng.normal(size=(3, 2)).astype(np.float32))
    if full:
        scale = tf.Variable(_random_tril(rng, 3, 2).astype(np.float32))
        make = lambda: tfd.MultivariateNormalTriL(loc, scale)  # noqa: E731
    else:
        scale = tf.Variable(np.exp(rng.normal(size=(3, 2)) * 0.3).astype(np.float32))
        make = lambda: tfd.MultivariateNormalDiag(loc, scale)  # noqa: E731
    x = tf.constant(rng.normal(size=(7, 2)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        fast = tf.reduce_sum(gaussian_mixture(tf.zeros(3), make()).log_prob(x))
        plain = tf.reduce_sum(tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros(3)), make()).log_prob(x))
    for variable in (loc, scale):
        np.testing.assert_allclose(tape.gradient(fast, variable), tape.gradient(plain, variable),
                                   rtol=1e-4, atol=1e-6)
    samples = gaussian_mixture(tf.zeros(3), make()).sample(5, seed=[1, 2])
    assert samples.shape == (5, 2)


@pytest.mark.parametrize("scale", [1.0, 0.05, 0.01])
def test_diagonal_components_keep_their_precision_at_small_scales(scale):
    # The diagonal path expands |(x - m) / s|^2 into matrix products; near a
    # component with small scales that cancels, and float32 would be off by
    # up to a nat at s = 0.01. Points drawn from the mixture sit near its
    # components, where the cancellation is worst.
    rng = np.random.default_rng(5)
    k, d = 30, 12
    loc = (rng.normal(size=(k, d)) * 2).astype(np.float32)
    scales = (scale * np.exp(rng.normal(size=(k, d)) * 0.3)).astype(np.float32)
    mixture = gaussian_mixture(tf.zeros(k), tfd.MultivariateNormalDiag(loc, scales))
    x = mixture.sample(200, seed=[7, 8]).numpy()
    centred = (x[None].astype(np.float64) - loc[:, None]) / scales[:, None]
    per_component = (-0.5 * np.sum(centred ** 2, -1) - np.sum(np.log(scales.astype(np.float64)), -1)[:, None]
                     - 0.5 * d * np.log(2 * np.pi) - np.log(k))
    expected = special.logsumexp(per_component, axis=0)
    got = mixture.log_prob(x).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=2e-4)


def test_diagonal_components_may_share_their_scales():
    rng = np.random.default_rng(6)
    loc, scales = rng.normal(size=(4, 3)).astype(np.float32), np.array([0.5, 1.0, 2.0], np.float32)
    components = tfd.MultivariateNormalDiag(loc, scales)
    x = rng.normal(size=(9, 3)).astype(np.float32)
    plain = tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros(4)), components)
    np.testing.assert_allclose(gaussian_mixture(tf.zeros(4), components).log_prob(x), plain.log_prob(x),
                               rtol=1e-5, atol=1e-5)
