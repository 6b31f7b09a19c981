import numpy as np
import pytest

from conftest import tiny_model_config
from probvae import data
from probvae.benchmarks.baseline import keras_recipe
from probvae.model import VAE


def _parameters(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_the_keras_recipe_has_probvaes_architecture_and_fits(arch):
    config = tiny_model_config(arch=arch)
    recipe = keras_recipe(config, learning_rate=1e-3)
    # Same layers, so the same number of weights: the contenders do the same work.
    assert _parameters(recipe) == _parameters(VAE(config))
    images = (np.random.default_rng(0).uniform(size=(6,) + config.image_shape) * 255).astype(np.uint8)
    batches = data.training_batches(images, 3, binarize=True, seed=0, epoch=1).map(lambda x: (x, x))
    history = recipe.fit(batches, epochs=1, verbose=0)
    # Untrained: about 64 * log 2 = 44 nats per 8x8 image, plus the KL.
    assert 20 < history.history["loss"][0] < 200


def test_the_recipe_under_mixed_precision_keeps_its_distributions_float32():
    from probvae._keras import keras

    config = tiny_model_config(arch="mlp")
    recipe = keras_recipe(config, learning_rate=1e-3, mixed_precision=True)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert isinstance(recipe.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert recipe.layers[0].compute_dtype == "float16" and recipe.layers[-1].compute_dtype == "float32"
    images = (np.random.default_rng(0).uniform(size=(6,) + config.image_shape) * 255).astype(np.uint8)
    batches = data.training_batches(images, 3, binarize=True, seed=0, epoch=1).map(lambda x: (x, x))
    loss = recipe.fit(batches, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss) and 20 < loss < 200
