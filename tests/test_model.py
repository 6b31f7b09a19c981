import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from test_distributions import kl_to_standard_normal

from probvae.model import VAE

from conftest import BATCH, IMAGE_SHAPE, LATENT_DIM, tiny_model_config

tfd = tfp.distributions


@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "normal"])
def test_shapes_and_types(arch, likelihood, binary_images):
    vae = VAE(tiny_model_config(arch=arch, likelihood=likelihood))
    q = vae.posterior(binary_images)
    # Genuine distributions, not Keras's tensor-coercible wrapper.
    assert type(q) is tfd.MultivariateNormalTriL
    assert q.batch_shape == (BATCH,) and q.event_shape == (LATENT_DIM,)
    assert isinstance(vae.prior, tfd.Distribution) and vae.prior.event_shape == (LATENT_DIM,)
    p = vae.likelihood(q.sample(seed=(1, 2)))
    assert isinstance(p, tfd.Distribution)
    assert p.batch_shape == (BATCH,) and p.event_shape == IMAGE_SHAPE
    assert np.all(np.isfinite(p.log_prob(binary_images)))
    parts = vae.elbo(binary_images, seed=tf.constant([3, 4]))
    assert all(v.shape == (BATCH,) for v in parts)


def test_elbo_is_reconstruction_minus_analytic_kl(binary_images):
    vae = VAE(tiny_model_config())
    seed = tf.constant([5, 6])
    parts = vae.elbo(binary_images, seed=seed)
    q = vae.posterior(binary_images)
    z = q.sample(seed=seed)
    logits = vae.decoder(z).numpy()
    reconstruction = np.sum(binary_images * logits - np.logaddexp(0.0, logits), axis=(1, 2, 3))
    kl = kl_to_standard_normal(q.mean().numpy().astype(np.float64), q.covariance().numpy().astype(np.float64))
    np.testing.assert_allclose(parts.reconstruction, reconstruction, rtol=1e-5)
    np.testing.assert_allclose(parts.kl, kl, rtol=1e-4)
    np.testing.assert_allclose(parts.elbo, reconstruction - kl, rtol=1e-5)


def test_training_loss_weights_only_the_kl(binary_images):
    vae = VAE(tiny_model_config(), kl_weight=0.25)
    seed = tf.constant([7, 8])
    loss, parts = vae.training_loss(binary_images, seed=seed)
    expected = -np.mean(parts.reconstruction) + 0.25 * np.mean(parts.kl)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert np.all(np.isfinite(parts.elbo))


def test_conv_decoder_crops_sizes_its_strides_do_not_divide():
    # Two stride-2 stages: a 6x5 image starts the decoder at 2x2, upsamples to 8x8 and crops.
    vae = VAE(tiny_model_config(image_shape=(6, 5, 1)))
    assert vae.decoder.output_shape == (None, 6, 5, 1)
    assert vae(tf.zeros([BATCH, 6, 5, 1])).shape == (BATCH, 6, 5, 1)
    with pytest.raises(ValueError, match="height, width, channels"):
        VAE(tiny_model_config(image_shape=(6, 6)))
