"""Shared fixtures: seeded randomness and tiny, distinct sizes.

Sizes are deliberately all different (batch 3, latent 2, 8x8 images, 4
filters, 5 dense units) so that a swapped axis fails loudly.
"""

import os
import random

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from probvae.config import ModelConfig  # noqa: E402

IMAGE_SHAPE = (8, 8, 1)
LATENT_DIM = 2
BATCH = 3


@pytest.fixture(autouse=True)
def seeded():
    """Seed Python, NumPy and TensorFlow before every test."""
    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)
    yield


def tiny_model_config(**changes) -> ModelConfig:
    values = dict(
        arch="conv",
        latent_dim=LATENT_DIM,
        image_shape=IMAGE_SHAPE,
        conv_filters=(4, 6),
        dense_units=5,
        hidden_units=(7,),
    )
    values.update(changes)
    return ModelConfig(**values)


@pytest.fixture
def binary_images():
    """A batch [3, 8, 8, 1] of binary float32 images."""
    rng = np.random.default_rng(1)
    return (rng.uniform(size=(BATCH,) + IMAGE_SHAPE) < 0.4).astype(np.float32)


def reparameterized_sample(posterior, seed, offset=0, total=None) -> np.ndarray:
    """The documented posterior sample, in NumPy: z_n = loc_n + chol(cov_n) eps_n
    with eps rows offset .. offset + n - 1 of transpose(stateless_normal([d, total], seed))."""
    loc = posterior.mean().numpy().astype(np.float64)  # [n, d]
    n, d = loc.shape
    eps = tf.random.stateless_normal([d, n if total is None else total], seed=seed).numpy().T[offset: offset + n]
    scale = np.linalg.cholesky(posterior.covariance().numpy().astype(np.float64))  # [n, d, d]
    return loc + np.einsum("nij,nj->ni", scale, eps.astype(np.float64))
