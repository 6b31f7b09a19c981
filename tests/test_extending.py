"""docs/extending.md as a test: components registered from a user's own file
(docs/examples/custom_components.py, nothing under probvae/ edited) train,
evaluate and load like the built-in ones."""

import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from probvae import evaluation, runs
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.data import evaluation_batches, load_config_dataset
from probvae.model import VAE
from probvae.training import fit

tfd = tfp.distributions
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def components():
    spec = importlib.util.spec_from_file_location(
        "custom_components", os.path.join(ROOT, "docs", "examples", "custom_components.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    from probvae.registry import LIKELIHOODS, NETWORKS, PRIORS

    for registry, name in ((PRIORS, "laplace"), (LIKELIHOODS, "beta"), (NETWORKS, "resnet")):
        registry._entries.pop(name, None)  # leave the registries as other tests expect them


@pytest.fixture(scope="module")
def grey_npz(tmp_path_factory):
    """36 train and 12 test 6x6 grey images with values 1..254 (inside (0, 1) once scaled)."""
    rng = np.random.default_rng(5)
    path = str(tmp_path_factory.mktemp("grey") / "grey.npz")
    np.savez(path, x_train=rng.integers(1, 255, (36, 6, 6, 1)).astype(np.uint8),
             x_test=rng.integers(1, 255, (12, 6, 6, 1)).astype(np.uint8))
    return f"npz:{path}"


def _train_one_step_and_evaluate(run_dir, data, model):
    config = RunConfig(data=DataConfig(**data), model=ModelConfig(latent_dim=2, **model),
                       train=TrainConfig(epochs=1, batch_size=27, eval_batch_size=7, test_iwae_samples=4, seed=3,
                                         lr_schedule="constant", checkpoint_every_steps=0,
                                         jit_compile=False))  # one step: no XLA to compile
    metrics = fit(config, run_dir, log=lambda _: None)
    assert len(metrics["epochs"]) == 1 and metrics["parameters"] > 0
    test = metrics["test"]
    assert np.isfinite([test["elbo"], test["log_likelihood"]]).all()
    # E[IWAE_4(x) - ELBO(x)] >= 0 for every image: the difference, paired on 20 draws of each of the 12 test
    # images (K = 4 as the final test), is at least -3 standard errors of its mean, its Monte Carlo error.
    vae = runs.load_run(run_dir)
    images = np.repeat(np.asarray(load_config_dataset(config).x_test), 20, axis=0)
    batches = evaluation_batches(images, 60, binarize=vae.likelihood_head.binarize, seed=0)
    values = evaluation.per_example(vae, batches, seed=5, iwae_samples=4)
    mean, stderr = evaluation.mean_and_stderr(values["log_likelihood"] - values["elbo"])
    assert mean > -3 * stderr, (mean, stderr)
    return metrics


def test_a_laplace_prior_from_a_users_file(components, tmp_path):
    _train_one_step_and_evaluate(str(tmp_path / "laplace"), {"dataset": "npz:" + _shapes_npz(tmp_path)},
                                 {"prior": "laplace", "laplace_scale": 0.5, "hidden_units": (9,)})
    vae = runs.load_run(str(tmp_path / "laplace"))
    assert vae.config.laplace_scale == 0.5 and runs.load_config(str(tmp_path / "laplace")).model.prior == "laplace"
    # p(z) is the Laplace density: checked against scipy.
    z = np.array([[0.3, -1.2], [2.0, 0.1]], np.float32)
    expected = stats.laplace(scale=0.5).logpdf(z.astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(vae.prior.log_prob(z), expected, rtol=1e-5)
    # Its KL is the one-sample estimate log q(z|x) - log p(z) at the ELBO's z.
    x = vae.prepare_inputs(np.random.default_rng(0).integers(0, 2, (3, 6, 6, 1)).astype(np.float32))
    parts, posterior, prior, z = vae.elbo_terms(x, tf.constant([1, 2]))
    np.testing.assert_allclose(parts.kl, posterior.log_prob(z) - prior.log_prob(z), rtol=1e-5)


def test_a_beta_likelihood_from_a_users_file(components, tmp_path, grey_npz):
    metrics = _train_one_step_and_evaluate(str(tmp_path / "beta"), {"dataset": grey_npz},
                                           {"likelihood": "beta", "hidden_units": (9,)})
    assert metrics["test"]["binarization"] == "none"  # grey levels, as the head says
    vae = runs.load_run(str(tmp_path / "beta"))
    assert not ModelConfig(likelihood="beta").binarize
    # log p(x|z) is the sum of per-pixel Beta log-densities (scipy), parameters softplus + 1e-3.
    z = np.array([[0.2, -0.4]], np.float32)
    params = vae.decoder(z).numpy().astype(np.float64)  # [1, 6, 6, 2]
    a, b = (np.log1p(np.exp(params[..., k])) + 1e-3 for k in (0, 1))
    x = np.random.default_rng(2).uniform(0.05, 0.95, (1, 6, 6, 1))
    expected = stats.beta(a, b).logpdf(x[..., 0]).sum()
    np.testing.assert_allclose(vae.likelihood(z).log_prob(x.astype(np.float32)), [expected], rtol=1e-4)


def test_a_resnet_encoder_from_a_users_file(components, tmp_path):
    _train_one_step_and_evaluate(str(tmp_path / "resnet"), {"dataset": "npz:" + _shapes_npz(tmp_path)},
                                 {"arch": "resnet", "resnet_filters": (3, 5), "decoder_arch": "mlp",
                                  "hidden_units": (9,)})
    vae = runs.load_run(str(tmp_path / "resnet"))
    names = [type(layer).__name__ for layer in vae.encoder.layers]
    assert names == ["Conv2D", "ResidualBlock", "Conv2D", "ResidualBlock", "ReLU", "Flatten"]
    # 6x6 -> 3x3 (3 filters) -> 2x2 (5 filters): 20 features; the residual blocks keep shapes.
    assert vae.encoder.output_shape == (None, 20)


def test_an_unknown_component_lists_the_registered_ones(components):
    with pytest.raises(ValueError, match="unknown prior 'cauchy'; choose one of: .*laplace"):
        ModelConfig(prior="cauchy")
    with pytest.raises(ValueError, match="laplace_scale must be positive"):
        ModelConfig(prior="laplace", laplace_scale=-1.0)
    with pytest.raises(ValueError, match="registered already"):
        components.PRIORS.register("laplace", components.LaplacePrior)
    assert VAE(ModelConfig(prior="laplace", latent_dim=2, image_shape=(6, 6, 1))).prior.event_shape == (2,)


def _shapes_npz(tmp_path):
    """36 train and 12 test binary 6x6 images."""
    path = str(tmp_path / "binary.npz")
    rng = np.random.default_rng(7)
    np.savez(path, x_train=(rng.uniform(size=(36, 6, 6)) < 0.3).astype(np.float32),
             x_test=(rng.uniform(size=(12, 6, 6)) < 0.3).astype(np.float32))
    return path
