"""The gated convolutional networks ("gatedconv", the convHVAE of Tomczak &
Welling 2018): the gated convolution against NumPy, the published layer sizes,
the hierarchy's own network of x for the lower level, and a tiny run that
resumes exactly after SIGKILL, loads in a fresh process and exports."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_export import outputs_without_probvae

from probvae import networks, runs
from probvae.config import ModelConfig
from probvae.model import VAE
from probvae.networks.gatedconv import GatedConv2D, LevelsGatedDense

from conftest import command_here
from test_fit_resume import checkpoint_tensors, kill_and_resume, metrics_of


def parameter_count(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def numpy_convolution(x, kernel, bias, stride):
    """Cross-correlation of x [n, h, w, c] with kernel [k, k, c, f] after k // 2 zeros on
    every side (PyTorch's Conv2d(padding=k // 2)), float64: [n, h', w', f]."""
    k, pad = kernel.shape[0], kernel.shape[0] // 2
    padded = np.pad(x.astype(np.float64), [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    out_h, out_w = (x.shape[1] + 2 * pad - k) // stride + 1, (x.shape[2] + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, i * stride:i * stride + k, j * stride:j * stride + k, :]  # [n, k, k, c]
            out[:, i, j, :] = np.tensordot(window, kernel, axes=([1, 2, 3], [0, 1, 2])) + bias
    return out


@pytest.mark.parametrize("filters, kernel, stride", [(3, 3, 2), (4, 5, 1)])
def test_gated_convolution_against_numpy(filters, kernel, stride):
    # An even height (8) and an odd width (7): stride 2 windows start at row -1, as PyTorch's
    # padding puts them (Keras's "same" would start them at row 0 when the height is even).
    x = np.random.default_rng(2).normal(size=(2, 8, 7, 2)).astype(np.float32)
    layer = GatedConv2D(filters, kernel, stride)
    y = layer(x).numpy()
    weights, bias = (w.numpy().astype(np.float64) for w in layer.conv.weights)  # [k, k, 2, 2f], [2f]
    linear = numpy_convolution(x, weights[..., :filters], bias[:filters], stride)  # W * x + b
    gate = numpy_convolution(x, weights[..., filters:], bias[filters:], stride)  # V * x + c
    np.testing.assert_allclose(y, linear / (1.0 + np.exp(-gate)), rtol=1e-5, atol=1e-5)
    assert y.shape == ((2, 4, 4, filters) if stride == 2 else (2, 8, 7, filters))


def test_levels_gated_dense_maps_each_level_by_its_own_layer():
    layer = LevelsGatedDense(4, (2, 3))
    z = np.random.default_rng(3).normal(size=(5, 5)).astype(np.float32)
    out = layer(z).numpy()
    assert out.shape == (5, 8)
    np.testing.assert_allclose(out[:, :4], layer.levels[0](z[:, :2]), rtol=1e-6)
    np.testing.assert_allclose(out[:, 4:], layer.levels[1](z[:, 2:]), rtol=1e-6)


def published_config(**changes):
    values = dict(arch="gatedconv", latent_dim=(40, 40), latent_layers=2, image_shape=(28, 28, 1), posterior="diag")
    return ModelConfig(**{**values, **changes})


def test_the_published_networks_at_28x28():
    config = published_config()
    encoder, level_encoder = networks.encoder(config), networks.level_encoder(config)
    decoder = networks.decoder(config, 1)
    x = np.zeros((3, 28, 28, 1), np.float32)
    assert encoder(x).shape == (3, 294) and level_encoder(x).shape == (3, 294)  # 7 * 7 * 6 = 294, the code's h_size
    assert decoder(np.zeros((3, 80), np.float32)).shape == (3, 28, 28, 1)
    # convHVAE_2level.py's layers, GatedConv2d(c_in, f, k) holding two convolutions of k*k*c_in*f + f each:
    # q(z2|x): (1, 32, 7) (32, 32, 3) (32, 64, 5) (64, 64, 3) (64, 6, 3)
    assert parameter_count(encoder) == 2 * (49 * 32 + 32) + 2 * (9 * 32 * 32 + 32) + 2 * (25 * 32 * 64 + 64) \
        + 2 * (9 * 64 * 64 + 64) + 2 * (9 * 64 * 6 + 6)  # 205,004
    # q(z1|x, z2)'s x: (1, 32, 3) (32, 32, 3) (32, 64, 3) (64, 64, 3) (64, 6, 3)
    assert parameter_count(level_encoder) == 2 * (9 * 32 + 32) + 2 * (9 * 32 * 32 + 32) + 2 * (9 * 32 * 64 + 64) \
        + 2 * (9 * 64 * 64 + 64) + 2 * (9 * 64 * 6 + 6)  # 136,908
    # p(x|z1, z2): GatedDense(40, 300) for z1 and z2, GatedDense(600, 784), four GatedConv2d 3x3 of 64
    # (the first from 1 channel), Conv2d(64, 1, 1).
    assert parameter_count(decoder) == 2 * 2 * (40 * 300 + 300) + 2 * (600 * 784 + 784) + 2 * (9 * 64 + 64) \
        + 3 * 2 * (9 * 64 * 64 + 64) + 65  # 1,214,481
    # The lower level: GatedDense(40, 294) for z2, GatedDense(588, 300) on [x, z2]; p(z1|z2) two GatedDense of 300.
    vae = VAE(config)
    level = vae.levels[0]
    assert level.posterior_above.units == 294 and level.posterior_joint.units == 300
    assert [layer.units for layer in level.prior_body] == [300, 300]


def test_another_image_shape_and_one_level():
    config = ModelConfig(arch="gatedconv", latent_dim=6, image_shape=(12, 10, 3), gated_decoder_units=5,
                         gated_decoder_filters=(7, 4))
    assert networks.level_encoder(config) is None  # one level: nothing reads it
    encoder, decoder = networks.encoder(config), networks.decoder(config, 2)
    # 12x10 -> 12x10 -> 6x5 -> 6x5 -> 3x3 -> 3x3 with 6 filters.
    assert encoder(np.zeros((4, 12, 10, 3), np.float32)).shape == (4, 3 * 3 * 6) == (4, networks.NETWORKS[
        "gatedconv"].load().features(config))
    assert decoder(np.zeros((4, 6), np.float32)).shape == (4, 12, 10, 2)
    assert [layer.filters for layer in decoder.layers if isinstance(layer, GatedConv2D)] == [7, 4]
    assert parameter_count(decoder) == 2 * (6 * 5 + 5) + 2 * (5 * 360 + 360) + 2 * (9 * 3 * 7 + 7) \
        + 2 * (9 * 7 * 4 + 4) + (4 * 2 + 2)


TINY = dict(arch="gatedconv", latent_dim=(2, 3), latent_layers=2, level_units=4, image_shape=(8, 6, 1),
            posterior="diag", gated_conv_layers=((3, 3, 2), (2, 3, 1)), level_conv_layers=((5, 3, 2),),
            gated_decoder_filters=(4,), gated_decoder_units=5)


def test_memory_estimate_counts_the_gated_convolutions():
    config = ModelConfig(**TINY)
    vae = VAE(config)
    weights = sum(parameter_count(part) for part in (vae.encoder, vae.level_encoder, vae.decoder))
    weights += (24 + 1) * 6  # encoder features 4x3x2 -> the 6 parameters of q(z2|x)
    # Activations per image, three per gated output (linear, gate, product):
    # encoder 8x6 -> 4x3x3 (108) -> 4x3x2 (72); level encoder 4x3x5 (180); decoder per-level dense 2 x 5 (30),
    # dense to 8x6x1 (144), gated conv 8x6x4 (576), pixels 4 x 48 (192); the posterior's 6 parameters.
    activations = 108 + 72 + 180 + 30 + 144 + 576 + 192 + 6
    assert networks.memory_estimate(config, 7) == 4 * (4 * weights + 7 * activations)


def test_the_lower_level_reads_its_own_network_of_x(binary_images):
    vae = VAE(ModelConfig(**{**TINY, "image_shape": (8, 8, 1)}))
    x = tf.constant(binary_images)
    terms = vae.elbo_terms(x, seed=(1, 2))
    np.testing.assert_array_equal(terms.features, vae.level_encoder(x))  # what the lower level read
    top_before = terms.top.mean().numpy()
    lower_before = terms.levels[0].posterior.mean().numpy()
    for variable in vae.level_encoder.trainable_variables:
        variable.assign(variable + 0.5)
    terms = vae.elbo_terms(x, seed=(1, 2))
    np.testing.assert_array_equal(terms.top.mean(), top_before)  # q(z2|x) does not read it
    assert np.abs(terms.levels[0].posterior.mean().numpy() - lower_before).max() > 1e-3
    assert vae.encoder(x).shape == (3, 4 * 4 * 2) and terms.features.shape == (3, 4 * 4 * 5)


# A tiny conv hierarchy with a VampPrior of 3 pseudo-inputs: 60 shapes in batches of 10,
# 6 steps per epoch, 2 epochs, a checkpoint every 3 steps.
RUN = ["--arch", "gatedconv", "--latent-layers", "2", "--latent-dim", "2,3", "--level-units", "4",
       "--gated-conv-layers", "3:3:2,2:3:2", "--level-conv-layers", "2:3:2,2:3:2", "--gated-decoder-filters",
       "3", "--gated-decoder-units", "5", "--posterior", "diag", "--prior", "vamp", "--prior-components", "3",
       "--dataset", "shapes", "--epochs", "2", "--max-train-examples", "60", "--batch-size", "10",
       "--checkpoint-every", "3", "--test-iwae-samples", "3", "--deterministic", "--seed", "5"]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """(the run killed with SIGKILL and resumed, the same run never interrupted)."""
    base = tmp_path_factory.mktemp("gatedconv")
    whole_dir, broken_dir = str(base / "whole"), str(base / "broken")
    kill_and_resume(RUN, whole_dir, broken_dir, timeout=600)
    return broken_dir, whole_dir


@pytest.mark.slow
def test_a_killed_conv_hierarchy_resumes_to_the_uninterrupted_state(resumed_run):
    broken_dir, whole_dir = resumed_run
    mine, reference = metrics_of(broken_dir), metrics_of(whole_dir)
    assert [e["epoch"] for e in mine["epochs"]] == [1, 2] and len(mine["resumes"]) == 1
    for a, b in zip(mine["epochs"], reference["epochs"]):
        assert a["train"] == b["train"] and a["validation"] == b["validation"]
    assert {k: v for k, v in mine["test"].items() if k != "seconds"} == {
        k: v for k, v in reference["test"].items() if k != "seconds"}
    final = os.path.join(runs.CHECKPOINT_DIR, "ckpt-12")
    resumed_tensors = checkpoint_tensors(os.path.join(broken_dir, final))
    reference_tensors = checkpoint_tensors(os.path.join(whole_dir, final))
    assert sorted(resumed_tensors) == sorted(reference_tensors)
    assert any(key.startswith("model/level_encoder/") for key in resumed_tensors)
    for key, value in reference_tensors.items():
        np.testing.assert_array_equal(resumed_tensors[key], value, err_msg=key)


FRESH = """
import sys
import numpy as np
from probvae import runs
from probvae.data import make_shapes
vae = runs.load_run(sys.argv[1])
images = vae.prepare_inputs(make_shapes(4, seed=6)[0])
np.savez(sys.argv[2], elbo=vae.elbo(images, seed=(3, 4)).elbo, ll=vae.log_likelihood(images, 5, seed=(1, 1)),
         mean=vae.decode(np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)))
"""

EXPORTED = """
import sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images, z = np.load(sys.argv[2]), np.load(sys.argv[3])
ll = model.signatures["log_likelihood"](images=tf.constant(images), num_samples=tf.constant(7))
decoded = model.signatures["decode"](z=tf.constant(z))
assert not any(name == "probvae" or name.startswith("probvae.") for name in sys.modules), "probvae was imported"
np.savez(sys.argv[4], log_likelihood=ll["log_likelihood"], mean=decoded["mean"])
"""


@pytest.mark.slow
def test_the_trained_conv_hierarchy_loads_in_a_fresh_process_and_exports(resumed_run, tmp_path):
    from probvae.data import make_shapes

    run_dir, _ = resumed_run
    result = subprocess.run([sys.executable, "-c", FRESH, run_dir, str(tmp_path / "fresh.npz")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh, vae = np.load(tmp_path / "fresh.npz"), runs.load_run(run_dir)
    images = vae.prepare_inputs(make_shapes(4, seed=6)[0])
    # Another process may get other oneDNN kernels for the same ops on some CPUs (seen on an AMD EPYC:
    # one of four log-likelihoods 1 ulp apart), so to float32 rounding, not bit for bit.
    np.testing.assert_allclose(fresh["elbo"], vae.elbo(images, seed=(3, 4)).elbo, rtol=1e-6)
    np.testing.assert_allclose(fresh["ll"], vae.log_likelihood(images, 5, seed=(1, 1)), rtol=1e-6)
    np.testing.assert_allclose(fresh["mean"], vae.decode(np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)),
                               rtol=1e-6, atol=1e-7)

    out = tmp_path / "saved"
    result = command_here("export", run_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    z = vae.sample(3, seed=2).z.numpy()
    exported = outputs_without_probvae(EXPORTED, out, images.numpy(), z, tmp_path)
    np.testing.assert_allclose(exported["mean"], vae.decode(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exported["log_likelihood"], vae.log_likelihood(images, 7, seed=(0, 0)), rtol=1e-5,
                               atol=1e-4)
