"""Several training steps per compiled call (`probvae.training.step.StepLoop`)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from probvae.training import step as step_lib
from probvae.training.step import StepLoop

from conftest import fit_one_after_another

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow



def _fit(run_dirs):
    """fit.py for {run_dir: steps per call}, one after another in one process."""
    fit_one_after_another({str(n): [
        "--dataset", "shapes", "--deterministic", "--arch", "mlp", "--epochs", "2", "--max-train-examples", "340",
        "--batch-size", "12", "--checkpoint-every", "9", "--test-iwae-samples", "3", "--latent-dim", "3", "--seed",
        "4", "--steps-per-call", str(n), "--run-dir", run_dir] for run_dir, n in run_dirs.items()})


def _read(run_dir):
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    directory = os.path.join(run_dir, "checkpoints")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(directory))
    weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
               if name.startswith("model/")}
    return metrics, weights, sorted(os.listdir(directory))


def test_several_steps_per_call_train_bit_for_bit_what_one_step_per_call_trains(tmp_path):
    _fit({tmp_path / "one": 1, tmp_path / "seven": 7})
    one, weights_one, files_one = _read(tmp_path / "one")
    seven, weights_seven, files_seven = _read(tmp_path / "seven")
    assert [e["train"] for e in one["epochs"]] == [e["train"] for e in seven["epochs"]]
    assert [e["validation"]["elbo"] for e in one["epochs"]] == [e["validation"]["elbo"] for e in seven["epochs"]]
    assert one["test"]["log_likelihood"] == seven["test"]["log_likelihood"]
    assert weights_one.keys() == weights_seven.keys() and len(weights_one) > 4
    for name, value in weights_one.items():
        np.testing.assert_array_equal(value, weights_seven[name], err_msg=name)
    # Calls stop at the checkpoint cadence: 9-step checkpoints of a 28-step epoch, then the epoch's end.
    assert files_one == files_seven
    assert "ckpt-54.index" in files_seven and "ckpt-56.index" in files_seven


def _counting_step():
    count = tf.Variable(0, dtype=tf.int64)
    total = tf.Variable(0.0)

    @tf.function(input_signature=[tf.TensorSpec([2], tf.float32)])
    def train_step(x):
        count.assign_add(1)
        total.assign_add(tf.reduce_sum(x))

    return train_step, count, total


def test_a_call_takes_the_batches_it_is_given_and_stops_where_the_data_ends():
    train_step, count, total = _counting_step()
    loop = StepLoop(train_step, steps_per_call=4)
    iterator = iter(tf.data.Dataset.range(10).map(lambda i: tf.fill([2], tf.cast(i, tf.float32))))
    assert [loop.run(iterator, loop.size(limit)) for limit in (9, 9, 1, 9, 9)] == [4, 4, 1, 1, 0]
    assert int(count.numpy()) == 10 and float(total.numpy()) == 2 * sum(range(10))
    assert loop.run(iterator, 3) == 0 and loop.run(iterator, 1) == 0


def test_automatic_call_sizes_follow_the_time_of_a_step(monkeypatch):
    train_step, _, _ = _counting_step()
    loop = StepLoop(train_step)
    assert loop.size(40) == 1  # until a step has been timed
    loop.step_seconds = step_lib.CALL_SECONDS / 8
    assert loop.size(40) == 8 and loop.size(5) == 5
    loop.step_seconds = step_lib.CALL_SECONDS / 1000
    assert loop.size(1000) == step_lib.MAX_STEPS_PER_CALL
    loop.step_seconds = step_lib.CALL_SECONDS * 3
    assert loop.size(40) == 1
    # Timing leaves out the first (compiling) call of one step and of the loop.
    fresh = StepLoop(train_step)
    iterator = iter(tf.data.Dataset.range(100).map(lambda i: tf.fill([2], tf.cast(i, tf.float32))))
    fresh.run(iterator, 1)
    assert fresh.step_seconds is None
    fresh.run(iterator, 1)
    assert fresh.step_seconds is not None
    assert StepLoop(train_step, python_loop=True).size(40) == 1
    with pytest.raises(Exception, match="steps_per_call"):
        from probvae.config import TrainConfig
        TrainConfig(steps_per_call=-1)


def test_a_python_iterator_of_batches_runs_one_step_per_call():
    train_step, count, _ = _counting_step()
    loop = StepLoop(train_step, steps_per_call=5)
    batches = iter([np.ones(2, np.float32)] * 3)
    assert [loop.run(batches, 5) for _ in range(4)] == [1, 1, 1, 0] and int(count.numpy()) == 3


def test_steps_from_a_tf_data_pipeline_do_not_depend_on_the_steps_per_call():
    """Image folders and TFDS streams train from tf.data: one step per call and
    several give the same weights bit for bit (with XLA, a KL weight between
    0 and 1)."""
    from probvae import data
    from probvae._keras import keras
    from probvae.model import VAE
    from probvae.training import StepTotals, make_train_step

    from conftest import tiny_model_config

    images, _ = data.make_shapes(60, seed=3, size=8)
    weights = []
    for steps_per_call in (1, 4):
        keras.utils.set_random_seed(2)
        model = VAE(tiny_model_config(arch="mlp", image_shape=(8, 8, 1)))
        model.kl_weight.assign(0.3)
        step = make_train_step(model, keras.optimizers.Adam(1e-2), StepTotals(), tf.Variable(0, dtype=tf.int64),
                               seed=5, batch_shape=(6, 8, 8, 1), jit_compile=True)
        loop = StepLoop(step, steps_per_call)
        iterator = iter(data.training_batches(images, 6, binarize=True, seed=1, epoch=1))
        while loop.run(iterator, loop.size(10)):
            pass
        weights.append([v.numpy() for v in model.trainable_variables])
    for one, several in zip(*weights):
        np.testing.assert_array_equal(one, several)
