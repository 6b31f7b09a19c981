"""The hierarchical VAE (`latent_layers=2`) against closed forms and direct computations.

A two-level linear-Gaussian model has an exact evidence and posterior:

    z2 ~ N(0, 1),  z1 | z2 ~ N(A z2 + a, diag(s^2)),  x | z1, z2 ~ N(W1 z1 + W2 z2 + b, sigma^2 I)

so (z2, z1, x) is jointly Gaussian, log p(x) is a Gaussian density, and
p(z2 | x), p(z1 | x, z2) are Gaussians whose means are linear in (x, z2).
probvae's hierarchy with `arch="mlp", hidden_units=(), activation="linear"`
is exactly this family (every network linear), so with the exact posterior
set as its weights every importance weight equals p(x).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from probvae import data, evaluation
from probvae.analysis import inspection
from probvae.config import ModelConfig
from probvae.distributions.likelihoods import NORMAL_SCALE_FLOOR
from probvae.distributions.posteriors import SCALE_FLOOR
from probvae.model import VAE

tfb = tfp.bijectors

SHAPE = (3, 2, 1)  # D = 6 pixels
D1, D2 = 2, 1  # latent sizes, bottom first
UNITS = 7  # level_units: room for [x (6), z2 (1)]
A = np.array([[0.8], [-0.5]])  # [d1, d2]
A_OFFSET = np.array([0.1, -0.2])
S = np.array([0.6, 0.4])
W1 = np.array([[0.20, 0.10], [0.10, 0.15], [-0.10, 0.05], [0.05, -0.10], [0.15, 0.10], [0.00, 0.10]])  # [D, d1]
W2 = np.array([[0.10], [-0.05], [0.12], [0.00], [0.08], [-0.10]])  # [D, d2]
B = np.full(6, 0.5)
SIGMA = 0.1


def joint_gaussian():
    """Mean [9] and covariance [9, 9] of v = (z2, z1, x)."""
    # v = mean + L e with e ~ N(0, I_9): z2 = e0, z1 = a + A e0 + s e12, x = b + W1 z1 + W2 z2 + sigma e_x.
    factor = np.zeros((9, 9))
    factor[0, 0] = 1.0
    factor[1:3, 0:1] = A
    factor[1:3, 1:3] = np.diag(S)
    factor[3:, :3] = W1 @ factor[1:3, :3] + W2 @ factor[0:1, :3]
    factor[3:, 3:] = SIGMA * np.eye(6)
    mean = np.concatenate([[0.0], A_OFFSET, B + W1 @ A_OFFSET])
    return mean, factor @ factor.T


def condition(mean, cov, target, given):
    """(gain G, offset c, covariance C) of v[target] | v[given] = N(c + G v[given], C)."""
    gain = cov[np.ix_(target, given)] @ np.linalg.inv(cov[np.ix_(given, given)])
    offset = mean[target] - gain @ mean[given]
    return gain, offset, cov[np.ix_(target, target)] - gain @ cov[np.ix_(given, target)]


def raw_tril(covariance):
    return tfb.FillScaleTriL(diag_shift=np.float32(SCALE_FLOOR)).inverse(
        np.linalg.cholesky(covariance).astype(np.float32)).numpy()


@pytest.fixture(scope="module")
def linear_model():
    return VAE(ModelConfig(arch="mlp", hidden_units=(), activation="linear", latent_dim=(D1, D2), latent_layers=2,
                           level_units=UNITS, posterior="full", likelihood="normal", normal_scale="shared",
                           image_shape=SHAPE))


def set_exact(model, shift=0.0, widen=1.0):
    """The linear hierarchy's weights: the generative model above, and q = the
    exact posterior (its z2 mean shifted by `shift`, its scales times `widen`)."""
    mean, cov = joint_gaussian()
    x_index, z2_index, z1_index = list(range(3, 9)), [0], [1, 2]
    f32 = lambda value: np.asarray(value, np.float32)  # noqa: E731
    # Decoder: x = [W1 W2] [z1; z2] + b, shared scale sigma.
    model.decoder.layers[0].set_weights([f32(np.concatenate([W1, W2], axis=1).T), f32(B)])
    model.likelihood_head.raw_scale.assign(np.log(np.expm1(SIGMA - NORMAL_SCALE_FLOOR)))
    # q(z2 | x): gain over the flattened x.
    gain, offset, covariance = condition(mean, cov, z2_index, x_index)
    kernel = np.zeros((6, 2))
    kernel[:, 0] = gain[0]
    bias = np.concatenate([offset + shift, raw_tril(widen**2 * covariance)])
    model.posterior_params.set_weights([f32(kernel), f32(bias)])
    level = model.levels[0]
    # q(z1 | x, z2): hidden(z2) puts z2 at unit 6; the joint layer passes [x, z2] through.
    above = np.zeros((1, UNITS))
    above[0, 6] = 1.0
    level.posterior_above.set_weights([f32(above), f32(np.zeros(UNITS))])
    joint = np.zeros((6 + UNITS, UNITS))
    joint[:6, :6] = np.eye(6)
    joint[6 + 6, 6] = 1.0
    level.posterior_joint.set_weights([f32(joint), f32(np.zeros(UNITS))])
    gain, offset, covariance = condition(mean, cov, z1_index, x_index + z2_index)  # over [x, z2]
    params = np.zeros((UNITS, D1 + 3))
    params[:, :D1] = gain.T
    level.posterior_params.set_weights([f32(params), f32(np.concatenate([offset, raw_tril(widen**2 * covariance)]))])
    # p(z1 | z2) = N(A z2 + a, diag(s^2)): z2 through two identity-like layers.
    first = np.zeros((1, UNITS))
    first[0, 0] = 1.0
    level.prior_body[0].set_weights([f32(first), f32(np.zeros(UNITS))])
    level.prior_body[1].set_weights([f32(np.eye(UNITS)), f32(np.zeros(UNITS))])
    params = np.zeros((UNITS, 2 * D1))
    params[0, :D1] = A[:, 0]
    level.prior_params.set_weights([f32(params), f32(np.concatenate([A_OFFSET, np.log(np.expm1(S - SCALE_FLOOR))]))])
    return model


def samples(n, seed=0):
    """x [n, 3, 2, 1] drawn from the linear model (float32, not clipped)."""
    mean, cov = joint_gaussian()
    v = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)
    return v[:, 3:].reshape((n,) + SHAPE).astype(np.float32)


def exact_log_likelihood(x):
    mean, cov = joint_gaussian()
    return stats.multivariate_normal(mean[3:], cov[3:, 3:]).logpdf(x.reshape(len(x), -1).astype(np.float64))


def test_with_the_exact_posterior_every_importance_weight_is_the_evidence(linear_model):
    model = set_exact(linear_model)
    x = samples(200)
    exact = exact_log_likelihood(x)
    for k in (1, 7):
        estimate = evaluation.importance_sampling(model, tf.constant(x), k, seed=4)
        # log w = log p(x, z1, z2) - log q(z1, z2 | x) = log p(x) for every sample of both levels.
        np.testing.assert_allclose(estimate.log_likelihood, exact, rtol=1e-5, atol=3e-4)
        np.testing.assert_allclose(estimate.effective_sample_size, k, rtol=1e-3)
    # The ELBO estimator (analytic KLs given the sampled z2) is unbiased for ELBO = log p(x) here.
    elbo = model.elbo(tf.constant(np.tile(x, (20, 1, 1, 1))), seed=tf.constant([5, 0])).elbo.numpy()  # 20 draws each
    difference = elbo - np.tile(exact, 20)
    assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(len(difference)) + 1e-4


def test_with_a_wrong_posterior_elbo_is_below_and_iwae_approaches_the_evidence(linear_model):
    model = set_exact(linear_model, shift=0.7, widen=1.5)
    x = samples(150, seed=1)
    exact = exact_log_likelihood(x)
    gaps = []
    for k in (1, 30, 3000):
        estimate = evaluation.log_likelihood(model, tf.constant(x), k, seed=6).numpy()
        mean, stderr = evaluation.mean_and_stderr(exact - estimate)
        assert mean > -4 * stderr  # a lower bound, up to noise
        gaps.append(mean)
    assert gaps[0] > 0.2 and gaps[1] < gaps[0] / 3 and abs(gaps[2]) < 0.02, gaps


def test_the_exact_posterior_is_what_the_model_states(linear_model):
    model = set_exact(linear_model)
    x = samples(5, seed=2)
    mean, cov = joint_gaussian()
    terms = model.elbo_terms(tf.constant(x), tf.constant([1, 2]))
    bottom, top = terms.levels
    gain, offset, covariance = condition(mean, cov, [0], list(range(3, 9)))
    flat = x.reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(top.posterior.mean(), flat @ gain.T + offset, atol=1e-5)
    np.testing.assert_allclose(top.posterior.covariance()[0], covariance, rtol=1e-4)
    gain, offset, covariance = condition(mean, cov, [1, 2], list(range(3, 9)) + [0])
    given = np.concatenate([flat, top.z.numpy()], axis=1)
    np.testing.assert_allclose(bottom.posterior.mean(), given @ gain.T + offset, atol=1e-5)
    np.testing.assert_allclose(bottom.prior.mean(), top.z.numpy() @ A.T + A_OFFSET, atol=1e-5)
    # The location: E[z2 | x], then E[z1 | x, z2] at z2 = E[z2 | x].
    top_mean = top.posterior.mean().numpy()
    location = np.concatenate([np.concatenate([flat, top_mean], axis=1) @ gain.T + offset, top_mean], axis=1)
    np.testing.assert_allclose(model.location(tf.constant(x)), location, atol=1e-5)
    assert terms.z.shape == (5, D1 + D2)
    np.testing.assert_array_equal(terms.z[:, :D1], bottom.z)
    np.testing.assert_array_equal(terms.z[:, D1:], top.z)


@pytest.fixture(scope="module")
def gated_vamp():
    """A small nonlinear hierarchy: gated layers, VampPrior on the top level, diagonal posteriors."""
    return VAE(ModelConfig(arch="gated", hidden_units=(9,), latent_dim=(3, 2), latent_layers=2, level_units=5,
                           posterior="diag", prior="vamp", prior_components=4, image_shape=(4, 3, 1)))


def test_the_elbo_is_the_monte_carlo_average_of_the_joint_log_ratio(gated_vamp):
    """E[ELBO estimate] = E_q[log p(x|z) + log p(z2) + log p(z1|z2) - log q(z2|x) - log q(z1|x,z2)],
    the right side computed from the conditionals' parameters with scipy (one
    batch holding each of 2 images 400 times: 400 independent samples each)."""
    model, repeats = gated_vamp, 400
    images = (np.random.default_rng(3).uniform(size=(2, 4, 3, 1)) < 0.5).astype(np.float32)
    x = tf.constant(np.repeat(images, repeats, axis=0))  # [800, 4, 3, 1]
    terms = model.elbo_terms(x, tf.constant([7, 1]))
    bottom, top = terms.levels
    z1, z2 = bottom.z.numpy().astype(np.float64), top.z.numpy().astype(np.float64)
    normal = lambda q, z: stats.norm(q.mean().numpy(), q.stddev().numpy()).logpdf(z).sum(-1)  # noqa: E731
    # p(z2): the VampPrior, an equal mixture of q(z2 | u_k).
    components = model.prior_layer.distribution().components_distribution
    log_p_z2 = np.logaddexp.reduce(
        [stats.norm(components.mean()[k].numpy(), components.stddev()[k].numpy()).logpdf(z2).sum(-1)
         for k in range(4)], axis=0) - np.log(4)
    pixels = stats.bernoulli(model.likelihood(terms.z).mean().numpy()).logpmf(x.numpy()).reshape(len(z1), -1).sum(-1)
    direct = (pixels + log_p_z2 + normal(bottom.prior, z1) - normal(top.posterior, z2)
              - normal(bottom.posterior, z1)).reshape(2, repeats)
    estimates = terms.parts.elbo.numpy().reshape(2, repeats)
    difference = estimates.mean(1) - direct.mean(1)
    stderr = np.sqrt(estimates.var(1) / repeats + direct.var(1) / repeats)
    assert np.all(np.abs(difference) < 4 * stderr + 1e-3), (difference, stderr)


def test_importance_weights_at_k1_average_to_the_elbo(gated_vamp):
    model, repeats = gated_vamp, 300
    images = (np.random.default_rng(4).uniform(size=(3, 4, 3, 1)) < 0.5).astype(np.float32)
    x = tf.constant(np.repeat(images, repeats, axis=0))
    elbo = model.elbo(x, seed=tf.constant([8, 0])).elbo.numpy().reshape(3, repeats)
    k1 = evaluation.log_likelihood(model, x, 1, seed=3).numpy().reshape(3, repeats)
    stderr = np.sqrt(elbo.var(1) / repeats + k1.var(1) / repeats)
    assert np.all(np.abs(elbo.mean(1) - k1.mean(1)) < 4 * stderr), (elbo.mean(1), k1.mean(1), stderr)
    k50 = evaluation.log_likelihood(model, tf.constant(images), 50, seed=1).numpy()
    assert np.all(k50 > elbo.mean(1) - 4 * stderr)


def test_inspection_and_evaluation_cover_both_levels(gated_vamp):
    model = gated_vamp
    images = (np.random.default_rng(5).uniform(size=(11, 4, 3)) * 255).astype(np.uint8)
    x = model.prepare_inputs(images).numpy()
    marginals = inspection.latent_marginals(model, x, batch_size=4)
    assert marginals.samples.shape == (11, 5) and marginals.kl.shape == (5,)
    assert marginals.level.tolist() == [1, 1, 1, 2, 2] and marginals.prior_ks.shape == (5,)
    assert marginals.to_dict()["dims"][4]["level"] == 2
    result = evaluation.evaluate(model, images, iwae_samples=3, batch_size=4, seed=1)
    assert result["latent_dim"] == 5
    assert len(result["kl_per_dimension"]) == 5 and np.isfinite(result["kl_total_correlation"])
    # E[IWAE_3(x) - ELBO(x)] >= 0 for every image: the difference, paired on 30 draws of each image, is at
    # least -3 standard errors of its mean (its Monte Carlo error).
    values = evaluation.per_example(model, data.evaluation_batches(np.repeat(images, 30, axis=0), 110, binarize=True,
                                                                   seed=0), seed=4, iwae_samples=3)
    mean, stderr = evaluation.mean_and_stderr(values["log_likelihood"] - values["elbo"])
    assert mean > -3 * stderr, (mean, stderr)
    posterior = inspection.inspect_posterior(model, images[:2], num_samples=3)
    assert posterior.z.shape == (2, 3, 5) and posterior.correlation.shape == (2, 5, 5)
    assert np.isnan(posterior.correlation[0, 0, 4]) and posterior.correlation[0, 0, 0] == pytest.approx(1.0)
    z, means, _ = inspection.prior_samples(model, 4)
    assert z.shape == (4, 5) and means.shape == (4, 4, 3, 1)
    batches = data.evaluation_batches(images, 4, binarize=True, seed=0)
    assert len(evaluation.per_example(model, batches, seed=2)["elbo"]) == 11


def test_config_sizes_per_level():
    config = ModelConfig(latent_dim=40, latent_layers=2)
    assert config.latent_dims == (40, 40)
    assert ModelConfig(latent_dim=(40,)).latent_dim == 40
    with pytest.raises(ValueError, match="one size per layer"):
        ModelConfig(latent_dim=(4, 5, 6), latent_layers=2)


def test_two_sample_ks_matches_scipy():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(37, 3)), rng.normal(0.3, 1.2, size=(52, 3))
    expected = [stats.ks_2samp(a[:, j], b[:, j]).statistic for j in range(3)]
    np.testing.assert_allclose(inspection.two_sample_ks(a, b), expected, rtol=1e-12)


def test_three_levels_each_conditioned_on_the_level_above(binary_images):
    # Distinct sizes, so a level read in place of another fails on its shape or its value.
    model = VAE(ModelConfig(arch="mlp", hidden_units=(7,), latent_dim=(2, 3, 4), latent_layers=3, level_units=5,
                            image_shape=binary_images.shape[1:]))
    x = tf.constant(binary_images)
    terms = model.elbo_terms(x, seed=(4, 5))
    z1, z2, z3 = tf.split(terms.z, [2, 3, 4], axis=-1)
    features, top = model.encoder(x), terms.top
    bottom, middle = model.levels
    # Level by level: q(z_l | x, z_(l+1)) and p(z_l | z_(l+1)) at the sampled level above, analytic KLs.
    q2, q1 = middle.posterior(features, z3), bottom.posterior(features, z2)
    kl = (tfp.distributions.kl_divergence(top, model.prior_layer.distribution())
          + tfp.distributions.kl_divergence(q2, middle.prior(z3))
          + tfp.distributions.kl_divergence(q1, bottom.prior(z2)))
    np.testing.assert_allclose(terms.parts.kl, kl, rtol=1e-5)
    np.testing.assert_allclose(terms.parts.reconstruction, model.likelihood(terms.z).log_prob(x), rtol=1e-5)
    np.testing.assert_allclose(terms.posterior.log_prob(terms.z), top.log_prob(z3) + q2.log_prob(z2) + q1.log_prob(z1),
                               rtol=1e-5)
    # The location: each level's mean at the location of the level above.
    m3 = top.mean()
    m2 = middle.posterior(features, m3).mean()
    m1 = bottom.posterior(features, m2).mean()
    np.testing.assert_allclose(model.location(x), tf.concat([m1, m2, m3], axis=-1), rtol=1e-5, atol=1e-6)
