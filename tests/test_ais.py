"""Annealed importance sampling and bidirectional Monte Carlo against closed forms.

The PPCA VAE of test_evaluation has an exact log p(x) = log N(x; b, W W^T + s^2 I)
and, with the posterior layer set to the exact posterior, log p(x, z) - log q(z|x)
= log p(x) for every z. With a wrong posterior (shifted and widened) or the
prior as the start, AIS has work to do; its estimate must reach the exact value
within its own reported Monte Carlo error, and BDMC's bounds must bracket it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats
from test_evaluation import LATENT, LOADINGS, OFFSET, PPCA_SHAPE, SCALE, exact_log_likelihood, ppca_images, set_ppca

from probvae import annealing, evaluation
from probvae.config import ModelConfig
from probvae.errors import UserError
from probvae.model import VAE
from probvae.registry import LIKELIHOODS, PRIORS

from conftest import tiny_model_config


@pytest.fixture(scope="module")
def ppca_model():
    return VAE(ModelConfig(arch="mlp", hidden_units=(), latent_dim=LATENT, posterior="full", likelihood="normal",
                           normal_scale="shared", image_shape=PPCA_SHAPE))


def exact_evidence(x):
    """log N(x; b, W W^T + s^2 I) of float images x [n, 3, 2, 1], not clipped."""
    covariance = LOADINGS @ LOADINGS.T + SCALE**2 * np.eye(6)
    return stats.multivariate_normal(OFFSET, covariance).logpdf(np.reshape(x, (len(x), -1)).astype(np.float64))


def test_schedules_run_from_zero_to_one():
    for name in annealing.SCHEDULES:
        betas = annealing.schedule(name, 50)
        assert betas.shape == (51,) and betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)
    sigmoid = annealing.sigmoid_schedule(100)
    np.testing.assert_allclose(sigmoid + sigmoid[::-1], 1.0, atol=1e-12)  # symmetric
    assert sigmoid[1] < 0.2 / 100 and np.diff(sigmoid)[50] > 1 / 100  # small steps at the ends, large in the middle
    np.testing.assert_allclose(annealing.schedule("linear", 4), [0, 0.25, 0.5, 0.75, 1])
    with pytest.raises(UserError, match="unknown schedule 'cosine'; choose one of: sigmoid, linear"):
        annealing.schedule("cosine", 3)


def test_anneal_finds_the_normaliser_of_a_gaussian_and_leaves_it_invariant():
    """From N(0, I) to f(z) = c N(z; m, S): AIS estimates log c, and the final
    states are draws of N(m, S) (the HMC transitions leave each f_t invariant)."""
    log_c, mean = 3.2, np.array([1.0, -0.5, 0.3])
    covariance = np.array([[0.5, 0.2, 0.0], [0.2, 0.4, -0.1], [0.0, -0.1, 0.3]])
    precision = np.linalg.inv(covariance).astype(np.float32)
    log_norm = np.float32(log_c - 0.5 * np.linalg.slogdet(2 * np.pi * covariance)[1])

    def target_log_prob(z):
        d = z - mean.astype(np.float32)
        return log_norm - 0.5 * tf.einsum("cni,ij,cnj->cn", d, precision, d)

    def initial_log_prob(z):
        return -0.5 * tf.reduce_sum(z**2, -1) - 1.5 * np.log(2 * np.pi).astype(np.float32)

    chains, examples = 32, 40
    start = tf.random.stateless_normal([chains, examples, 3], seed=[1, 2])
    result = annealing.anneal(initial_log_prob, target_log_prob, start, annealing.sigmoid_schedule(100),
                              tf.constant([3, 4]), step_size=0.3, num_leapfrog_steps=5)
    log_weights = result.log_weights.numpy()
    assert log_weights.dtype == np.float64 and log_weights.shape == (chains, examples)
    estimates = evaluation.AISEstimate.from_log_weights(log_weights, result.acceptance.numpy(),
                                                        result.step_size.numpy(), None, 0.0)
    error = estimates.mean - log_c
    assert abs(error) < 3 * estimates.mean_mc_stderr + 0.01, (error, estimates.mean_mc_stderr)
    assert 0.5 < float(np.mean(result.acceptance)) <= 1.0
    final = result.state.numpy().reshape(-1, 3)
    np.testing.assert_allclose(final.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(final.T), covariance, atol=0.05)
    assert stats.kstest(final[:, 0], stats.norm(mean[0], np.sqrt(covariance[0, 0])).cdf).pvalue > 1e-3


def test_with_the_exact_posterior_every_ais_weight_is_the_evidence(ppca_model):
    model = set_ppca(ppca_model)
    images = ppca_images(20)
    for steps in (1, 7):
        estimate = evaluation.ais_log_likelihood(model, images, num_steps=steps, num_chains=3, seed=5)
        np.testing.assert_allclose(estimate.log_weights, np.broadcast_to(exact_log_likelihood(images), (3, 20)),
                                   atol=2e-4)
        assert estimate.log_likelihood.shape == (20,) and np.all(estimate.mc_stderr < 1e-3)


@pytest.mark.parametrize("initial", ["posterior", "prior"])
def test_ais_reaches_the_exact_log_likelihood_within_its_error(ppca_model, initial):
    model = set_ppca(ppca_model, mean_shift=0.7, scale_factor=1.5)
    images = ppca_images(40, seed=1)
    exact = exact_log_likelihood(images)
    one_sample = evaluation.ais_log_likelihood(model, images, num_steps=1, num_chains=8, seed=2, initial=initial)
    estimate = evaluation.ais_log_likelihood(model, images, num_steps=500, num_chains=8, seed=2, initial=initial)
    error = estimate.mean - exact.mean()
    assert abs(error) < 3 * estimate.mean_mc_stderr + 0.01, (error, estimate.mean_mc_stderr)
    # Importance sampling with the start as the proposal is far off: annealing did the work.
    assert exact.mean() - one_sample.mean > 10 * abs(error) + 0.1
    assert estimate.stderr == pytest.approx(np.std(estimate.log_likelihood, ddof=1) / np.sqrt(40))
    assert 0.3 < np.mean(estimate.acceptance) < 1.0


@pytest.mark.slow
def test_bdmc_brackets_the_exact_value_and_its_gap_shrinks_with_steps(ppca_model):
    model = set_ppca(ppca_model, mean_shift=0.7, scale_factor=1.5)
    gaps, uppers = [], []
    for steps in (10, 100, 1000):
        result = evaluation.bdmc(model, 100, num_steps=steps, num_chains=8, seed=8)
        x = result.images
        exact = exact_evidence(x)
        lower, lower_stderr = evaluation.mean_and_stderr(result.lower - exact)
        upper, upper_stderr = evaluation.mean_and_stderr(result.upper - exact)
        assert lower < 3 * lower_stderr + 1e-3 and upper > -3 * upper_stderr - 1e-3, (steps, lower, upper)
        uppers.append((upper, upper_stderr))
        summary = result.summary()
        assert summary["gap"] == pytest.approx(upper - lower) and summary["examples"] == 100
        gaps.append(summary["gap"])
    # Measured: 0.167 +- 0.058, 0.066 +- 0.028, 0.006 +- 0.010 nats.
    assert gaps[0] > gaps[1] > gaps[2] and abs(gaps[2]) < 0.03, gaps
    # Each bound on its own reaches the exact value: the upper one within its error at T = 1000.
    upper, upper_stderr = uppers[-1]
    assert abs(upper) < 3 * upper_stderr + 0.005, uppers


def test_bdmc_combines_the_chains_of_each_direction_by_their_log_mean_weight(ppca_model, monkeypatch):
    """With the annealing replaced by fixed log weights [3 chains, 2 images]:
    lower = log (1/C) sum_c w_c of the forward ones, upper = -log (1/C) sum_c w_c
    of the backward ones (not their mean, which is a looser bound by Jensen)."""
    from probvae.evaluation import chains

    forward = np.array([[0.0, -1.0], [-2.0, -3.0], [1.0, 0.5]])
    backward = np.array([[0.3, 2.0], [-1.5, 0.0], [0.5, -2.5]])

    def fixed_weights(model, x, exact_z, settings, seed, reverse, on_chunk=None, strategy=None, on_progress=None):
        assert (exact_z is not None) == reverse and x.shape[0] == 2
        return (backward if reverse else forward), np.full(2, 0.8), np.full(2, 0.1)

    monkeypatch.setattr(chains, "anneal_images", fixed_weights)
    result = evaluation.bdmc(ppca_model, 2, num_steps=4, num_chains=3, seed=6)
    np.testing.assert_allclose(result.lower, special.logsumexp(forward, axis=0) - np.log(3), rtol=1e-12)
    np.testing.assert_allclose(result.upper, np.log(3) - special.logsumexp(backward, axis=0), rtol=1e-12)

def test_a_fixed_step_size_on_a_linear_schedule_keeps_every_weight_exact(ppca_model):
    """adapt=False, schedule="linear": with the exact posterior every AIS weight is
    still log p(x); with a wrong one the estimate reaches it within its error, and
    the step size stays where it started."""
    model = set_ppca(ppca_model)
    images = ppca_images(12, seed=3)
    exact = exact_log_likelihood(images)
    estimate = evaluation.ais_log_likelihood(model, images, num_steps=5, num_chains=2, seed=1, adapt=False,
                                             schedule="linear", step_size=0.3)
    np.testing.assert_allclose(estimate.log_weights, np.broadcast_to(exact, (2, 12)), atol=2e-4)
    np.testing.assert_allclose(estimate.step_size, 0.3, rtol=1e-6)
    assert estimate.settings.schedule == "linear" and estimate.settings.adapt is False
    model = set_ppca(ppca_model, mean_shift=0.7, scale_factor=1.5)
    fixed = evaluation.ais_log_likelihood(model, images, num_steps=300, num_chains=8, seed=2, adapt=False,
                                          schedule="linear", step_size=0.3)
    np.testing.assert_allclose(fixed.step_size, 0.3, rtol=1e-6)
    assert abs(fixed.mean - exact.mean()) < 3 * fixed.mean_mc_stderr + 0.02, (fixed.mean, exact.mean())
    # The schedule is the one asked for: 4 steps of 0.25 anneal otherwise than the sigmoid's, on the same draws.
    linear, sigmoid = (evaluation.ais_log_likelihood(model, images[:3], num_steps=4, num_chains=2, seed=2, adapt=False,
                                                     schedule=name, step_size=0.3) for name in ("linear", "sigmoid"))
    assert np.all(np.abs(linear.log_weights - sigmoid.log_weights) > 1e-4), (linear.log_weights, sigmoid.log_weights)


def test_huge_requests_are_refused_in_the_api_words(ppca_model):
    with pytest.raises(UserError, match=r"AIS settings \(num_steps x num_chains x num_leapfrog_steps\).*force=True"):
        evaluation.bdmc(ppca_model, 10**9, num_steps=10, num_chains=4)
    with pytest.raises(UserError, match="decoder passes"):
        evaluation.ais_log_likelihood(ppca_model, ppca_images(2), num_steps=10**6, num_chains=10**6)


def test_simulated_images_come_from_the_model():
    model = VAE(tiny_model_config())
    z, x = evaluation.simulate(model, 6, seed=3)
    assert z.shape == (6, model.latent_dim) and x.shape == (6,) + model.image_shape
    assert set(np.unique(x.numpy())) <= {0.0, 1.0}  # Bernoulli pixels
    again = evaluation.simulate(model, 6, seed=3)
    np.testing.assert_array_equal(x, again[1])


FAMILIES = [dict(prior=prior) for prior in PRIORS.names()] + [dict(likelihood=name) for name in LIKELIHOODS.names()] + [
    dict(latent_dim=(2, 3), latent_layers=2, level_units=5, prior="vamp", posterior="diag")]


@pytest.mark.parametrize("changes", FAMILIES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_ais_and_bdmc_work_for_every_family(changes, binary_images):
    model = VAE(tiny_model_config(**changes))
    images = binary_images if model.likelihood_head.binarize else binary_images * 0.6 + 0.2
    x = tf.constant(images)
    # The ELBO's expectation, over 64 posterior draws per image (one draw is too noisy to compare with).
    repeats = 64
    elbo = model.elbo(tf.tile(x, [repeats, 1, 1, 1]), seed=tf.constant([0, 0])).elbo.numpy()
    estimate = evaluation.ais_log_likelihood(model, x, num_steps=20, num_chains=8, seed=1)
    assert np.all(np.isfinite(estimate.log_likelihood)) and np.all(np.isfinite(estimate.mc_stderr))
    # An untrained model's ELBO is a loose bound: the annealed estimate is above it.
    assert estimate.mean > elbo.mean()
    if "latent_layers" in changes or "likelihood" in changes:  # simulation of continuous images and of a hierarchy
        result = evaluation.bdmc(model, 4, num_steps=5, num_chains=2, seed=1)
        assert np.all(np.isfinite(result.lower)) and np.all(np.isfinite(result.upper))


def test_same_seed_same_numbers_and_chunks_only_change_the_layout(ppca_model):
    model = set_ppca(ppca_model, mean_shift=0.3)
    images = ppca_images(9, seed=2)
    first = evaluation.ais_log_likelihood(model, images, num_steps=15, num_chains=4, seed=3)
    again = evaluation.ais_log_likelihood(model, images, num_steps=15, num_chains=4, seed=3)
    np.testing.assert_array_equal(first.log_weights, again.log_weights)
    other = evaluation.ais_log_likelihood(model, images, num_steps=15, num_chains=4, seed=4)
    assert not np.array_equal(first.log_weights, other.log_weights)
    # Chunks of 2 chains x 1 image: the same estimator, other random numbers, same answer within error.
    chunked = evaluation.ais_log_likelihood(model, images, num_steps=15, num_chains=4, seed=3, chunk_rows=2)
    assert chunked.log_weights.shape == (4, 9)
    assert abs(chunked.mean - first.mean) < 4 * np.hypot(chunked.stderr, first.stderr)


def test_a_chunk_split_into_calls_gives_the_numbers_of_one_call_and_reports_progress(ppca_model, monkeypatch):
    """The T - 1 transitions of a chunk run in up to SEGMENTS compiled calls; each
    call draws from fold_in(seed, t) with t counted over the whole run."""
    from probvae.evaluation import chains

    model = set_ppca(ppca_model, mean_shift=0.3)
    images = ppca_images(5, seed=4)
    settings = dict(num_steps=13, num_chains=3, seed=1, chunk_rows=6)  # chunks of 2 images x 3 chains
    progress, finished = [], []
    split = evaluation.ais_log_likelihood(model, images, on_progress=progress.append, on_chunk=finished.append,
                                          **settings)
    monkeypatch.setattr(chains, "SEGMENTS", 1)
    whole = evaluation.ais_log_likelihood(model, images, **settings)
    for key in ("log_weights", "acceptance", "step_size"):
        np.testing.assert_array_equal(getattr(split, key), getattr(whole, key), err_msg=key)
    # 12 transitions in 12 calls a chunk, three chunks: images done in proportion, then whole chunks.
    assert len(progress) == 36 and progress == sorted(progress) and progress[-1] == 5, progress
    assert progress[:2] == pytest.approx([2 / 12, 4 / 12]) and progress[11] == pytest.approx(2)
    assert finished == [2, 4, 5]


def test_settings_are_checked_in_the_api_language(ppca_model):
    images = ppca_images(2)
    for kwargs, message in [(dict(num_steps=0), "num_steps must be a whole number of at least 1"),
                            (dict(num_chains=1.5), "num_chains must be a whole number of at least 1"),
                            (dict(initial="q"), "unknown initial distribution 'q'"),
                            (dict(step_size=-1.0), "step_size must be a positive number")]:
        with pytest.raises(UserError, match=message):
            evaluation.ais_log_likelihood(ppca_model, images, **kwargs)


_MEMORY_CHILD = """
import json, sys
import numpy as np
from probvae import data, evaluation
from probvae.benchmarks import measure
from probvae.config import ModelConfig
from probvae.model import VAE
model = VAE(ModelConfig(arch="mlp", hidden_units=(256,), latent_dim=4, image_shape=(28, 28, 1)))
images, _ = data.make_shapes(6, seed=1, size=28)
evaluation.ais_log_likelihood(model, images, num_steps=2, num_chains=2, num_leapfrog_steps=2, chunk_rows=64)
start = measure.peak_memory_mb()
estimate = evaluation.ais_log_likelihood(model, images, num_steps=2, num_chains=int(sys.argv[1]), num_leapfrog_steps=2,
                                         chunk_rows=64)
assert np.all(np.isfinite(estimate.log_likelihood))
print(json.dumps({"start": start, "peak": measure.peak_memory_mb()}))
"""


@pytest.mark.slow
def test_memory_is_flat_in_chains():
    """Peak resident memory (the benchmark's measure, each in a fresh process)
    with 16 and with 512 chains per image: chunks of 64 rows keep it the same."""
    peaks = {}
    for chains in (16, 512):
        result = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(chains)], capture_output=True, text=True,
                                timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert result.returncode == 0, result.stderr[-2000:]
        peaks[chains] = json.loads(result.stdout.strip().splitlines()[-1])
    growth = {chains: p["peak"] - p["start"] for chains, p in peaks.items()}
    # 512 chains x 6 images at once would hold 3072 rows of 784 pixels and
    # 256 units several times over (tens of MB); in chunks, that of 64 rows.
    assert growth[512] < growth[16] + 8, growth
