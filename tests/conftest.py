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
