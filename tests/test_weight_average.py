"""--weight-average: an exponential moving average of the weights, the run's published weights."""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from probvae import data, runs, seeds
from probvae._keras import keras
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.errors import TrainingInterrupted, UserError
from probvae.model import VAE
from probvae.training import StepTotals, Trainer, fit, make_train_step, prepare_run, seed_process
from probvae.training.averaging import WeightAverage

from conftest import tiny_model_config

DECAY = 0.75


def test_the_average_follows_its_formula_and_skips_what_the_step_skips(binary_images):
    vae = VAE(tiny_model_config())
    average = WeightAverage(vae.trainable_variables, DECAY)
    totals, step = StepTotals(), tf.Variable(0, dtype=tf.int64)
    train_step = make_train_step(vae, keras.optimizers.Adam(1e-2), totals, step, seed=0,
                                 batch_shape=binary_images.shape, skip_nonfinite=True, average=average)
    weights = [v.numpy().astype(np.float64) for v in vae.trainable_variables]
    expected = [w.copy() for w in weights]
    poisoned = binary_images.copy()
    poisoned[0, 1, 1, 0] = np.nan
    for batch in [binary_images, binary_images, poisoned, binary_images]:
        train_step(tf.constant(batch))
        now = [v.numpy().astype(np.float64) for v in vae.trainable_variables]
        if batch is not poisoned:  # a skipped step moves neither the weights nor their average
            expected = [DECAY * a + (1 - DECAY) * w for a, w in zip(expected, now)]
        else:
            assert all(np.array_equal(a, b) for a, b in zip(now, weights))
        weights = now
    for held, wanted in zip(average.held, expected):
        np.testing.assert_allclose(held.numpy(), wanted, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(h.numpy(), w) for h, w in zip(average.held, weights))
    # Publishing exchanges the two sets exactly; nested, it does nothing more.
    trained = [v.numpy() for v in vae.trainable_variables]
    averages = [h.numpy() for h in average.held]
    with average.published():
        with average.published():
            assert all(np.array_equal(v.numpy(), a) for v, a in zip(vae.trainable_variables, averages))
        assert all(np.array_equal(h.numpy(), t) for h, t in zip(average.held, trained))
    assert all(np.array_equal(v.numpy(), t) for v, t in zip(vae.trainable_variables, trained))
    assert all(np.array_equal(h.numpy(), a) for h, a in zip(average.held, averages))


def _config(**train):
    values = dict(epochs=2, batch_size=3, checkpoint_every_steps=4, jit_compile=False, weight_average=DECAY)
    values.update(train)
    return RunConfig(data=DataConfig(dataset="shapes", max_train_examples=30),
                     model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(9,)), train=TrainConfig(**values))


@pytest.fixture(scope="module")
def shapes_splits():
    return data.load_dataset("shapes", max_train_examples=31)


def _trainer(config, run_dir, splits):
    config, splits = prepare_run(config, run_dir, splits=splits, log=lambda _: None)
    runs.prepare_run_dir(run_dir)
    runs.save_config(run_dir, config)
    seed_process(config.train)
    return Trainer(config, splits, run_dir, log=lambda _: None)


def _values(variables):
    return [v.numpy() for v in variables]


def test_checkpoints_validation_and_the_test_see_the_average(tmp_path, shapes_splits):
    run_dir = str(tmp_path / "run")
    trainer = _trainer(_config(), run_dir, shapes_splits)
    metrics = trainer.train()
    trained, averages = _values(trainer.model.trainable_variables), _values(trainer.average.held)
    assert not trainer.average.swapped
    # The newest checkpoint (the last epoch's end) holds the averages in the model's place ...
    assert trainer.state.latest.endswith("ckpt-20")
    for loaded, average in zip(runs.load_run(run_dir, "ckpt-20").trainable_variables, averages):
        np.testing.assert_array_equal(loaded.numpy(), average)
    # ... and the last epoch's validation figures are those of the averages, not of the weights trained.
    seed = seeds.validation_seed(0, 2)
    validation = metrics["epochs"][-1]["validation"]
    with trainer.published():
        assert trainer.evaluate(shapes_splits.x_validation, seed)["elbo"] == validation["elbo"]
    assert trainer.evaluate(shapes_splits.x_validation, seed)["elbo"] != validation["elbo"]
    assert all(np.array_equal(v.numpy(), t) for v, t in zip(trainer.model.trainable_variables, trained))
    # The best epoch's checkpoint, written by itself, holds the averages, and the model goes back to training.
    best = trainer.save_best()
    for loaded, average in zip(runs.load_run(run_dir, best).trainable_variables, averages):
        np.testing.assert_array_equal(loaded.numpy(), average)
    assert all(np.array_equal(v.numpy(), t) for v, t in zip(trainer.model.trainable_variables, trained))
    # Without a best epoch to load, the final test takes the averages too.
    trainer.config = trainer.config.replace(train={"keep_best": False})
    assert trainer.use_best() == "ckpt-20"
    assert all(np.array_equal(v.numpy(), a) for v, a in zip(trainer.model.trainable_variables, averages))
    # A run started from these weights starts its average there.
    other = _trainer(_config(init_from=run_dir), str(tmp_path / "other"), shapes_splits)
    other.initialize_from_run()
    best = runs.load_run(run_dir)
    for variable, held, wanted in zip(other.model.trainable_variables, other.average.held, best.trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), wanted.numpy())
        np.testing.assert_array_equal(held.numpy(), wanted.numpy())


def _interrupt_at(step_index):
    original = data.ArrayBatches.epoch

    def batches(self, epoch, start_step=0):
        for index, x in enumerate(original(self, epoch, start_step), start=start_step):
            if (epoch, index) == (2, step_index):
                os.kill(os.getpid(), signal.SIGINT)
            yield x

    return batches


def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, shapes_splits):
    quiet = dict(splits=shapes_splits, log=lambda _: None)
    whole = fit(_config(), str(tmp_path / "whole"), **quiet)
    stopped = str(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        patch.setattr(data.ArrayBatches, "epoch", _interrupt_at(6))  # SIGINT in step 17: saved mid-epoch
        with pytest.raises(TrainingInterrupted):
            fit(_config(), stopped, **quiet)
    assert runs.latest_checkpoint(stopped).endswith("ckpt-17")
    resumed = fit(_config(), stopped, resume=True, **quiet)
    for mine, theirs in zip(resumed["epochs"], whole["epochs"]):
        assert mine["train"] == theirs["train"] and mine["validation"] == theirs["validation"]
    assert resumed["test"]["elbo"] == whole["test"]["elbo"]
    for name in ["ckpt-20", None]:  # both sets of weights of the end, and the best epoch's
        reader = [tf.train.load_checkpoint(runs.open_run(run, name).checkpoint) for run in (stopped,
                                                                                          str(tmp_path / "whole"))]
        keys = [k for k in reader[0].get_variable_to_shape_map() if "weight_average" in k or "model/" in k]
        assert any("weight_average" in k for k in keys)
        for key in keys:
            np.testing.assert_array_equal(reader[0].get_tensor(key), reader[1].get_tensor(key))


def test_the_decay_must_be_below_one():
    with pytest.raises(UserError, match="weight_average must be 0 .off. or a decay in .0, 1."):
        _config(weight_average=1.0)
