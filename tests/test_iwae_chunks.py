import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from conftest import tiny_model_config
from probvae import iwae_chunks
from probvae.errors import UserError
from probvae.model import VAE


@pytest.fixture(params=["conv", "mlp"])
def model(request):
    return VAE(tiny_model_config(arch=request.param))


def _slow_log_weights(model, x, num_samples, seed):
    """log w [S, n] by the plain route: sample z, then each density on its own."""
    posterior = model.posterior(x)
    z = posterior.sample(num_samples, seed=seed)  # [S, n, d]
    log_px_z = np.stack([model.likelihood(z[k]).log_prob(x).numpy() for k in range(num_samples)])
    return log_px_z + model.prior.log_prob(z).numpy() - posterior.log_prob(z).numpy()


def test_chunk_log_weights_match_the_plain_computation(model, binary_images):
    x = tf.constant(binary_images)
    seed = tf.constant([4, 5])
    got = iwae_chunks.chunk_log_weights(model, x, model.posterior(x), 5, seed).numpy()
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, _slow_log_weights(model, x, 5, seed), rtol=1e-5, atol=1e-3)


def test_chunks_combine_into_the_k_sample_bound(model, binary_images):
    x = tf.constant(binary_images)
    # K = 7 in chunks of 3: chunk c draws from fold_in(seed, c); its samples past K are dropped.
    weights = np.concatenate([
        _slow_log_weights(model, x, 3, tf.random.experimental.stateless_fold_in(tf.constant([9, 0]), c))
        for c in range(3)
    ])[:7]
    expected = logsumexp(weights, axis=0) - np.log(7)
    got = iwae_chunks.chunked_log_likelihood(model, binary_images, 7, seed=9, sample_chunk=3).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    # One chunk of all K samples is the plain K-sample bound on the same draws.
    first = np.concatenate([weights[:3]])
    one_chunk = iwae_chunks.chunked_log_likelihood(model, binary_images, 3, seed=9, sample_chunk=3).numpy()
    np.testing.assert_allclose(one_chunk, logsumexp(first, axis=0) - np.log(3), rtol=1e-5, atol=1e-3)


def test_bad_counts_are_user_errors(model, binary_images):
    with pytest.raises(UserError, match="importance samples"):
        iwae_chunks.chunked_log_likelihood(model, binary_images, 0, seed=0)
    with pytest.raises(UserError, match="sample_chunk"):
        iwae_chunks.chunked_log_likelihood(model, binary_images, 4, seed=0, sample_chunk=0)
