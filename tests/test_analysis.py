"""The analysis interface: a run loaded in a fresh process, its distributions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats
from scipy.special import logsumexp

from probvae import runs
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.data import make_shapes
from probvae.distributions import (
    aggregate_posterior,
    kl_per_dimension,
    marginals,
    standard_normal,
    total_correlation,
    unwrap,
)
from probvae.training import fit

from conftest import gaussian_kl_to_standard_normal, iwae_reference

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

tfd = tfp.distributions
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import json, sys
import numpy as np, tensorflow as tf
import probvae

vae = probvae.load_run(sys.argv[1])
x = np.load(sys.argv[2])
q = vae.posterior(x)
parts = vae.elbo(x, seed=tf.constant([3, 4]))
print(json.dumps({"mean": q.mean().numpy().tolist(), "covariance": q.covariance().numpy().tolist(),
                  "elbo": parts.elbo.numpy().tolist()}))
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("analysis") / "run")
    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=120),
        model=ModelConfig(arch="mlp", latent_dim=3, hidden_units=(16,), posterior="full"),
        train=TrainConfig(epochs=1, batch_size=40, jit_compile=False),  # 3 steps: compiling XLA would take longer
    )
    fit(config, run_dir, log=lambda _: None)
    return run_dir


@pytest.fixture
def raw_images():
    images, _ = make_shapes(5, seed=9)
    return images  # uint8 [5, 28, 28, 1]


def test_a_fresh_process_sees_the_same_distributions(trained_run, raw_images, tmp_path):
    vae, _, checkpoint = runs.open_run(trained_run)
    # The restored weights are exactly the ones in the checkpoint file.
    reader = tf.train.load_checkpoint(checkpoint)
    saved = {name: reader.get_tensor(name) for name, _ in reader.get_variable_to_shape_map().items()
             if name.startswith("model/") and name.endswith(".ATTRIBUTES/VARIABLE_VALUE")}
    for variable in vae.trainable_variables:
        assert any(value.shape == variable.shape and np.array_equal(value, variable.numpy())
                   for value in saved.values()), variable.name

    path = tmp_path / "x.npy"
    np.save(path, raw_images)
    result = subprocess.run([sys.executable, "-c", PROBE, trained_run, str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    other = json.loads(result.stdout.strip().splitlines()[-1])
    q = vae.posterior(raw_images)
    np.testing.assert_allclose(other["mean"], q.mean().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(other["covariance"], q.covariance().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(other["elbo"], vae.elbo(raw_images, seed=tf.constant([3, 4])).elbo.numpy(), rtol=1e-6)


def test_posterior_is_a_full_covariance_normal_with_the_elbo_kl(trained_run, raw_images):
    vae = runs.load_run(trained_run)
    q = vae.posterior(raw_images)
    assert isinstance(unwrap(q), tfd.MultivariateNormalTriL)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    cov = q.covariance().numpy()
    np.testing.assert_allclose(cov, np.swapaxes(cov, 1, 2), atol=1e-7)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    np.testing.assert_allclose(q.stddev().numpy(), np.sqrt(np.diagonal(cov, axis1=1, axis2=2)), rtol=1e-5)
    assert q.sample(4, seed=(1, 2)).shape == (4, 5, 3)
    # The ELBO's KL is the closed form KL(N(m, S) || N(0, I)) = 0.5 (tr S + |m|^2 - d - log det S).
    kl = gaussian_kl_to_standard_normal(q.mean().numpy(), cov)
    parts = vae.elbo(raw_images, seed=tf.constant([0, 1]))
    np.testing.assert_allclose(parts.kl.numpy(), kl, rtol=1e-4, atol=1e-5)
    assert np.all(kl > 0)
    assert vae.likelihood(q.mean()).event_shape == (28, 28, 1)


def test_aggregate_posterior_is_the_equal_weight_mixture():
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(4, 2)).astype(np.float32)
    tril = np.tril(rng.normal(size=(4, 2, 2))).astype(np.float32)
    tril[:, [0, 1], [0, 1]] = np.abs(tril[:, [0, 1], [0, 1]]) + 0.5
    q = tfd.MultivariateNormalTriL(loc=loc, scale_tril=tril)
    q_agg = aggregate_posterior(q)
    assert q_agg.batch_shape == () and q_agg.event_shape == (2,)
    z = rng.normal(size=(6, 2)).astype(np.float32)
    per_component = q.log_prob(z[:, None, :]).numpy()  # [6, 4]
    np.testing.assert_allclose(q_agg.log_prob(z), logsumexp(per_component, axis=1) - np.log(4), rtol=1e-5)
    np.testing.assert_allclose(q_agg.mean(), loc.mean(axis=0), rtol=1e-5)


def test_kl_per_dimension_is_the_marginal_closed_form():
    loc = np.array([[0.3, -1.0]], np.float32)
    tril = np.array([[[0.5, 0.0], [0.4, 2.0]]], np.float32)
    q = tfd.MultivariateNormalTriL(loc=loc, scale_tril=tril)
    variances = np.array([0.25, 0.16 + 4.0])
    expected = 0.5 * (variances + loc[0] ** 2 - 1.0 - np.log(variances))
    np.testing.assert_allclose(kl_per_dimension(q, standard_normal(2)).numpy()[0], expected, rtol=1e-5)
    np.testing.assert_allclose(marginals(q).scale.numpy()[0], np.sqrt(variances), rtol=1e-6)
    # With correlation the full KL exceeds the sum of the marginal KLs by -0.5 log det(corr).
    correlation = (0.5 * 0.4) / np.sqrt(variances[0] * variances[1])
    gap = tfd.kl_divergence(q, standard_normal(2)).numpy()[0] - expected.sum()
    np.testing.assert_allclose(gap, -0.5 * np.log(1 - correlation**2), rtol=1e-4)
    mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=[0.0, 0.0]),
                                    tfd.MultivariateNormalDiag(loc=tf.zeros([2, 2])))
    with pytest.raises(ValueError, match="pass samples z"):
        kl_per_dimension(q, mixture)
    # A factorised prior without a closed-form KL to a Normal: the one-sample estimate at z,
    # log N(z_i; m_i, s_i) - log Laplace(z_i; 0, 1), against scipy.
    laplace = tfd.Independent(tfd.Laplace(tf.zeros(2), 1.0), 1)
    with pytest.raises(ValueError, match="Laplace marginals has no closed-form per-dimension KL; pass samples z"):
        kl_per_dimension(q, laplace)
    z = np.array([[0.4, -1.1]], np.float32)
    marginal_sd = np.sqrt(np.diag(q.covariance().numpy()[0]))
    by_hand = stats.norm(q.mean().numpy()[0], marginal_sd).logpdf(z[0]) - stats.laplace().logpdf(z[0])
    np.testing.assert_allclose(kl_per_dimension(q, laplace, z).numpy()[0], by_hand, rtol=1e-5)
    with pytest.raises(ValueError, match="Normal or Gaussian-mixture marginals"):
        kl_per_dimension(q, tfd.MultivariateStudentTLinearOperator(3.0, tf.zeros(2),
                                                                   tf.linalg.LinearOperatorIdentity(2)))


def test_total_correlation_is_what_the_marginal_kls_miss():
    loc = np.array([[0.3, -1.0], [0.0, 0.5]], np.float32)
    tril = np.array([[[0.5, 0.0], [0.4, 2.0]], [[1.0, 0.0], [0.0, 0.3]]], np.float32)  # correlated; diagonal
    q = tfd.MultivariateNormalTriL(loc=loc, scale_tril=tril)
    covariance = tril @ np.swapaxes(tril, -1, -2)
    variances = np.diagonal(covariance, axis1=-2, axis2=-1)
    # 0.5 (sum_i log S_ii - log det S); -0.5 log(1 - rho^2) in two dimensions, 0 without correlation.
    expected = 0.5 * (np.log(variances).sum(-1) - np.linalg.slogdet(covariance)[1])
    np.testing.assert_allclose(total_correlation(q), expected, rtol=1e-5, atol=1e-6)
    assert expected[0] > 0.01 and abs(expected[1]) < 1e-6
    np.testing.assert_allclose(tf.reduce_sum(kl_per_dimension(q, standard_normal(2)), -1) + total_correlation(q),
                               tfd.kl_divergence(q, standard_normal(2)), rtol=1e-5)
    with pytest.raises(ValueError, match="multivariate Normal"):
        total_correlation(tfd.Independent(tfd.Laplace(loc, 1.0), 1))


@pytest.mark.parametrize(
    "inputs, message",
    [
        (np.zeros((2, 32, 32, 1), np.uint8), r"\[n, 28, 28, 1\]"),
        (np.full((2, 28, 28), 2.0, np.float32), r"outside \[0, 1\]"),
        (np.full((2, 28, 28), 300, np.int32), "outside 0..255"),
    ],
)
def test_wrong_inputs_say_what_is_expected(trained_run, inputs, message):
    vae = runs.load_run(trained_run)
    with pytest.raises(ValueError, match=message):
        vae.posterior(inputs)


def test_raw_and_scaled_inputs_agree(trained_run, raw_images):
    vae = runs.load_run(trained_run)
    from_uint8 = vae.posterior(raw_images).mean().numpy()
    from_float = vae.posterior(raw_images[..., 0] / 255.0).mean().numpy()
    np.testing.assert_allclose(from_uint8, from_float, rtol=1e-5, atol=1e-6)


def test_corrupt_checkpoint_is_named(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    for data_file in (p for p in (copy / "checkpoints").iterdir() if ".data-" in p.name):
        data_file.write_bytes(b"\0" * 16)
    # Checkpoints are named after the global step: 120 examples in batches of 40;
    # the run's model is its best epoch's.
    with pytest.raises(ValueError, match="cannot restore checkpoint .*best-3"):
        runs.load_run(str(copy))
    with pytest.raises(ValueError, match="cannot restore checkpoint .*ckpt-3"):
        runs.load_run(str(copy), "latest")


def test_the_docs_example_runs(trained_run, example_outputs):
    stdout, picture = example_outputs[trained_run]
    assert "KL(aggregate posterior || prior)" in stdout and "class 0" in stdout
    import matplotlib.image

    pixels = matplotlib.image.imread(picture)
    assert pixels.std() > 0.01


def test_log_likelihood_is_the_importance_weighted_bound_written_out(trained_run, raw_images):
    vae = runs.load_run(trained_run)
    ll = vae.log_likelihood(raw_images, num_samples=64, seed=(4, 5)).numpy()
    # Raw uint8 images are binarized once, x = [u < x / 255] with u ~ U(0, 1) from seed (0, 0x5EED) ...
    uniform = tf.random.stateless_uniform(raw_images.shape, seed=[0, 0x5EED]).numpy()
    x = (uniform < raw_images / 255.0).astype(np.float32)
    # ... then LL = logsumexp_k [log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)] - log 64, in NumPy.
    expected, log_weights = iwae_reference(vae, x, 64, seed=(4, 5))
    assert ll.shape == (5,)
    np.testing.assert_allclose(ll, expected, rtol=1e-5, atol=1e-4)
    # log mean_k w_k >= mean_k log w_k (Jensen), strictly unless all weights are equal.
    assert np.all(ll > log_weights.mean(axis=0))
    elbo = vae.elbo(raw_images, seed=tf.constant([4, 5])).elbo.numpy()
    assert ll.mean() > elbo.mean()


FAMILIES = ["diag_gaussian", "mixture-normal", "vamp-continuous_bernoulli", "hierarchy-vamp", "folder-image-shape"]


@pytest.fixture(scope="module")
def family_runs(family_run):
    return {name: family_run(name) for name in FAMILIES}


# Runs docs/examples/analyse_run.py as written (its __main__) once per (run, n), in one fresh process.
_EXAMPLE_DRIVER = """
import contextlib, io, json, runpy, sys
script, out, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
outputs = {}
for index, (run, n) in enumerate(runs):
    picture = f"{out}/analysis{index}.png"
    sys.argv = [script, run, "--n", str(n), "--out", picture]
    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        runpy.run_path(script, run_name="__main__")
    outputs[run] = [stream.getvalue(), picture]
print(json.dumps(outputs))
"""


@pytest.fixture(scope="module")
def example_outputs(trained_run, family_runs, tmp_path_factory):
    """run directory -> [what the docs example printed, its picture] for this module's run (200 images)
    and each family's (15)."""
    out = tmp_path_factory.mktemp("example")
    example = os.path.join(ROOT, "docs", "examples", "analyse_run.py")
    runs_and_sizes = [[trained_run, 200]] + [[run, 15] for run in family_runs.values()]
    result = subprocess.run([sys.executable, "-c", _EXAMPLE_DRIVER, example, str(out), json.dumps(runs_and_sizes)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_the_docs_example_and_the_report_work_for_every_family(family_runs, example_outputs, family, tmp_path):
    run_dir = family_runs[family]
    stdout, _ = example_outputs[run_dir]
    assert "KL(aggregate posterior || prior)" in stdout and "class 0" in stdout
    kl = [float(v) for v in stdout.split("mean KL per dimension (nats): ")[1].splitlines()[0].split()]
    assert len(kl) == runs.load_run(run_dir).latent_dim and all(np.isfinite(kl))
    from probvae.analysis import report

    written = report.inspect_run(run_dir, out_dir=str(tmp_path / "plots"), max_examples=12, num_shown=2,
                                 grid_size=3, log=lambda _: None)
    assert any(path.endswith("index.html") for path in written)
    page = (tmp_path / "plots" / "index.html").read_text()
    learned = family.split("-")[0] in ("mixture", "vamp", "hierarchy", "diag_gaussian")
    assert ("N(0, I)" in page) != learned  # the caption names the model's own prior
