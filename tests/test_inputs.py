"""One input path for the API: NumPy arrays and tensors get the same checks and preparation."""

import numpy as np
import pytest
import tensorflow as tf

from probvae.errors import UserError
from probvae.model import VAE

from conftest import IMAGE_SHAPE, tiny_model_config


@pytest.fixture(scope="module")
def model():
    return VAE(tiny_model_config())


def grey_images(n=3):
    return np.random.default_rng(4).integers(0, 256, (n,) + IMAGE_SHAPE).astype(np.uint8)


def test_a_uint8_tensor_is_prepared_as_the_same_numpy_array(model):
    images = grey_images()
    from_array = model.prepare_inputs(images).numpy()
    from_tensor = model.prepare_inputs(tf.constant(images)).numpy()
    np.testing.assert_array_equal(from_tensor, from_array)
    assert set(np.unique(from_tensor)) <= {0.0, 1.0}  # binarized for the Bernoulli likelihood
    np.testing.assert_array_equal(model.location(tf.constant(images)), model.location(images))
    saturated = tf.constant(np.full((2,) + IMAGE_SHAPE, 200, np.uint8))
    assert np.all(np.isfinite(model.log_likelihood(saturated, num_samples=5).numpy()))


def test_model_ready_tensors_pass_unchanged_and_may_lack_the_channel_axis(model):
    binary = (grey_images() > 127).astype(np.float32)
    np.testing.assert_array_equal(model.prepare_inputs(tf.constant(binary)), binary)
    np.testing.assert_array_equal(model.prepare_inputs(tf.constant(binary[..., 0])), binary)
    traced = tf.function(lambda x: model.prepare_inputs(x))
    np.testing.assert_array_equal(traced(tf.constant(binary)), binary)


@pytest.mark.parametrize("make", [np.asarray, tf.constant], ids=["numpy", "tensor"])
def test_bad_inputs_raise_one_clear_error(model, make):
    nan = np.full((2,) + IMAGE_SHAPE, 0.5, np.float32)
    nan[0, 0, 0, 0] = np.nan
    cases = [
        (nan, "inputs hold NaN or infinite values"),
        (np.zeros((0,) + IMAGE_SHAPE, np.float32), "inputs hold no images"),
        (np.zeros((2, 5, 5, 1), np.float32), "inputs must be [n, 8, 8, 1] for this model, got shape (2, 5, 5, 1)"),
        (np.zeros((2, 8, 8, 1), np.int32) + 300, "inputs are integers outside 0..255"),
        (np.zeros((2, 8, 8, 1), np.complex64), "inputs have dtype complex64"),
    ]
    for value, message in cases:
        for call in (model.prepare_inputs, lambda x: model.log_likelihood(x, num_samples=2), model.posterior):
            with pytest.raises(UserError) as error:
                call(make(value))
            assert str(error.value).startswith(message), (str(error.value), message)
            assert "\n" not in str(error.value) and "--" not in str(error.value)


def test_sample_decode_and_encode_state_the_model_s_distributions(model):
    samples = model.sample(6, seed=3)
    assert samples.z.shape == (6, model.latent_dim) and samples.x.shape == (6,) + IMAGE_SHAPE
    np.testing.assert_array_equal(model.sample(6, seed=3).x, samples.x)  # same seed, same draws
    # decode is the mean of p(x|z); the Bernoulli draws are binary.
    np.testing.assert_allclose(model.decode(samples.z), tf.sigmoid(model.decoder(samples.z)), rtol=1e-6)
    np.testing.assert_allclose(samples.mean, model.decode(samples.z), rtol=1e-6)
    assert set(np.unique(samples.x.numpy())) <= {0.0, 1.0}
    import probvae

    images = grey_images(5)
    encoding = probvae.encode(model, images, batch_size=2)  # three batches
    q = model.posterior(images)
    np.testing.assert_allclose(encoding.loc, q.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoding.scale, q.stddev(), rtol=1e-5, atol=1e-6)
    assert isinstance(encoding.loc, np.ndarray) and encoding.loc.shape == (5, model.latent_dim)


def test_every_documented_module_is_reachable_from_probvae():
    import subprocess
    import sys

    code = ("import probvae; probvae.runs.open_run; probvae.evaluation.ais_log_likelihood; probvae.config.RunConfig; "
            "probvae.presets.PRESETS; probvae.analysis.report.inspect_run; probvae.analysis.plotting; probvae.encode; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
