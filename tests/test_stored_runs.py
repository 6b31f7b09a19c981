"""Runs written by earlier code still load and give the numbers that code gave.

tests/data/stored_runs holds two tiny runs trained by the code before the
model's KL was given its seed and prior explicitly (a one-level VampPrior
model, whose KL is a Monte Carlo estimate, and a two-level hierarchy), with
only their best checkpoints, and expected.json the numbers that code
computed from them (`probvae.load_run`, then on four fixed images: the
one-sample ELBO and KL at seed (3, 4), the K = 5 importance-weighted log p(x)
at seed (1, 2), and `probvae.encode`'s location and scale). No training is
involved, so the only difference across CPUs is float32 round-off of a few
matrix products: rtol 1e-4 (the numbers are hundreds of nats; a change of
the estimator or of the sample moves them by far more).
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import probvae

STORED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "stored_runs")


@pytest.mark.parametrize("name", ["vamp", "hvae"])
def test_a_stored_run_loads_and_evaluates_as_before(name, tmp_path):
    with open(os.path.join(STORED, "expected.json")) as stream:
        expected = json.load(stream)[name]
    run_dir = shutil.copytree(os.path.join(STORED, name), tmp_path / name)  # loading writes nothing, but be safe
    vae = probvae.load_run(str(run_dir))
    images = (np.random.default_rng(0).uniform(size=(4, 28, 28)) * 255).astype(np.uint8)
    x = vae.prepare_inputs(images)
    parts = vae.elbo(x, seed=tf.constant([3, 4]))
    np.testing.assert_allclose(parts.elbo, expected["elbo"], rtol=1e-4)
    np.testing.assert_allclose(parts.kl, expected["kl"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(vae.log_likelihood(x, num_samples=5, seed=(1, 2)), expected["log_likelihood"],
                               rtol=1e-4)
    encoding = probvae.encode(vae, images)
    np.testing.assert_allclose(encoding.loc, expected["location"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoding.scale, expected["scale"], rtol=1e-4, atol=1e-5)
