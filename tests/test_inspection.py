import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from probvae.analysis import inspection
from probvae.model import VAE

from conftest import BATCH, IMAGE_SHAPE, LATENT_DIM, tiny_model_config

tfd = tfp.distributions


def test_normal_cdf_matches_scipy_in_the_bulk_and_the_tails():
    x = np.array([-30.0, -8.0, -1.5, 0.0, 0.3, 2.0, 9.0])
    np.testing.assert_allclose(inspection.normal_cdf(x), scipy.stats.norm.cdf(x), rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [1, 3, 500])
def test_ks_statistic_matches_scipy(n):
    rng = np.random.default_rng(n)
    standard = rng.standard_normal(n)
    shifted = rng.standard_normal(n) * 0.5 + 1.0
    for samples in (standard, shifted):
        expected = scipy.stats.kstest(samples, "norm").statistic
        assert inspection.ks_statistic(samples) == pytest.approx(expected, abs=1e-12)


def test_ks_statistic_is_small_for_normal_samples_and_large_for_shifted_ones():
    rng = np.random.default_rng(0)
    samples = np.stack([rng.standard_normal(2000), rng.standard_normal(2000) + 1.0], axis=1)  # [N, 2]
    ks = inspection.ks_statistic(samples)
    assert ks.shape == (2,)
    # The 1% critical value for N = 2000 is about 1.63 / sqrt(2000) = 0.036.
    assert ks[0] < 0.036
    # A unit shift: sup |Phi(t - 1) - Phi(t)| = 2 Phi(0.5) - 1 = 0.383 at t = 0.5.
    assert ks[1] == pytest.approx(2 * scipy.stats.norm.cdf(0.5) - 1, abs=0.036)
    for u in range(2):
        assert ks[u] == pytest.approx(scipy.stats.kstest(samples[:, u], "norm").statistic, abs=1e-12)


@pytest.mark.parametrize("posterior", ["full", "diag"])
def test_correlation_from_the_scale_equals_the_one_from_the_covariance(posterior, binary_images):
    model = VAE(tiny_model_config(posterior=posterior, latent_dim=3))
    q = model.posterior(binary_images)
    stddev, correlation = inspection.correlation_from_scale(q.scale.to_dense().numpy())
    covariance = q.covariance().numpy().astype(np.float64)  # [3, 3, 3]
    sd = np.sqrt(np.diagonal(covariance, axis1=1, axis2=2))
    expected = covariance / (sd[:, :, None] * sd[:, None, :])
    np.testing.assert_allclose(stddev, q.stddev().numpy(), rtol=1e-5)
    np.testing.assert_allclose(correlation, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(correlation, axis1=1, axis2=2), 1.0, rtol=1e-12)
    if posterior == "diag":
        np.testing.assert_allclose(correlation, np.broadcast_to(np.eye(3), (BATCH, 3, 3)), atol=1e-12)
    else:
        assert np.abs(correlation - np.eye(3)).max() > 1e-3  # a full posterior is correlated


def test_inspect_posterior_returns_the_posterior_and_decoded_samples(binary_images):
    model = VAE(tiny_model_config())
    result = inspection.inspect_posterior(model, binary_images, num_samples=5, seed=3)
    q = model.posterior(binary_images)
    assert result.z.shape == (BATCH, 5, LATENT_DIM)
    assert result.reconstructions.shape == (BATCH, 5) + IMAGE_SHAPE
    np.testing.assert_allclose(result.loc, q.mean().numpy(), rtol=1e-6)
    # Reconstruction j of example i decodes z[i, j].
    expected = model.likelihood(result.z[1, 4][None]).mean().numpy()[0]
    np.testing.assert_allclose(result.reconstructions[1, 4], expected, rtol=1e-5, atol=1e-6)
    again = inspection.inspect_posterior(model, binary_images, num_samples=5, seed=3)
    np.testing.assert_array_equal(result.z, again.z)


def test_inspect_posterior_takes_raw_images_as_the_model_does():
    model = VAE(tiny_model_config())
    raw = (np.random.default_rng(3).uniform(size=(BATCH,) + IMAGE_SHAPE) * 255).astype(np.uint8)
    result = inspection.inspect_posterior(model, raw, num_samples=2, seed=0)
    prepared = model.prepare_inputs(raw).numpy()
    assert set(np.unique(result.inputs)) <= {0.0, 1.0}
    np.testing.assert_array_equal(result.inputs, prepared)
    np.testing.assert_allclose(result.loc, model.posterior(tf.constant(prepared)).mean().numpy(), rtol=1e-6)


def _inputs(n=40, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n,) + IMAGE_SHAPE) < 0.4).astype(np.float32)


def test_latent_marginals_statistics_and_collapse():
    model = VAE(tiny_model_config(posterior="diag"))
    x = _inputs()
    # Dimension 0: its weights scaled so that its mean varies over x with variance 1, far above the 0.01
    # of an active unit, whatever the random initialization. Dimension 1: the weights into its mean
    # zeroed, so that its posterior no longer depends on x.
    kernel, bias = model.posterior_params.get_weights()
    kernel[:, 0] /= model.posterior(x).mean().numpy()[:, 0].std()
    kernel[:, 1] = 0.0
    model.posterior_params.set_weights([kernel, bias])
    result = inspection.latent_marginals(model, x, seed=1, batch_size=16)  # three batches
    q = model.posterior(x)
    loc = q.mean().numpy()
    # Batches of 16 and one batch of 40 take different kernel paths: float32 rounding differs.
    np.testing.assert_allclose(result.loc, loc, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.activity, loc.var(axis=0), rtol=1e-5, atol=1e-12)
    assert result.activity[0] == pytest.approx(1.0, rel=1e-4) and result.activity[1] < 1e-12
    assert result.collapsed.tolist() == [False, True]
    np.testing.assert_allclose(result.ks, [scipy.stats.kstest(result.samples[:, u], "norm").statistic
                                           for u in range(2)], atol=1e-12)
    np.testing.assert_allclose(result.mean, result.samples.mean(axis=0))
    # For a diagonal posterior the per-dimension KLs add up to the full KL.
    full_kl = tfd.kl_divergence(q, model.prior).numpy().mean()
    assert result.kl.sum() == pytest.approx(full_kl, rel=1e-4)
    values = result.to_dict()
    assert values["collapsed_dims"] == [1] and values["n_samples"] == 40
    assert values["dims"][0]["ks_statistic"] == pytest.approx(result.ks[0])


def test_latent_marginals_kl_per_dimension_of_a_full_posterior():
    model = VAE(tiny_model_config(latent_dim=3))
    x = _inputs(n=7)
    result = inspection.latent_marginals(model, x, seed=0)
    q = model.posterior(tf.constant(x))
    m = q.mean().numpy().astype(np.float64)
    variance = np.diagonal(q.covariance().numpy(), axis1=1, axis2=2).astype(np.float64)
    # KL(N(m, v) || N(0, 1)) = 0.5 (v + m^2 - 1 - log v), averaged over the examples.
    np.testing.assert_allclose(result.kl, (0.5 * (variance + m**2 - 1 - np.log(variance))).mean(0), rtol=1e-4)
    np.testing.assert_allclose(result.posterior_std, np.sqrt(variance).mean(0), rtol=1e-5)
    # Correlations add to the KL: KL = sum_u KL_u - 0.5 log det(corr) >= sum_u KL_u.
    full_kl = tfd.kl_divergence(q, model.prior).numpy().mean()
    assert full_kl > result.kl.sum()


def test_grid_values_follow_the_inverse_normal_cdf_or_a_fixed_range():
    values = inspection.grid_values(5)
    np.testing.assert_allclose(inspection.normal_cdf(values), [0.1, 0.3, 0.5, 0.7, 0.9], rtol=1e-10)
    np.testing.assert_allclose(values, scipy.stats.norm.ppf([0.1, 0.3, 0.5, 0.7, 0.9]), rtol=1e-10)
    np.testing.assert_allclose(inspection.grid_values(3, limit=4.0), [-4.0, 0.0, 4.0])
    with pytest.raises(ValueError, match="at least 2"):
        inspection.grid_values(1)


def test_decode_grid_puts_the_first_dim_across_and_the_second_up():
    model = VAE(tiny_model_config(latent_dim=3))
    values = np.array([-1.0, 0.5, 2.0])
    grid = inspection.decode_grid(model, (2, 0), values)
    assert grid.shape == (3, 3) + IMAGE_SHAPE
    # Top-left cell: z[2] = -1 (leftmost), z[0] = 2 (top), z[1] = 0.
    expected = model.likelihood(tf.constant([[2.0, 0.0, -1.0]])).mean().numpy()[0]
    np.testing.assert_allclose(grid[0, 0], expected, rtol=1e-5, atol=1e-6)
    expected = model.likelihood(tf.constant([[-1.0, 0.0, 0.5]])).mean().numpy()[0]
    np.testing.assert_allclose(grid[2, 1], expected, rtol=1e-5, atol=1e-6)


def test_interpolation_runs_between_the_two_posterior_means(binary_images):
    model = VAE(tiny_model_config())
    t, z, decoded = inspection.interpolate(model, binary_images[0], binary_images[2], steps=4)
    loc = model.posterior(binary_images).mean().numpy()
    np.testing.assert_allclose(t, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(z[0], loc[0], rtol=1e-5)
    np.testing.assert_allclose(z[-1], loc[2], rtol=1e-5)
    np.testing.assert_allclose(z[1], (2 * loc[0] + loc[2]) / 3, rtol=1e-5)
    assert decoded.shape == (4,) + IMAGE_SHAPE


@pytest.mark.parametrize("prior", ["standard_normal", "diag_gaussian"])
def test_prior_samples_draw_z_from_the_prior_and_pixels_from_the_decoded_bernoulli(prior):
    model = VAE(tiny_model_config(prior=prior))
    loc, scale = np.zeros(LATENT_DIM), np.ones(LATENT_DIM)
    if prior == "diag_gaussian":  # a learned prior away from N(0, I): scale = softplus(raw) + 1e-5
        loc, scale = np.array([0.5, -1.0]), np.array([2.0, 0.3])
        model.prior_layer.loc.assign(loc)
        model.prior_layer.raw_scale.assign(np.log(np.expm1(scale - 1e-5)))
    n = 4000
    z, means, draws = inspection.prior_samples(model, n, seed=2)
    assert z.shape == (n, LATENT_DIM) and means.shape == draws.shape == (n,) + IMAGE_SHAPE
    # z ~ N(loc, diag(scale^2)): standardised, each coordinate is N(0, 1) and they are uncorrelated.
    u = (z.astype(np.float64) - loc) / scale
    np.testing.assert_array_less(np.abs(u.mean(axis=0)), 4 / np.sqrt(n))  # 4 standard errors
    np.testing.assert_array_less(np.abs(u.var(axis=0, ddof=1) - 1), 4 * np.sqrt(2 / (n - 1)))  # 4 sd of s^2
    assert abs(np.corrcoef(u.T)[0, 1]) < 4 / np.sqrt(n)
    # Kolmogorov-Smirnov 1% critical value for n = 4000: 1.63 / sqrt(4000) = 0.026.
    assert np.all(inspection.ks_statistic(u) < 1.63 / np.sqrt(n))
    # The means are sigmoid of the decoder's logits at those z.
    logits = model.decoder(tf.constant(z)).numpy().astype(np.float64)
    np.testing.assert_allclose(means, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-7)
    # The draws are binary, x ~ Bernoulli(mean): per pixel, the count of ones over the
    # 4000 draws is within 5 standard deviations sqrt(sum_n p (1 - p)) of sum_n p.
    assert set(np.unique(draws)) <= {0.0, 1.0}
    p = means.astype(np.float64)
    excess = (draws - p).sum(axis=0) / np.sqrt((p * (1 - p)).sum(axis=0))  # [8, 8, 1]
    assert np.abs(excess).max() < 5, np.abs(excess).max()
    assert abs(excess.mean()) * np.sqrt(excess.size) < 4  # and no bias over all 64 pixels together
    again = inspection.prior_samples(model, n, seed=2)
    np.testing.assert_array_equal(again[0], z)
    np.testing.assert_array_equal(again[2], draws)


def test_choose_dims_takes_the_two_most_active_or_checks_the_given_ones():
    assert inspection.choose_dims([0.1, 3.0, 0.0, 2.0]) == (1, 3)
    assert inspection.choose_dims([0.1, 3.0]) == (0, 1)
    assert inspection.choose_dims([0.1, 3.0, 0.0], dims=[2, 0]) == (2, 0)
    with pytest.raises(ValueError, match="two different dimensions in 0..2"):
        inspection.choose_dims([0.1, 3.0, 0.0], dims=[1, 3])
    with pytest.raises(ValueError, match="2 or more"):
        inspection.choose_dims([0.5])


def test_training_curves_read_metrics():
    epoch = lambda e, v: {"epoch": e, "train": {"elbo": -v, "reconstruction": -v + 1, "kl": 1.0},  # noqa: E731
                          "validation": {"elbo": -v - 1, "reconstruction": -v, "kl": 1.0}}
    curves = inspection.training_curves({"epochs": [epoch(1, 300.0), epoch(2, 250.0)]})
    np.testing.assert_array_equal(curves["epoch"], [1, 2])
    np.testing.assert_array_equal(curves["validation"]["elbo"], [-301.0, -251.0])
    assert "gradient_norm" not in curves  # epochs of a version that did not record them
    with pytest.raises(ValueError, match="no finished epoch"):
        inspection.training_curves({"epochs": []})
    recorded = epoch(3, 240.0)
    recorded["train"].update(gradient_norm=37.5, gradient_norm_max=60.25)
    curves = inspection.training_curves({"epochs": [epoch(1, 300.0), recorded]})
    np.testing.assert_array_equal(curves["gradient_norm"]["mean"], [np.nan, 37.5])
    np.testing.assert_array_equal(curves["gradient_norm"]["max"], [np.nan, 60.25])
