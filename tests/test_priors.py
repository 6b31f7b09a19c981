import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

from probvae._keras import keras
from probvae.distributions import (
    DiagonalGaussianPrior,
    MixturePrior,
    VampPrior,
    kl_per_dimension,
    make_prior,
    posterior_layer,
    posterior_params_size,
    prior_layer,
    prior_marginals,
    standard_normal,
)
from probvae.model import VAE

from conftest import BATCH, IMAGE_SHAPE, LATENT_DIM, tiny_model_config

tfd = tfp.distributions


def softplus(x):
    return np.logaddexp(0.0, x)


def gaussian_kl(loc_q, cov_q, loc_p, cov_p):
    """KL(N(loc_q, cov_q) || N(loc_p, cov_p)) per row, float64 numpy."""
    d = loc_q.shape[-1]
    inverse = np.linalg.inv(cov_p)
    diff = loc_p - loc_q
    return 0.5 * (np.trace(inverse @ cov_q, axis1=-2, axis2=-1) + np.einsum("ni,ij,nj->n", diff, inverse, diff)
                  - d + np.linalg.slogdet(cov_p)[1] - np.linalg.slogdet(cov_q)[1])


def random_posterior(d=3, n=4, seed=0):
    layer = posterior_layer(d, standard_normal(d))
    return layer(tf.random.stateless_normal([n, posterior_params_size(d)], seed=[seed, 1]))


def test_diagonal_gaussian_log_prob_and_analytic_kl_match_closed_forms():
    d = 3
    prior = DiagonalGaussianPrior(d)
    rng = np.random.default_rng(0)
    prior.loc.assign(rng.normal(size=d).astype(np.float32))
    prior.raw_scale.assign(rng.normal(size=d).astype(np.float32))
    scale = softplus(prior.raw_scale.numpy().astype(np.float64)) + 1e-5
    p = prior.distribution()
    assert p.batch_shape == () and p.event_shape == (d,)
    z = rng.normal(size=(5, d)).astype(np.float32)
    expected = stats.multivariate_normal(prior.loc.numpy(), np.diag(scale**2)).logpdf(z)
    np.testing.assert_allclose(p.log_prob(z), expected, rtol=1e-5)
    q = random_posterior(d)
    expected_kl = gaussian_kl(q.mean().numpy().astype(np.float64), q.covariance().numpy().astype(np.float64),
                              prior.loc.numpy().astype(np.float64), np.diag(scale**2))
    np.testing.assert_allclose(tfd.kl_divergence(q, p), expected_kl, rtol=1e-4)


def test_a_fresh_diagonal_gaussian_prior_is_the_standard_normal():
    p = DiagonalGaussianPrior(2).distribution()
    z = np.array([[0.3, -1.2]], np.float32)
    np.testing.assert_allclose(p.log_prob(z), standard_normal(2).log_prob(z), rtol=1e-5)


def test_mixture_log_prob_matches_a_numpy_logsumexp():
    d, k = 2, 3
    prior = MixturePrior(d, components=k)
    rng = np.random.default_rng(1)
    prior.logits.assign(rng.normal(size=k).astype(np.float32))
    prior.locs.assign(rng.normal(size=(k, d)).astype(np.float32) * 2)
    prior.raw_scales.assign(rng.normal(size=(k, d)).astype(np.float32))
    p = prior.distribution()
    assert p.batch_shape == () and p.event_shape == (d,)
    z = rng.normal(size=(5, d)) * 2
    log_weights = prior.logits.numpy() - special.logsumexp(prior.logits.numpy())
    scales = softplus(prior.raw_scales.numpy().astype(np.float64)) + 1e-5
    # [5, k]: log pi_k + sum_j log N(z_j; loc_kj, scale_kj)
    per_component = log_weights + stats.norm(prior.locs.numpy(), scales).logpdf(z[:, None, :]).sum(-1)
    np.testing.assert_allclose(p.log_prob(z.astype(np.float32)), special.logsumexp(per_component, axis=1),
                               rtol=1e-5)
    with pytest.raises(NotImplementedError):
        tfd.kl_divergence(random_posterior(d), p)


def vamp_vae(components=4):
    return VAE(tiny_model_config(arch="mlp", posterior="diag", prior="vamp", prior_components=components))


def test_vamp_prior_is_the_mixture_of_the_pseudo_input_posteriors():
    vae = vamp_vae(components=4)
    layer = vae.prior_layer
    assert isinstance(layer, VampPrior) and layer.raw_pseudo_inputs.shape == (4,) + IMAGE_SHAPE
    layer.raw_pseudo_inputs.assign(tf.random.stateless_normal(layer.raw_pseudo_inputs.shape, seed=[2, 3]))
    # Direct: encoder outputs of u = sigmoid(raw), N(params[:d], diag(softplus(params[d:]) + 1e-5)^2) each.
    pseudo = 1 / (1 + np.exp(-layer.raw_pseudo_inputs.numpy().astype(np.float64)))
    params = vae.posterior_params(vae.encoder(pseudo.astype(np.float32))).numpy().astype(np.float64)
    loc, scale = params[:, :LATENT_DIM], softplus(params[:, LATENT_DIM:]) + 1e-5
    z = np.random.default_rng(3).normal(size=(5, LATENT_DIM))
    per_component = stats.norm(loc, scale).logpdf(z[:, None, :]).sum(-1)  # [5, 4]
    expected = special.logsumexp(per_component, axis=1) - np.log(4)
    np.testing.assert_allclose(vae.prior.log_prob(z.astype(np.float32)), expected, rtol=1e-4)
    # Building the prior adds no KL loss of its own: one ELBO, one loss.
    vae.elbo(tf.zeros((BATCH,) + IMAGE_SHAPE), seed=1)
    assert len(vae.posterior_layer.losses) == 1


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_monte_carlo_kl_shares_the_elbo_sample_and_is_log_q_minus_log_p(prior, binary_images):
    vae = VAE(tiny_model_config(arch="mlp", prior=prior, prior_components=3))
    seed = tf.constant([4, 5])
    parts = vae.elbo(binary_images, seed=seed)
    q = vae.posterior(binary_images)
    z = q.sample(seed=seed)
    direct = stats.multivariate_normal  # per row: log q(z_n | x_n) from its mean and covariance
    log_q = [direct(m, c).logpdf(v) for m, c, v in zip(q.mean().numpy().astype(np.float64),
                                                        q.covariance().numpy().astype(np.float64),
                                                        z.numpy().astype(np.float64))]
    expected = np.array(log_q) - vae.prior.log_prob(z).numpy()
    np.testing.assert_allclose(parts.kl, expected, rtol=1e-4, atol=1e-4)
    # The regularizer drew the same z, so the KL loss is the mean of the ELBO's KL.
    np.testing.assert_allclose(tf.add_n(vae.posterior_layer.losses), np.mean(parts.kl), rtol=1e-5)
    np.testing.assert_allclose(parts.elbo, parts.reconstruction - parts.kl, rtol=1e-5)


def test_monte_carlo_kl_agrees_with_the_analytic_kl_where_both_exist():
    # A one-component mixture is a diagonal Gaussian, whose KL is analytic.
    vae = VAE(tiny_model_config(arch="mlp", prior="mixture", prior_components=1), kl_weight=1.0)
    prior = vae.prior_layer
    prior.locs.assign([[0.4, -0.3]])
    prior.raw_scales.assign([[0.2, -0.5]])
    gaussian = tfd.MultivariateNormalDiag(prior.locs[0], tf.math.softplus(prior.raw_scales[0]) + 1e-5)
    x = tf.constant(np.tile(np.random.default_rng(5).uniform(size=(4,) + IMAGE_SHAPE) < 0.5, [1000, 1, 1, 1]),
                    tf.float32)  # 4 images, each 1000 times: 4000 independent one-sample estimates
    vae.elbo(x, seed=tf.constant([6, 7]))  # the posterior layer adds its KL loss at this seed
    q = vae.posterior(x)
    z = q.sample(seed=tf.constant([6, 7]))
    estimates = (q.log_prob(z) - vae.prior.log_prob(z)).numpy()
    analytic = tfd.kl_divergence(q, gaussian).numpy()
    stderr = estimates.std() / np.sqrt(estimates.size)
    # Tolerance: 4 standard errors of the 4000-sample mean.
    assert abs(estimates.mean() - analytic.mean()) < 4 * stderr, (estimates.mean(), analytic.mean(), stderr)
    np.testing.assert_allclose(tf.add_n(vae.posterior_layer.losses), estimates.mean(), rtol=1e-5)


@pytest.mark.parametrize("prior", ["diag_gaussian", "mixture", "vamp"])
def test_learned_prior_variables_train_and_checkpoint(prior, binary_images, tmp_path):
    vae = VAE(tiny_model_config(arch="mlp", prior=prior, prior_components=3))
    prior_variables = vae.prior_layer.trainable_variables
    assert prior_variables and all(any(v is w for w in vae.trainable_variables) for v in prior_variables)
    before = [v.numpy().copy() for v in prior_variables]
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss, _ = vae.training_loss(tf.constant(binary_images), seed=tf.constant([1, 2]))
    gradients = tape.gradient(loss, prior_variables)
    assert all(g is not None for g in gradients)
    optimizer.apply_gradients(zip(gradients, prior_variables))
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, prior_variables))
    path = tf.train.Checkpoint(model=vae).write(str(tmp_path / "ckpt"))
    fresh = VAE(tiny_model_config(arch="mlp", prior=prior, prior_components=3))
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    for saved, restored in zip(prior_variables, fresh.prior_layer.trainable_variables):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())


def test_prior_names_and_errors():
    assert isinstance(prior_layer("mixture", 2, components=5), MixturePrior)
    assert prior_layer("mixture", 2, components=5).locs.shape == (5, 2)
    with pytest.raises(ValueError, match="standard_normal, diag_gaussian, mixture, vamp"):
        prior_layer("flow", 2)
    with pytest.raises(ValueError, match="encoder"):
        prior_layer("vamp", 2)
    with pytest.raises(ValueError, match="prior_layer"):
        make_prior("mixture", 2)
    assert make_prior("standard_normal", 2).event_shape == (2,)


def test_mixture_prior_marginals_and_per_dimension_kl_match_numerical_integration():
    d, k = 2, 3
    prior = MixturePrior(d, components=k)
    rng = np.random.default_rng(4)
    prior.logits.assign(rng.normal(size=k).astype(np.float32))
    prior.locs.assign(rng.normal(size=(k, d)).astype(np.float32))
    prior.raw_scales.assign(rng.normal(size=(k, d)).astype(np.float32))
    p = prior.distribution()
    weights = special.softmax(prior.logits.numpy().astype(np.float64))
    scales = softplus(prior.raw_scales.numpy().astype(np.float64)) + 1e-5
    grid = np.linspace(-12, 12, 24001)
    locs = prior.locs.numpy().astype(np.float64)
    # [grid, d]: sum_k pi_k N(z; loc_ki, scale_ki)
    marginal_pdf = (weights[:, None, None]
                    * stats.norm(locs[:, None, :], scales[:, None, :]).pdf(grid[None, :, None])).sum(0)
    np.testing.assert_allclose(np.exp(prior_marginals(p).log_prob(grid[:, None].astype(np.float32))),
                               marginal_pdf, atol=1e-5)
    # One posterior q = N(m, diag(s^2)); KL(q_i || p_i) by quadrature against the mean
    # of many one-sample estimates at z ~ q.
    m, s = np.array([0.4, -0.7]), np.array([0.5, 1.3])
    q = tfd.MultivariateNormalDiag(loc=m.astype(np.float32), scale_diag=s.astype(np.float32))
    q_pdf = stats.norm(m, s).pdf(grid[:, None])
    exact = np.trapezoid(q_pdf * (np.log(q_pdf + 1e-300) - np.log(marginal_pdf)), grid, axis=0)
    z = q.sample(200_000, seed=[5, 6])
    batch = tfd.MultivariateNormalDiag(loc=tf.broadcast_to(q.loc, z.shape),
                                       scale_diag=tf.broadcast_to(s.astype(np.float32), z.shape))
    estimate = kl_per_dimension(batch, p, z).numpy().astype(np.float64)
    np.testing.assert_allclose(estimate.mean(0), exact, atol=4 * estimate.std(0).max() / np.sqrt(len(z)) + 1e-3)
    with pytest.raises(ValueError, match="pass samples z"):
        kl_per_dimension(batch, p)


@pytest.mark.parametrize("prior, posterior", [("mixture", "full"), ("vamp", "diag"), ("vamp", "full")])
def test_held_out_evaluation_works_with_mixture_priors(prior, posterior, binary_images):
    from probvae import evaluation

    vae = VAE(tiny_model_config(arch="mlp", prior=prior, posterior=posterior, prior_components=3))
    result = evaluation.evaluate(vae, binary_images, iwae_samples=4, batch_size=3, seed=1)
    assert np.isfinite(result["elbo"]) and np.isfinite(result["log_likelihood"])
    assert len(result["kl_per_dimension"]) == LATENT_DIM and np.all(np.isfinite(result["kl_per_dimension"]))
