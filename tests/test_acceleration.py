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
    for name, policy in (("bfloat16", "mixed_bfloat16"), ("float16", "mixed_float16"), ("float32", "float32")):
        with pytest.raises(RuntimeError):
            with precision.compute_policy(name):
                assert keras.mixed_precision.global_policy().name == policy
                raise RuntimeError("inside")
        assert keras.mixed_precision.global_policy().name == "float32"


def test_only_float16_scales_the_loss():
    assert [precision.needs_loss_scale(p) for p in precision.PRECISIONS] == [False, False, True]


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: fpu sse2 {flags}\n\n")
    return str(path)


def test_the_cpu_has_bfloat16_where_its_flags_say_so_unless_onednn_is_capped(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert precision.cpu_has_bfloat16(_cpuinfo(tmp_path, "avx2 avx512f avx512_bf16")) is True
    assert precision.cpu_has_bfloat16(_cpuinfo(tmp_path, "avx2 amx_tile amx_bf16")) is True
    assert precision.cpu_has_bfloat16(_cpuinfo(tmp_path, "avx2 avx512f avx512_vnni")) is False
    assert precision.cpu_has_bfloat16(str(tmp_path / "missing")) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN runs no bfloat16 kernels natively then
    assert precision.cpu_has_bfloat16(_cpuinfo(tmp_path, "avx512_bf16")) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert precision.cpu_has_bfloat16(_cpuinfo(tmp_path, "avx512_bf16")) is True


def test_the_default_precision_follows_the_device_and_the_network(monkeypatch):
    from probvae.registry import NETWORKS

    gaining = [name for name in NETWORKS.names() if NETWORKS[name].trait("bfloat16_on_cpu", False)]
    losing = [name for name in NETWORKS.names() if not NETWORKS[name].trait("bfloat16_on_cpu", False)]
    for arch in gaining:
        assert precision.default_precision(arch, gpu=False, cpu_bfloat16=True) == "bfloat16"
    for arch in gaining + losing:
        assert precision.default_precision(arch, gpu=False, cpu_bfloat16=False) == "float32"
    for arch in losing:
        assert precision.default_precision(arch, gpu=False, cpu_bfloat16=True) == "float32"
    monkeypatch.setattr(precision, "gpu_has_bfloat16", lambda: True)
    assert precision.default_precision("mlp", gpu=True) == "bfloat16"
    monkeypatch.setattr(precision, "gpu_has_bfloat16", lambda: False)
    assert precision.default_precision("mlp", gpu=True) == "float32"
    assert precision.resolve("float16", "mlp") == "float16"


# Relative agreement of the ELBO with float32's: float16 keeps about 3 significant digits of its
# activations, bfloat16 about 2 (8 bits of mantissa); the ELBO is about -45 nats.
_AGREEMENT = {"float16": 2e-2, "bfloat16": 5e-2}


@pytest.mark.parametrize("compute", ["float16", "bfloat16"])
@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_mixed_precision_keeps_the_elbo_finite_float32_and_close_to_float32(arch, compute, binary_images,
                                                                           float32_policy_after):
    config = tiny_model_config(arch=arch)
    keras.utils.set_random_seed(0)
    reference = VAE(config)
    with precision.compute_policy(compute):
        mixed = VAE(config)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert mixed.encoder.layers[-1].compute_dtype == compute
    mixed.set_weights(reference.get_weights())
    x = tf.constant(binary_images)
    posterior = mixed.posterior(x)
    assert posterior.dtype == tf.float32 and mixed.likelihood(posterior.mean()).dtype == tf.float32
    got, expected = mixed.elbo(x, seed=[1, 2]), reference.elbo(x, seed=[1, 2])
    for name in ("elbo", "reconstruction", "kl"):
        value = getattr(got, name)
        assert value.dtype == tf.float32 and np.all(np.isfinite(value.numpy()))
    np.testing.assert_allclose(got.elbo.numpy(), expected.elbo.numpy(), rtol=_AGREEMENT[compute])
    assert not np.allclose(got.elbo.numpy(), expected.elbo.numpy(), rtol=1e-6)  # it did compute in `compute`

    optimizer = keras.optimizers.Adam(1e-3)
    if precision.needs_loss_scale(compute):
        optimizer = precision.loss_scaled(optimizer)
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
