"""The ELBO is a pure function of (weights, batch, seed): the posterior layer's
KL gets its seed, rows and prior explicitly, and the training loss uses the KL
the layer adds. Expected values are computed here from q, p and z directly."""

import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from probvae.distributions import posterior_layer, posterior_params_size, sample_posterior
from probvae.errors import UserError
from probvae.model import VAE

from conftest import BATCH, IMAGE_SHAPE, LATENT_DIM, tiny_model_config

tfd = tfp.distributions


def test_monte_carlo_kl_needs_a_seed_and_depends_only_on_it():
    d, n = 3, 4
    prior = tfd.MixtureSameFamily(tfd.Categorical(logits=[0.0, 0.3]),
                                  tfd.MultivariateNormalDiag([[0.0] * d, [1.0] * d], [[1.0] * d, [0.5] * d]))
    layer = posterior_layer(d, prior, covariance="diag", kl_weight=0.5, use_exact_kl=False)
    params = tf.random.stateless_normal([n, posterior_params_size(d, "diag")], seed=[1, 2])
    with pytest.raises(UserError, match="seed"):
        layer(params)
    q = layer(params, seed=[3, 4])
    first = float(tf.add_n(layer.losses))
    z = q.sample(seed=[3, 4])  # the same draw as sample_posterior(q, [3, 4])
    expected = 0.5 * np.mean(q.log_prob(z).numpy() - prior.log_prob(z).numpy())
    np.testing.assert_allclose(first, expected, rtol=1e-5)
    layer(params, seed=[5, 6])
    assert len(layer.losses) == 1 and float(tf.add_n(layer.losses)) != first
    layer(params, seed=[3, 4])
    assert float(tf.add_n(layer.losses)) == first


def test_rows_pick_the_global_batch_columns_of_the_kl_sample():
    d = 2
    prior = tfd.MixtureSameFamily(tfd.Categorical(logits=[0.0, 0.0]),
                                  tfd.MultivariateNormalDiag([[0.0] * d, [2.0] * d], [[1.0] * d, [1.0] * d]))
    layer = posterior_layer(d, prior, covariance="full", use_exact_kl=False)
    params = tf.random.stateless_normal([5, posterior_params_size(d, "full")], seed=[7, 8])
    whole = layer.activity_regularizer.kl(layer(params, seed=[1, 1]), seed=[1, 1])
    part = layer.activity_regularizer.kl(layer(params[2:4], seed=[1, 1], rows=(2, 5)), seed=[1, 1], rows=(2, 5))
    np.testing.assert_allclose(part, whole[2:4], rtol=1e-6)


@pytest.mark.parametrize("prior", ["standard_normal", "vamp"])
def test_same_inputs_and_seed_give_the_same_elbo_in_any_thread(prior, binary_images):
    vae = VAE(tiny_model_config(arch="mlp", prior=prior, prior_components=3))
    x = tf.constant(binary_images)
    expected = vae.elbo(x, seed=9).elbo.numpy()
    results = {}

    def work(name, seed):
        results[name] = vae.elbo(x, seed=seed).elbo.numpy()

    threads = [threading.Thread(target=work, args=(k, 9 if k % 2 else 11)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 1, 2, 3]  # no thread failed
    for k, values in results.items():
        if k % 2:
            np.testing.assert_array_equal(values, expected)
    if prior == "vamp":  # a Monte Carlo KL: another seed, another estimate
        assert not np.array_equal(results[0], expected)


def test_seeds_as_int_pair_and_tensor_mean_the_same(binary_images):
    vae = VAE(tiny_model_config(arch="mlp"))
    x = tf.constant(binary_images)
    by_int = vae.elbo(x, seed=5).elbo.numpy()
    np.testing.assert_array_equal(by_int, vae.elbo(x, seed=(5, 0)).elbo.numpy())
    np.testing.assert_array_equal(by_int, vae.elbo(x, seed=tf.constant([5, 0])).elbo.numpy())
    assert not np.array_equal(by_int, vae.elbo(x, seed=(5, 1)).elbo.numpy())
    np.testing.assert_array_equal(vae.log_likelihood(x, 4, seed=2), vae.log_likelihood(x, 4, seed=[2, 0]))
    with pytest.raises(UserError, match="seed"):
        vae.elbo(x, seed=1.5)


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_training_loss_is_reconstruction_plus_beta_times_the_layer_kl(prior, binary_images):
    vae = VAE(tiny_model_config(arch="mlp", prior=prior, prior_components=2), kl_weight=0.3)
    x = tf.constant(binary_images)
    loss, parts = vae.training_loss(x, seed=[2, 3])
    # Independently: q, p and the z the seed draws.
    q, p = vae.posterior(x), vae.prior
    z = sample_posterior(q, tf.constant([2, 3]))
    try:
        kl = tfd.kl_divergence(q, p).numpy()
    except NotImplementedError:
        kl = q.log_prob(z).numpy() - p.log_prob(z).numpy()
    reconstruction = vae.likelihood(z).log_prob(x).numpy()
    np.testing.assert_allclose(parts.kl, kl, rtol=1e-5)
    np.testing.assert_allclose(loss, -reconstruction.mean() + 0.3 * kl.mean(), rtol=1e-5)
    # The KL term is the one the layer added in this call, counted once.
    assert len(vae.posterior_layer.losses) == 1
    np.testing.assert_allclose(vae.posterior_layer.losses[0], 0.3 * kl.mean(), rtol=1e-5)


def test_posterior_adds_no_loss_and_needs_no_seed(binary_images):
    vae = VAE(tiny_model_config(arch="mlp", prior="vamp", prior_components=3))
    assert isinstance(vae.posterior_layer.activity_regularizer, tfp.layers.KLDivergenceRegularizer)
    before = list(vae.posterior_layer.losses)
    q = vae.posterior(binary_images)
    assert isinstance(q, tfd.MultivariateNormalTriL) and q.event_shape == (LATENT_DIM,)
    assert q.batch_shape == (BATCH,)
    assert [float(v) for v in vae.posterior_layer.losses] == [float(v) for v in before]
    assert vae.location(binary_images).shape == (BATCH, LATENT_DIM)
    assert vae.decode(tf.zeros([1, LATENT_DIM])).shape == (1,) + IMAGE_SHAPE
