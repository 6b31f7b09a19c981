import numpy as np
import pytest
import tensorflow as tf

from probvae._keras import keras
from probvae.model import VAE
from probvae.training import StepTotals, make_train_step, precision

from conftest import IMAGE_SHAPE, tiny_model_config


@pytest.fixture
def float32_policy_after():
    """Whatever a test does to the global policy, the next test starts from float32."""
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_xla_is_the_default_for_the_mlp_and_for_conv_only_on_a_gpu():
    assert precision.use_jit_compile("mlp", gpu=False) is True
    assert precision.use_jit_compile("conv", gpu=False) is False
    assert precision.use_jit_compile("conv", gpu=True) is True
    assert precision.use_jit_compile("mlp", jit_compile=False) is False
    assert precision.use_jit_compile("conv", jit_compile=True, gpu=False) is True


def test_the_policy_is_restored_after_the_block_even_on_error(float32_policy_after):
    with pytest.raises(RuntimeError):
        with precision.mixed_precision_policy(True):
            assert keras.mixed_precision.global_policy().name == "mixed_float16"
            raise RuntimeError("inside")
    assert keras.mixed_precision.global_policy().name == "float32"
    with precision.mixed_precision_policy(False):
        assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_mixed_precision_keeps_the_elbo_finite_float32_and_close_to_float32(arch, binary_images,
                                                                           float32_policy_after):
    config = tiny_model_config(arch=arch)
    keras.utils.set_random_seed(0)
    reference = VAE(config)
    with precision.mixed_precision_policy(True):
        mixed = VAE(config)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert mixed.encoder.layers[-1].compute_dtype == "float16"
    mixed.set_weights(reference.get_weights())
    x = tf.constant(binary_images)
    posterior = mixed.posterior(x)
    assert posterior.dtype == tf.float32 and mixed.likelihood(posterior.mean()).dtype == tf.float32
    got, expected = mixed.elbo(x, seed=[1, 2]), reference.elbo(x, seed=[1, 2])
    for name in ("elbo", "reconstruction", "kl"):
        value = getattr(got, name)
        assert value.dtype == tf.float32 and np.all(np.isfinite(value.numpy()))
    # float16 activations carry about 3 significant digits; the ELBO is about -45 nats.
    np.testing.assert_allclose(got.elbo.numpy(), expected.elbo.numpy(), rtol=2e-2)

    optimizer = precision.loss_scaled(keras.optimizers.Adam(1e-3))
    totals, step = StepTotals(), tf.Variable(0, dtype=tf.int64)
    train_step = make_train_step(mixed, optimizer, totals, step, seed=0, batch_shape=(3,) + IMAGE_SHAPE,
                                 jit_compile=arch == "mlp")
    for _ in range(3):
        loss = train_step(x)
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
    assert all(v.dtype == tf.float32 for v in mixed.trainable_variables)
    assert np.isfinite(totals.means()["elbo"])


def test_loss_scaling_gives_the_gradients_of_the_unscaled_loss():
    optimizer = precision.loss_scaled(keras.optimizers.SGD(0.1))
    assert precision.loss_scaled(optimizer) is optimizer
    w = tf.Variable([1.0, -2.0, 3.0])
    x = tf.constant([0.5, 0.25, 2.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(w * w * x)  # d loss / d w = 2 w x
        scaled = precision.scale_loss(optimizer, loss)
    assert float(scaled) == pytest.approx(float(loss) * float(optimizer.loss_scale))
    (gradient,) = precision.unscale_gradients(optimizer, tape.gradient(scaled, [w]))
    np.testing.assert_allclose(gradient.numpy(), [1.0, -1.0, 12.0], rtol=1e-6)
    plain = keras.optimizers.SGD(0.1)
    assert precision.scale_loss(plain, loss) is loss
