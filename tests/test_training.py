import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import IMAGE_SHAPE, tiny_model_config
from probvae import data, evaluation
from probvae._keras import keras
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.model import VAE
from probvae.training import StepTotals, fit, make_train_step

FASHION_AVAILABLE = os.path.isdir(data.SYSTEM_IDX_DIRS["fashion_mnist"])


def _step_parts(batch=3):
    vae = VAE(tiny_model_config())
    optimizer = keras.optimizers.Adam(1e-2)
    totals, step = StepTotals(), tf.Variable(0, dtype=tf.int64)
    train_step = make_train_step(vae, optimizer, totals, step, seed=0, batch_shape=(batch,) + IMAGE_SHAPE)
    return vae, train_step, totals, step


def test_a_training_step_changes_weights_and_evaluation_does_not(binary_images):
    vae, train_step, totals, step = _step_parts()
    before = [v.numpy().copy() for v in vae.trainable_variables]
    evaluation.elbo_per_example(vae, tf.data.Dataset.from_tensors(binary_images), seed=0)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, vae.trainable_variables))
    train_step(tf.constant(binary_images))
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, vae.trainable_variables)]
    assert all(changed) and int(step.numpy()) == 1
    assert totals.means()["loss"] > 0


def test_the_step_traces_once_across_epochs():
    images = (np.random.default_rng(0).uniform(size=(7,) + IMAGE_SHAPE) * 255).astype(np.uint8)
    _, train_step, _, step = _step_parts()
    for epoch in (1, 2, 3):
        for x in data.training_batches(images, 3, binarize=True, seed=0, epoch=epoch):
            train_step(x)
    assert int(step.numpy()) == 6
    assert train_step.experimental_get_tracing_count() == 1


def _untrained_elbo(config, splits):
    vae = VAE(config.model.replace(image_shape=splits.image_shape))
    return evaluation.evaluate_elbo(vae, splits.x_validation, seed=0)["elbo"]


@pytest.mark.slow
def test_a_few_hundred_steps_raise_the_validation_elbo(tmp_path):
    config = RunConfig(
        data=DataConfig(dataset="shapes"),
        model=ModelConfig(arch="mlp", latent_dim=4, hidden_units=(128,)),
        train=TrainConfig(epochs=4, batch_size=32, learning_rate=2e-3),
    )
    splits = data.load_dataset("shapes")
    before = _untrained_elbo(config, splits)
    metrics = fit(config, str(tmp_path / "run"), splits=splits, log=lambda _: None)
    after = metrics["epochs"][-1]["validation"]["elbo"]
    assert len(metrics["epochs"]) == 4
    # Untrained: about -540 nats (784 pixels at log 2 each); a few hundred steps reach about -100.
    assert after > before + 150, (before, after)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_AVAILABLE and not os.environ.get("CI"),
                    reason="Debian's dataset-fashion-mnist is not installed (CI installs it)")
def test_real_fashion_mnist_subset_learns(tmp_path):
    config = RunConfig(
        data=DataConfig(dataset="fashion_mnist", max_train_examples=6000),
        model=ModelConfig(arch="mlp", latent_dim=8, hidden_units=(256,)),
        train=TrainConfig(epochs=3, batch_size=60, learning_rate=2e-3, eval_batch_size=2000),
    )
    metrics = fit(config, str(tmp_path / "run"), log=lambda _: None)
    test_elbo = metrics["test"]["elbo"]
    assert metrics["data_source"].startswith("IDX files")
    # 300 steps; an untrained model scores about -545 nats. Measured: about -290.
    assert test_elbo > -320, test_elbo
    assert metrics["test"]["n_examples"] == 10000


def test_the_xla_step_traces_once_and_computes_what_the_graph_step_does():
    images = (np.random.default_rng(0).uniform(size=(7,) + IMAGE_SHAPE) * 255).astype(np.uint8)
    losses = {}
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        vae = VAE(tiny_model_config(arch="mlp"))
        totals, step = StepTotals(), tf.Variable(0, dtype=tf.int64)
        train_step = make_train_step(vae, keras.optimizers.Adam(1e-2), totals, step, seed=0,
                                     batch_shape=(3,) + IMAGE_SHAPE, jit_compile=jit_compile)
        losses[jit_compile] = [float(train_step(x)) for epoch in (1, 2, 3)
                               for x in data.training_batches(images, 3, binarize=True, seed=0, epoch=epoch)]
        assert train_step.experimental_get_tracing_count() == 1
    # Under XLA TensorFlow's stateless sampler uses another algorithm, so the
    # posterior samples differ: the losses agree up to Monte Carlo noise (a few
    # per cent of about 44 nats), and both runs learn.
    np.testing.assert_allclose(losses[True], losses[False], rtol=0.1)
    assert losses[True][-1] < losses[True][0] and losses[False][-1] < losses[False][0]
    assert not np.allclose(losses[True], losses[False], rtol=1e-6)


def test_fit_with_xla_and_mixed_precision_writes_a_finite_float32_run(tmp_path):
    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=60),
        model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(16,)),
        train=TrainConfig(epochs=1, batch_size=20, jit_compile=True, mixed_precision=True, eval_batch_size=250),
    )
    try:
        metrics = fit(config, str(tmp_path / "run"), log=lambda _: None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.mixed_precision.global_policy().name == "float32"
    for section in (metrics["epochs"][0]["train"], metrics["epochs"][0]["validation"], metrics["test"]):
        assert np.isfinite(section["elbo"]) and section["elbo"] < 0
