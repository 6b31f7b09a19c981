import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from probvae.distributions import (
    NormalHead,
    bernoulli,
    make_likelihood_head,
    posterior_layer,
    posterior_params_size,
    standard_normal,
)

tfd = tfp.distributions
tfpl = tfp.layers


def kl_to_standard_normal(loc, covariance):
    """KL(N(loc, cov) || N(0, I)) = 0.5 (tr cov + loc.loc - d - log det cov), per row."""
    d = loc.shape[-1]
    _, logdet = np.linalg.slogdet(covariance)
    return 0.5 * (np.trace(covariance, axis1=-2, axis2=-1) + np.sum(loc**2, -1) - d - logdet)


def test_standard_normal_log_prob_matches_closed_form():
    prior = standard_normal(3)
    z = np.array([[0.1, -0.4, 2.0], [0.0, 0.0, 0.0]], np.float32)
    expected = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z)
    np.testing.assert_allclose(prior.log_prob(z), expected, rtol=1e-6)
    assert prior.event_shape == (3,) and prior.batch_shape == ()


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_posterior_layer_adds_the_analytic_kl_once(covariance):
    d, n = 3, 4
    prior = standard_normal(d)
    layer = posterior_layer(d, prior, covariance=covariance, kl_weight=0.7)
    params = tf.random.normal([n, posterior_params_size(d, covariance)])
    q = layer(params)
    assert q.batch_shape == (n,) and q.event_shape == (d,)
    if covariance == "full":
        assert isinstance(layer, tfpl.MultivariateNormalTriL)
    loc, cov = q.mean().numpy(), q.covariance().numpy()
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), atol=1e-6)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    expected = kl_to_standard_normal(loc.astype(np.float64), cov.astype(np.float64))
    np.testing.assert_allclose(tfd.kl_divergence(q, prior), expected, rtol=1e-4)
    # tf-keras divides the regularizer's batch total by the batch size; the
    # stock tfp layer would add it twice (tensorflow/probability#1215).
    assert len(layer.losses) == 1
    np.testing.assert_allclose(layer.losses[0], 0.7 * expected.mean(), rtol=1e-4)


def test_diag_posterior_scales_are_softplus_with_a_floor():
    layer = posterior_layer(2, standard_normal(2), covariance="diag")
    q = layer(tf.constant([[0.0, 0.0, -200.0, 0.0]]))
    np.testing.assert_allclose(q.stddev().numpy()[0], [1e-5, np.log(2.0) + 1e-5], rtol=1e-4)


def test_full_posterior_scales_have_the_floor_and_keep_the_kl_finite():
    d = 2
    layer = posterior_layer(d, standard_normal(d), covariance="full")
    # params: loc [d], then the d(d+1)/2 entries of L; softplus(-1e30) underflows to 0.
    q = layer(tf.constant([[0.5, -1.0, -1e30, 0.0, -1e30]]))
    scale_diag = np.diag(q.scale.to_dense().numpy()[0])
    np.testing.assert_allclose(scale_diag, [1e-5, 1e-5], rtol=1e-3)
    # KL(N(m, L L^T) || N(0, I)) by the closed form, with the floored scales.
    loc, cov = q.mean().numpy().astype(np.float64), q.covariance().numpy().astype(np.float64)
    kl = tfd.kl_divergence(q, standard_normal(d)).numpy()
    assert np.all(np.isfinite(kl)) and np.isfinite(q.log_prob(q.mean()).numpy()).all()
    np.testing.assert_allclose(kl, kl_to_standard_normal(loc, cov), rtol=1e-4)


def test_bernoulli_log_prob_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5, 2)).astype(np.float32)
    x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
    p = bernoulli(logits)
    assert p.batch_shape == (3,) and p.event_shape == (4, 5, 2)
    expected = np.sum(x * logits - np.logaddexp(0.0, logits), axis=(1, 2, 3))
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-5)


@pytest.mark.parametrize("scale, shape", [("shared", ()), ("channel", (2,)), ("pixel", (4, 5, 2))])
def test_normal_head_log_prob_matches_scipy(scale, shape):
    head = make_likelihood_head("normal", (4, 5, 2), normal_scale=scale)
    assert isinstance(head, NormalHead) and tuple(head.raw_scale.shape) == shape
    rng = np.random.default_rng(1)
    head.raw_scale.assign(rng.normal(size=shape).astype(np.float32))
    loc = rng.uniform(size=(3, 4, 5, 2)).astype(np.float32)
    x = rng.uniform(size=loc.shape).astype(np.float32)
    sd = np.log1p(np.exp(head.raw_scale.numpy())) + 1e-3
    expected = stats.norm(loc, np.broadcast_to(sd, loc.shape)).logpdf(x).sum(axis=(1, 2, 3))
    p = head.distribution(loc)
    assert p.event_shape == (4, 5, 2)
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-5)


def test_normal_scale_cannot_underflow():
    head = make_likelihood_head("normal", (2, 2, 1))
    head.raw_scale.assign(-1e4)
    assert float(head.scale) == pytest.approx(1e-3)
    assert np.isfinite(head.distribution(tf.zeros([1, 2, 2, 1])).log_prob(tf.ones([1, 2, 2, 1])).numpy()).all()


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="bernoulli, normal"):
        make_likelihood_head("poisson", (2, 2, 1))
    with pytest.raises(ValueError, match="full, diag"):
        posterior_layer(2, standard_normal(2), covariance="flow")
