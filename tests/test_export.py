"""A run exported as a SavedModel loads and computes the library's numbers in a
process that never imports probvae."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from probvae import runs
from probvae.data import make_shapes

from conftest import command_here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT = os.path.join(ROOT, "scripts", "export.py")
# Runs with the repository off the path: only TensorFlow (and what it needs) is importable as usual.
LOADER = """
import sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images, z = np.load(sys.argv[2]), np.load(sys.argv[3])
encoded = model.signatures["encode"](images=tf.constant(images))
decoded = model.signatures["decode"](z=tf.constant(z))
ll = model.signatures["log_likelihood"](images=tf.constant(images), num_samples=tf.constant(7))
assert not any(name == "probvae" or name.startswith("probvae.") for name in sys.modules), "probvae was imported"
np.savez(sys.argv[4], loc=encoded["loc"], scale_tril=encoded["scale_tril"], mean=decoded["mean"],
         logits=decoded.get("logits", decoded["mean"]), log_likelihood=ll["log_likelihood"],
         keys=np.array(sorted(decoded)))
"""


@pytest.fixture(scope="module", params=["hierarchy-vamp", "mixture-normal"])
def exported(request, family_run, tmp_path_factory):
    """A trained run (a hierarchy with Bernoulli pixels; a mixture prior with a Normal likelihood)
    exported by the command."""
    run_dir = family_run(request.param)
    out = tmp_path_factory.mktemp("export") / "saved"
    result = command_here("export", run_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(f"written to {out}") and result.stderr.strip() == ""
    return run_dir, out


def outputs_without_probvae(script: str, out, images, z, tmp_path):
    """The arrays `script` (LOADER or the like) writes from the SavedModel in `out` for
    `images` and `z`, in a process whose path holds no probvae."""
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "z.npy", z)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "images.npy"),
                             str(tmp_path / "z.npy"), str(tmp_path / "outputs.npz")],
                            capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(tmp_path / "outputs.npz")


def test_the_saved_model_computes_the_library_numbers_without_probvae(exported, tmp_path):
    run_dir, out = exported
    vae = runs.load_run(run_dir)
    images = vae.prepare_inputs(make_shapes(5, seed=3)[0]).numpy()
    z = vae.sample(4, seed=1).z.numpy()
    outputs = outputs_without_probvae(LOADER, out, images, z, tmp_path)
    np.testing.assert_allclose(outputs["loc"], vae.location(tf.constant(images)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["mean"], vae.decode(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["log_likelihood"], vae.log_likelihood(tf.constant(images), 7, seed=(0, 0)),
                               rtol=1e-5, atol=1e-4)
    statistics = vae.latent_statistics(vae.elbo_terms(tf.constant(images), seed=tf.constant([0, 0])))
    np.testing.assert_allclose(np.diagonal(outputs["scale_tril"], axis1=1, axis2=2), statistics.stddev, rtol=1e-5,
                               atol=1e-6)
    if vae.config.likelihood == "bernoulli":
        np.testing.assert_allclose(outputs["logits"], vae.decoder(z), rtol=1e-5, atol=1e-6)
        assert list(outputs["keys"]) == ["logits", "mean"]
    else:
        assert list(outputs["keys"]) == ["loc", "mean", "scale"]


def test_export_refuses_an_existing_folder(exported):
    # For each model: the refusal comes before TensorFlow loads, so it costs one Python start.
    run_dir, out = exported
    result = subprocess.run([sys.executable, EXPORT, run_dir, str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {out} exists; give a new folder for the exported model"]


def _exported_in_process(tmp_path, **model):
    """A tiny one-level untrained VAE and its SavedModel loaded back with tf.saved_model.load."""
    from probvae.config import ModelConfig
    from probvae.export import export_model
    from probvae.model import VAE

    vae = VAE(ModelConfig(image_shape=(4, 3, 1), hidden_units=(5,), **model))
    return vae, tf.saved_model.load(export_model(vae, str(tmp_path / "saved")))


@pytest.fixture(scope="module")
def bernoulli_export(tmp_path_factory):
    return _exported_in_process(tmp_path_factory.mktemp("bernoulli"), latent_dim=2, posterior="full")


def _binary(n=3):
    return (np.random.default_rng(4).uniform(size=(n, 4, 3, 1)) < 0.5).astype(np.float32)


def test_encode_is_the_encoders_full_covariance_posterior(bernoulli_export):
    # Computed from the encoder's output directly: params [n, 2 + 3] = [loc | the 3 entries of L],
    # L lower-triangular with softplus(diagonal) + 1e-5 (tfp.bijectors.FillScaleTriL's default).
    vae, saved = bernoulli_export
    images = _binary()
    params = vae.posterior_params(vae.encoder(images)).numpy()  # [3, 5]
    lower = tf.linalg.band_part(tfp.math.fill_triangular(params[:, 2:]), -1, 0).numpy()  # [3, 2, 2]
    diagonal = np.log1p(np.exp(np.diagonal(lower, axis1=1, axis2=2))) + 1e-5
    expected_scale = lower.copy()
    expected_scale[:, [0, 1], [0, 1]] = diagonal
    encoded = saved.signatures["encode"](images=tf.constant(images))
    np.testing.assert_allclose(encoded["loc"], params[:, :2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(encoded["scale_tril"], expected_scale, rtol=1e-5, atol=1e-6)


def test_log_likelihood_is_the_librarys_at_seed_0_0(bernoulli_export):
    vae, saved = bernoulli_export
    images = _binary()
    result = saved.signatures["log_likelihood"](images=tf.constant(images), num_samples=tf.constant(6))
    expected = vae.log_likelihood(tf.constant(images), num_samples=6, seed=(0, 0))
    np.testing.assert_allclose(result["log_likelihood"], expected, rtol=1e-6, atol=1e-5)
    assert result["log_likelihood"].shape == (3,)


@pytest.mark.parametrize("num_samples", [0, -2])
def test_log_likelihood_refuses_no_samples(bernoulli_export, num_samples):
    _, saved = bernoulli_export
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must be at least 1"):
        saved.signatures["log_likelihood"](images=tf.constant(_binary()), num_samples=tf.constant(num_samples))


@pytest.mark.parametrize("signature", ["encode", "log_likelihood"])
def test_a_bernoulli_model_refuses_images_that_are_not_binary(bernoulli_export, signature):
    _, saved = bernoulli_export
    images = np.full((2, 4, 3, 1), 0.5, np.float32)  # in [0, 1], not binary
    arguments = {"images": tf.constant(images)}
    if signature == "log_likelihood":
        arguments["num_samples"] = tf.constant(3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be binary"):
        saved.signatures[signature](**arguments)


def test_images_outside_the_unit_interval_are_refused(tmp_path):
    _, saved = _exported_in_process(tmp_path, latent_dim=3, posterior="diag", likelihood="continuous_bernoulli")
    for value in (-0.25, 1.5, np.nan):
        images = np.full((2, 4, 3, 1), value, np.float32)
        with pytest.raises(tf.errors.InvalidArgumentError, match="images must (lie in \\[0, 1\\]|be finite)"):
            saved.signatures["log_likelihood"](images=tf.constant(images), num_samples=tf.constant(2))
    inside = saved.signatures["log_likelihood"](images=tf.constant(np.full((2, 4, 3, 1), 0.25, np.float32)),
                                                num_samples=tf.constant(2))
    assert np.all(np.isfinite(inside["log_likelihood"]))


def test_export_run_writes_the_checkpoint_it_is_given(tmp_path):
    """Of a two-epoch run (checkpoints ckpt-4 after epoch 1, best-8): export_run with
    checkpoint="ckpt-4" decodes as that checkpoint's weights do, not as the best's."""
    from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from probvae.export import export_run
    from probvae.training import fit

    run_dir = str(tmp_path / "run")
    fit(RunConfig(data=DataConfig(dataset="shapes", max_train_examples=40, validation_fraction=0.25),
                  model=ModelConfig(arch="mlp", hidden_units=(7,), latent_dim=2),
                  train=TrainConfig(epochs=2, batch_size=10, test_iwae_samples=2, jit_compile=False, seed=3)),
        run_dir, log=lambda _: None)
    out = export_run(run_dir, str(tmp_path / "saved"), checkpoint="ckpt-4")
    z = np.random.default_rng(5).normal(size=(3, 2)).astype(np.float32)
    decoded = tf.saved_model.load(out).signatures["decode"](z=tf.constant(z))["mean"].numpy()
    np.testing.assert_allclose(decoded, runs.load_run(run_dir, "ckpt-4").decode(z), rtol=1e-5, atol=1e-6)
    assert not np.allclose(decoded, runs.load_run(run_dir).decode(z), rtol=1e-3, atol=1e-4)
