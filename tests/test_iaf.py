"""The inverse autoregressive flow posterior ("iaf") against independent computations.

- log q(z|x) by the change of variables, written out in NumPy from the MADEs'
  weights and masks;
- with T = 0 steps it is the diagonal posterior: the same ELBO and IWAE bits;
- a linear-Gaussian model whose posterior is a correlated Gaussian: the best
  diagonal posterior misses log p(x) by a closed-form gap, the flow by much less;
- AIS and IWAE agree on a small trained model; export, hierarchy (tf.distribute:
  tests/test_distribute.py).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from probvae import evaluation, networks, objectives, seeds
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.distributions import (
    IAFPosterior,
    posterior_input_size,
    posterior_layer,
    sample_posterior,
    standard_normal,
    unwrap,
)
from probvae.errors import UserError
from probvae.model import VAE

from conftest import BATCH, IMAGE_SHAPE, tiny_model_config

D, UNITS, STEPS = 3, 5, 2  # latent, MADE width (and context), flow steps: distinct from the batch of 4


def _made_numpy(made, u, context):
    """(shift, log_scale) [n, d] of a MADE, from its Dense weights with its masks applied again."""
    dense = [layer for layer in made._network.layers if isinstance(layer, keras.layers.Dense)]
    hidden = np.asarray(u, np.float64)
    for k, mask in enumerate(made._masks):  # dense layers alternate: masked, conditional
        masked, conditional = dense[2 * k], dense[2 * k + 1]
        kernel, bias = (w.astype(np.float64) for w in masked.get_weights())
        hidden = hidden @ (kernel * mask) + bias + context @ conditional.get_weights()[0].astype(np.float64)
        if k + 1 < len(made._masks):
            hidden = np.where(hidden > 0, hidden, np.expm1(hidden))  # ELU
    out = hidden.reshape(len(u), -1, 2)  # [n, d, 2]: (shift, log_scale) of each dimension
    return out[..., 0], out[..., 1]


def _flow_numpy(layer, params, u0):
    """z and log q(z|x) [n] by hand: u_t = P (g_t u_(t-1) + (1 - g_t) m_t), g_t = 0.001 + 0.999 sigmoid(s_t + 2),
    log q = log N(u_0) - sum_t sum_i log g_t,i."""
    params = params.astype(np.float64)
    loc, scale = params[:, :D], np.log1p(np.exp(params[:, D:2 * D])) + 1e-5
    context = params[:, 2 * D:]
    log_q = np.sum(stats.norm(loc, scale).logpdf(u0), -1)
    u = u0
    for step, made in enumerate(layer.made):
        if step:
            u = u[:, ::-1]  # the reversal between steps
        shift, raw = _made_numpy(made, u, context)
        gate = 1e-3 + (1 - 1e-3) / (1.0 + np.exp(-(raw + 2.0)))  # forget-gate bias 2 (Kingma et al.), floor 1e-3
        u = gate * u + (1.0 - gate) * shift
        log_q -= np.sum(np.log(gate), -1)  # the step's Jacobian is triangular with diagonal g
    return u, log_q


@pytest.fixture
def flow():
    """The layer of the model's posterior toward N(0, I), built (the exact KL is asked for, and refused)."""
    config = ModelConfig(latent_dim=D, posterior="iaf", iaf_steps=STEPS, iaf_units=UNITS)
    layer = posterior_layer(D, standard_normal(D), covariance="iaf", use_exact_kl=True, config=config)
    assert isinstance(layer, IAFPosterior) and not layer.activity_regularizer.use_exact_kl
    params = np.random.default_rng(2).normal(size=(4, 2 * D + UNITS)).astype(np.float32)
    layer(params, seed=(1, 2))  # builds the MADEs
    return layer, params


def test_log_q_is_the_change_of_variables_through_the_mades(flow):
    layer, params = flow
    for made in layer.made:  # the masks make output i depend on inputs before i only
        path = np.linalg.multi_dot([m.astype(np.int64) for m in made._masks])  # [d, 2d]
        depends = path.reshape(D, D, 2).sum(-1) > 0  # [input, output]
        assert not np.any(np.tril(depends)) and np.any(depends)
    q = layer.distribution(params)
    u0 = np.random.default_rng(3).normal(size=(4, D))
    z, log_q = _flow_numpy(layer, params, u0)
    np.testing.assert_allclose(q.bijector.forward(u0.astype(np.float32)), z, rtol=1e-4, atol=1e-5)
    # A fresh tensor: no bijector cache, so TFP inverts the flow (the MAF's sequential pass).
    np.testing.assert_allclose(q.log_prob(tf.constant(z, tf.float32)), log_q, rtol=1e-4, atol=1e-4)
    # Importance samples: the Gaussian's draws through the flow at once, as k calls of `sample` draw them.
    seed = tf.constant([3, 4])
    together = objectives.posterior_samples(q, seed, tf.range(5)).numpy()  # [5, 4, d]
    one_by_one = np.stack([q.sample(seed=objectives.sample_seed(seed, k)).numpy() for k in range(5)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)
    # The layer's Monte Carlo KL toward N(0, I) is log q - log p at its own sample.
    sample = sample_posterior(q, tf.constant([5, 6])).numpy()
    expected = q.log_prob(tf.constant(sample)).numpy() - np.sum(stats.norm().logpdf(sample), -1)
    layer_kl = layer.activity_regularizer.kl(q, prior=standard_normal(D), seed=tf.constant([5, 6]))
    np.testing.assert_allclose(layer_kl, expected, rtol=1e-4, atol=1e-4)


def _model(posterior, prior="standard_normal", **changes):
    config = tiny_model_config(arch="mlp", latent_dim=D, posterior=posterior, prior=prior, prior_components=3,
                               **changes)
    return VAE(config)


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_zero_steps_is_the_diagonal_posterior_bit_for_bit(binary_images, prior):
    diagonal = _model("diag", prior)
    flowless = _model("iaf", prior, iaf_steps=0)
    assert [w.shape for w in flowless.weights] == [w.shape for w in diagonal.weights]
    flowless.set_weights(diagonal.get_weights())
    for name in ("elbo", "reconstruction", "kl"):
        np.testing.assert_array_equal(getattr(flowless.elbo(binary_images, seed=4), name),
                                      getattr(diagonal.elbo(binary_images, seed=4), name))
    np.testing.assert_array_equal(flowless.log_likelihood(binary_images, 9, seed=3),
                                  diagonal.log_likelihood(binary_images, 9, seed=3))
    # With steps, the same weights give another posterior (the flow's MADEs act).
    flowing = _model("iaf", prior, iaf_steps=1)
    assert len(flowing.trainable_weights) > len(diagonal.trainable_weights)


@pytest.mark.parametrize("latent_layers", [1, 2])
def test_the_importance_weighted_loss_takes_log_q_from_the_draws_without_inverting_the_flow(binary_images,
                                                                                           latent_layers):
    """The flow's inverse is a sequential loop (a While in the graph); at its own
    draws q(z|x) needs none. K = 1 is the ELBO objective at the same sample, and
    K = 3 the bound with log q by the inverse at copies of the samples."""
    changes = dict(arch="mlp", latent_dim=(3, 2)[:latent_layers], latent_layers=latent_layers, posterior="iaf",
                   iaf_steps=2, iaf_units=6, prior="vamp", prior_components=3)
    if latent_layers == 2:
        changes["level_units"] = 5
    elbo_model = VAE(tiny_model_config(**changes))
    x, seed = tf.constant(binary_images[:6]), tf.constant([4, 5])
    elbo_loss, _ = elbo_model.training_loss(x, seed)
    for samples in (1, 3):
        iwae_model = VAE(tiny_model_config(**changes), train_samples=samples)
        iwae_model.training_loss(x, seed)
        iwae_model.set_weights(elbo_model.get_weights())
        loss = tf.function(lambda x, model=iwae_model: model.training_loss(x, seed)[0])
        graph = loss.get_concrete_function(x).graph
        assert not [op.type for op in graph.get_operations() if "While" in op.type], samples
        if samples == 1 and latent_layers == 1:  # (a lower level's KL is analytic in the ELBO objective)
            np.testing.assert_allclose(loss(x), elbo_loss, rtol=1e-5)
    # K = 3 against log q(z|x) by TFP's own inverse of the flow at copies of the same samples.
    terms = iwae_model.elbo_terms(x, seed, training=True)
    z = tf.stack([terms.z] + [iwae_model.joint_sample(terms.features, terms.top, seeds.sample_seed(seed, k))
                              for k in (1, 2)])  # [3, n, D]
    log_px = tf.stack([iwae_model.likelihood(sample).log_prob(x) for sample in tf.unstack(z)])
    log_w = log_px + terms.prior.log_prob(z) - terms.posterior.log_prob(tf.identity(z))
    np.testing.assert_allclose(loss(x), -tf.reduce_mean(objectives.iwae_bound(log_w, 1.0, log_px)), rtol=1e-5)


def test_every_prior_trains_and_the_kl_is_counted_once(binary_images):
    for prior in ("standard_normal", "diag_gaussian", "mixture", "vamp"):
        vae = _model("iaf", prior, iaf_steps=STEPS, iaf_units=UNITS)
        seed = tf.constant([2, 9])
        with tf.GradientTape() as tape:
            loss, parts = vae.training_loss(binary_images, seed=seed)
        # -mean reconstruction + mean KL, the KL the one-sample log q - log p at the ELBO's z.
        np.testing.assert_allclose(loss, -np.mean(parts.reconstruction) + np.mean(parts.kl), rtol=1e-5)
        terms = vae.elbo_terms(binary_images, seed=seed)
        fresh = tf.constant(terms.z.numpy())
        np.testing.assert_allclose(parts.kl, terms.top.log_prob(fresh) - terms.prior.log_prob(fresh),
                                   rtol=1e-4, atol=1e-4)
        made_grads = tape.gradient(loss, vae.posterior_layer.trainable_weights)
        assert all(g is not None for g in made_grads) and any(float(tf.reduce_max(tf.abs(g))) > 0
                                                              for g in made_grads), prior


def test_a_step_keeps_the_mades_masked_and_a_hierarchy_trains(binary_images):
    vae = _model("iaf", "vamp", latent_layers=2, level_units=6, iaf_units=UNITS)
    assert vae.latent_dim == 2 * D
    optimizer = keras.optimizers.Adam(0.01)
    before = [w.numpy() for w in vae.trainable_weights]
    for step in range(2):
        with tf.GradientTape() as tape:
            loss, _ = vae.training_loss(binary_images, seed=(step, 1))
        optimizer.apply_gradients(zip(tape.gradient(loss, vae.trainable_weights), vae.trainable_weights))
    assert np.isfinite(float(loss))
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, vae.trainable_weights)]
    assert all(changed)
    for made in vae.posterior_layer.made:
        dense = [layer for layer in made._network.layers if isinstance(layer, keras.layers.Dense)]
        for k, mask in enumerate(made._masks):  # the kernel constraint re-applies the mask after each update
            kernel = dense[2 * k].kernel.numpy()
            assert np.all(kernel[mask == 0] == 0) and np.any(kernel[mask == 1] != 0)
    statistics = vae.latent_statistics(vae.elbo_terms(binary_images, seed=3))
    assert statistics.stddev.shape == (BATCH, 2 * D) and np.all(np.isfinite(statistics.kl_per_dimension))


def test_the_flow_is_in_the_config_and_the_memory_estimate():
    config = tiny_model_config(arch="mlp", latent_dim=D, posterior="iaf", iaf_steps=3, iaf_units=11)
    assert (config.iaf_steps, config.iaf_units) == (3, 11)
    assert posterior_input_size(D, config) == 2 * D + 11
    assert posterior_input_size(D, config.replace(iaf_steps=0)) == 2 * D
    vae = VAE(config)
    made_weights = sum(int(np.prod(w.shape)) for made in vae.posterior_layer.made for w in made.weights)
    assert IAFPosterior.flow_size(D, config)[0] == made_weights
    rows = 5
    assert (networks.memory_estimate(config, rows) - networks.memory_estimate(config.replace(iaf_steps=0), rows)
            == 4 * (4 * (made_weights + 11 * (7 + 1)) + rows * (11 + IAFPosterior.flow_size(D, config)[1])))
    with pytest.raises(UserError, match="iaf_steps"):
        tiny_model_config(posterior="iaf", iaf_steps=-1)


def test_flags_reach_the_config_and_unchosen_ones_are_refused(tmp_path, monkeypatch, capsys):
    from test_config_flags import run_fit

    from probvae.cli import fit

    config = fit.config_from_args(fit.parse_args(["--posterior", "iaf", "--iaf-steps", "4", "--iaf-units", "64"]))
    assert (config.model.posterior, config.model.iaf_steps, config.model.iaf_units) == ("iaf", 4, 64)
    code, lines = run_fit(["--dataset", "shapes", "--iaf-steps", "3", "--dry-run"], tmp_path, monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "--iaf-steps belongs to the posterior iaf" in lines[0], lines
    assert os.listdir(tmp_path) == []


# --- a correlated Gaussian posterior: the linear-Gaussian model ---------------------

PIXELS, SHAPE, NOISE = 4, (2, 2, 1), 0.1
# Two nearly parallel loadings: the posterior's precision I + W^T W / s^2 has correlation -0.9.
LOADINGS = np.array([[0.30, 0.27], [0.10, 0.12], [-0.05, -0.02], [0.02, 0.05]])
OFFSET = np.full(PIXELS, 0.5)


def _linear_gaussian(posterior):
    """A VAE whose decoder is the linear-Gaussian model x = W z + b + s eps, frozen."""
    vae = VAE(ModelConfig(arch="mlp", hidden_units=(), latent_dim=2, posterior=posterior, likelihood="normal",
                          normal_scale="shared", image_shape=SHAPE, iaf_steps=2, iaf_units=16))
    vae.decoder.layers[0].set_weights([LOADINGS.T.astype(np.float32), OFFSET.astype(np.float32)])
    vae.likelihood_head.raw_scale.assign(np.log(np.expm1(NOISE - 1e-3)))
    return vae


def _fit_encoder(vae, x, steps):
    """Adam on the ELBO over the encoder and posterior weights only (the model stays the exact one)."""
    variables = vae.encoder.trainable_weights + vae.posterior_params.trainable_weights \
        + vae.posterior_layer.trainable_weights
    optimizer = keras.optimizers.Adam(0.02)

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(vae.elbo_terms(x, seed=seed).parts.elbo)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for index in range(steps):
        step(tf.constant([index, 7]))


def _correlated_images():
    """16 images of the linear-Gaussian model (clipped to [0, 1]) and their exact log p(x) [16]."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 2)) @ LOADINGS.T + OFFSET + NOISE * rng.normal(size=(16, PIXELS))
    x = np.clip(x, 0, 1).astype(np.float32).reshape((16,) + SHAPE)
    return x, _exact_evidence(x)


def _exact_evidence(x):
    """log N(x; b, W W^T + s^2 I) of float images x [n, 2, 2, 1]."""
    return stats.multivariate_normal(OFFSET, LOADINGS @ LOADINGS.T + NOISE**2 * np.eye(PIXELS)).logpdf(
        np.reshape(x, (len(x), -1)).astype(np.float64))


@pytest.fixture(scope="module")
def fitted():
    """{posterior: the linear-Gaussian VAE with its encoder fitted to the 16 images}, diag and iaf."""
    x, _ = _correlated_images()
    models = {}
    for posterior in ("diag", "iaf"):
        models[posterior] = _linear_gaussian(posterior)
        _fit_encoder(models[posterior], tf.constant(x), 600)
    return models


def test_the_flow_closes_most_of_the_diagonal_gap_to_a_correlated_posterior(fitted):
    x, exact = _correlated_images()
    # Best diagonal q for the Gaussian posterior of precision P: KL = 0.5 (sum_i log P_ii - log det P).
    precision = np.eye(2) + LOADINGS.T @ LOADINGS / NOISE**2
    best_diagonal_gap = 0.5 * (np.sum(np.log(np.diag(precision))) - np.linalg.slogdet(precision)[1])
    assert best_diagonal_gap > 0.75  # correlation about -0.9: -0.5 log(1 - 0.81) = 0.83 nats
    gaps = {}
    for posterior, vae in fitted.items():
        elbo = vae.elbo(np.tile(x, (200, 1, 1, 1)), seed=0).elbo.numpy().reshape(200, 16).mean(0)  # [16]
        gaps[posterior] = float(np.mean(exact - elbo))
    assert gaps["diag"] == pytest.approx(best_diagonal_gap, abs=0.15)
    assert -0.05 < gaps["iaf"] < 0.4 * best_diagonal_gap, gaps


def test_ais_from_the_flow_reaches_the_exact_log_likelihood_and_bdmc_starts_at_its_inverse(fitted):
    """AIS from a flow posterior anneals in the flow's Gaussian variable v, z = f(v),
    toward p(f(v)) p(x|f(v)) |det df/dv|: without the Jacobian its normaliser would
    be off by the flow's log-determinant, here about a nat."""
    vae = fitted["iaf"]
    x, exact = _correlated_images()
    q = unwrap(vae.posterior(tf.constant(x)))
    v = q.distribution.sample(200, seed=(3, 4))  # [200, 16, 2]
    log_det = q.bijector.forward_log_det_jacobian(v, event_ndims=1).numpy()
    assert np.mean(np.abs(log_det)) > 0.5, np.mean(log_det)  # the term matters at this tolerance
    estimate = evaluation.ais_log_likelihood(vae, x, num_steps=200, num_chains=8, seed=2)
    error = estimate.mean - exact.mean()
    assert abs(error) < 3 * estimate.mean_mc_stderr + 0.01, (error, estimate.mean_mc_stderr)
    # One backward step weighs its start v = f^-1(z), z the latent that generated x, by
    # p(x, z) |det df/dv| / N(v; loc, scale): BDMC's upper bound is then log p(x, z) - log q(z|x)
    # for each image, here with q's density from TFP's own (sequential) inverse of the flow.
    result = evaluation.bdmc(vae, 12, num_steps=1, num_chains=2, seed=8)
    images, z = tf.constant(result.images), tf.constant(result.latents)
    terms = vae.elbo_terms(images, seed=(0, 0))
    expected = terms.prior.log_prob(z) + vae.likelihood(z).log_prob(images) - unwrap(terms.posterior).log_prob(z)
    np.testing.assert_allclose(result.upper, expected, rtol=1e-5, atol=1e-4)


# --- a small trained model: AIS against IWAE; export ------------------------------------


@pytest.fixture(scope="module")
def trained():
    """A tiny IAF VAE on 8x8 binary images after 60 Adam steps."""
    tf.random.set_seed(1)
    vae = VAE(tiny_model_config(arch="mlp", latent_dim=2, posterior="iaf", iaf_steps=2, iaf_units=6))
    images = (np.random.default_rng(8).uniform(size=(24,) + IMAGE_SHAPE) < 0.3).astype(np.float32)
    images[:12, :4] = 1.0  # two kinds of image
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            loss, _ = vae.training_loss(images, seed=seed)
        optimizer.apply_gradients(zip(tape.gradient(loss, vae.trainable_weights), vae.trainable_weights))

    for index in range(60):
        step(tf.constant([index, 2]))
    return vae, images[::4]


def test_ais_and_iwae_agree_on_a_trained_model(trained):
    vae, images = trained
    iwae = vae.log_likelihood(images, 4000, seed=1).numpy()
    ais = evaluation.ais_log_likelihood(vae, images, num_steps=60, num_chains=4, seed=2)
    error = ais.mean - iwae.mean()
    assert abs(error) < 3 * ais.mean_mc_stderr + 0.05, (error, ais.mean_mc_stderr)
    elbo = vae.elbo(np.tile(images, (50, 1, 1, 1)), seed=0).elbo.numpy().mean()  # 50 draws for each image
    assert elbo < iwae.mean() - 0.01  # the bounds are ordered: the flow leaves a gap K samples close


def test_the_export_loads_without_probvae_and_computes_the_library_numbers(trained, tmp_path):
    from test_export import LOADER

    from probvae.export import export_model

    vae, images = trained
    out = export_model(vae, str(tmp_path / "saved"))
    z = vae.sample(4, seed=1).z.numpy()
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "z.npy", z)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", LOADER, out, str(tmp_path / "images.npy"),
                             str(tmp_path / "z.npy"), str(tmp_path / "outputs.npz")],
                            capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
    np.testing.assert_allclose(outputs["loc"], vae.location(tf.constant(images)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs["log_likelihood"], vae.log_likelihood(images, 7, seed=(0, 0)),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs["mean"], vae.decode(z), rtol=1e-5, atol=1e-6)


def test_the_linearisation_is_the_flows_own_jacobian(trained):
    """The per-dimension statistics read N(f(m), J S S^T J^T): J by finite differences here."""
    vae, images = trained
    terms = vae.elbo_terms(images, seed=3)
    top, statistics = terms.top, vae.latent_statistics(terms)
    loc = top.distribution.mean().numpy().astype(np.float64)
    step = 1e-3
    columns = [(top.bijector.forward((loc + step * e).astype(np.float32)).numpy()
                - top.bijector.forward((loc - step * e).astype(np.float32)).numpy()) / (2 * step)
               for e in np.eye(2)]
    jacobian = np.stack(columns, -1)  # [n, d, d]
    scale = top.distribution.stddev().numpy()
    covariance = np.einsum("nij,nj,nkj->nik", jacobian, scale**2, jacobian)
    np.testing.assert_allclose(statistics.stddev, np.sqrt(np.diagonal(covariance, axis1=1, axis2=2)),
                               rtol=2e-2, atol=1e-3)
    np.testing.assert_allclose(statistics.location, top.bijector.forward(loc.astype(np.float32)), rtol=1e-6)
