"""A run exported as a SavedModel loads and computes the library's numbers in a
process that never imports probvae."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from probvae import runs
from probvae.data import make_shapes

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
    result = subprocess.run([sys.executable, EXPORT, run_dir, str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(f"written to {out}") and result.stderr.strip() == ""
    return run_dir, out


def test_the_saved_model_computes_the_library_numbers_without_probvae(exported, tmp_path):
    run_dir, out = exported
    vae = runs.load_run(run_dir)
    images = vae.prepare_inputs(make_shapes(5, seed=3)[0]).numpy()
    z = vae.sample(4, seed=1).z.numpy()
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "z.npy", z)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", LOADER, str(out), str(tmp_path / "images.npy"),
                             str(tmp_path / "z.npy"), str(tmp_path / "outputs.npz")],
                            capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
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


def test_export_refuses_an_existing_folder(exported, request):
    if request.node.callspec.params["exported"] != "hierarchy-vamp":
        pytest.skip("the command's refusal is the same for every model: checked once")
    run_dir, out = exported
    result = subprocess.run([sys.executable, EXPORT, run_dir, str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {out} exists; give a new folder for the exported model"]
