import dataclasses
import io
import os
import shutil
import signal

import numpy as np
import pytest
import tensorflow as tf

from probvae import data, evaluation, runs, seeds
from probvae._keras import keras
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.errors import NonFiniteError, TrainingInterrupted
from probvae.model import VAE
from probvae.objectives import ElboParts
from probvae.training import NonFiniteFaults, StepTotals, Trainer, fit, make_train_step, prepare_run, seed_process
from probvae.training.history import RunHistory

from conftest import IMAGE_SHAPE, tiny_model_config

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
        # The test ELBO is the figure here: 2 importance samples (not 100) for the test set's log-likelihood.
        train=TrainConfig(epochs=3, batch_size=60, learning_rate=2e-3, eval_batch_size=2000, test_iwae_samples=2),
    )
    metrics = fit(config, str(tmp_path / "run"), log=lambda _: None)
    test_elbo = metrics["test"]["elbo"]
    assert metrics["data_source"].startswith("IDX files")
    # 300 steps; an untrained model scores about -545 nats. Measured: about -290.
    assert test_elbo > -320, test_elbo
    assert metrics["test"]["n_examples"] == 10000


# --- numerical faults, interruption and resuming ------------------------------


def _parts(reconstruction=(-1.0, -2.0), kl=(0.5, 0.25)):
    values = [tf.constant(reconstruction), tf.constant(kl)]
    return ElboParts(values[0] - values[1], *values)


@pytest.mark.parametrize(
    "reconstruction, kl, loss, gradient, terms, described",
    [
        ((-1.0, -2.0), (0.5, 0.25), 2.0, 1.0, 0, "nothing"),
        ((-1.0, np.nan), (0.5, 0.25), np.nan, np.nan, 1 | 4 | 8, "the reconstruction term"),
        ((-1.0, -2.0), (np.inf, 0.25), np.inf, np.nan, 2 | 4 | 8, "the KL term"),
        ((-np.inf, -2.0), (np.nan, 0.25), np.nan, np.nan, 15, "the reconstruction and KL terms"),
        ((-1.0, -2.0), (0.5, 0.25), np.inf, 1.0, 4, "the loss"),
        ((-1.0, -2.0), (0.5, 0.25), 2.0, -np.inf, 8, "the gradients"),
    ],
)
def test_nonfinite_check_names_the_term(reconstruction, kl, loss, gradient, terms, described):
    gradients = [tf.ones([2, 3]), tf.constant([0.0, gradient]), None]
    found = int(NonFiniteFaults.check(tf.constant(loss), _parts(reconstruction, kl), gradients))
    assert found == terms
    assert NonFiniteFaults.describe(found) == described


@pytest.mark.parametrize("skip_nonfinite", [False, True])
def test_a_nonfinite_batch_changes_no_weight(binary_images, skip_nonfinite):
    vae = VAE(tiny_model_config())
    optimizer = keras.optimizers.Adam(1e-2)
    totals, step, faults = StepTotals(), tf.Variable(0, dtype=tf.int64), NonFiniteFaults()
    train_step = make_train_step(vae, optimizer, totals, step, seed=0, batch_shape=binary_images.shape,
                                 faults=faults, skip_nonfinite=skip_nonfinite)
    before = [v.numpy().copy() for v in vae.trainable_variables]
    poisoned = binary_images.copy()
    poisoned[1, 2, 3, 0] = np.nan
    train_step(tf.constant(poisoned))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, vae.trainable_variables))
    assert int(optimizer.iterations.numpy()) == 0 and int(step.numpy()) == 1
    assert int(totals.skipped.numpy()) == 1 and float(totals.count.numpy()) == 0.0
    # The NaN pixel reaches the reconstruction and, through the encoder, the KL.
    assert int(faults.terms.numpy()) & 3 == 3 and int(faults.step.numpy()) == 0
    train_step(tf.constant(binary_images))
    changed = any(not np.array_equal(b, v.numpy()) for b, v in zip(before, vae.trainable_variables))
    # Stopping: nothing moves until the host stops the run. Skipping: training goes on.
    assert changed == skip_nonfinite and int(step.numpy()) == 2
    assert int(optimizer.iterations.numpy()) == int(skip_nonfinite)


def _tiny_config(**train):
    # Without XLA (its compiling would take longer than these 20 steps); the XLA step's faults and
    # resumes are checked in distributed_checks.py and test_fit_resume.py.
    values = dict(epochs=2, batch_size=3, checkpoint_every_steps=2, jit_compile=False)
    values.update(train)
    return RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=30),
        model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(9,)),
        train=TrainConfig(**values),
    )


@pytest.fixture(scope="module")
def shapes_splits():
    return data.load_dataset("shapes", max_train_examples=30)


def _batches_with(effect, at_epoch, at_index):
    """`ArrayBatches.epoch` (the training batches of an in-memory set), calling
    effect(x) -> x on one batch (0-based index in its epoch); a Python
    iterator, so the loop takes it one step per call."""
    original = data.ArrayBatches.epoch

    def batches(self, epoch, start_step=0):
        for index, x in enumerate(original(self, epoch, start_step), start=start_step):
            yield effect(x) if (epoch, index) == (at_epoch, at_index) else x

    return batches


def _with_nan(x):
    x = x.numpy()
    x[0, 5, 5, 0] = np.nan
    return tf.constant(x)


def _weights(model):
    return [v.numpy() for v in model.variables]


def test_a_nan_batch_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, shapes_splits):
    monkeypatch.setattr(data.ArrayBatches, "epoch", _batches_with(_with_nan, at_epoch=1, at_index=4))
    config = _tiny_config()
    run_dir = str(tmp_path / "run")
    config, splits = prepare_run(config, run_dir, splits=shapes_splits, log=lambda _: None)
    runs.prepare_run_dir(run_dir)
    runs.save_config(run_dir, config)
    seed_process(config.train)
    trainer = Trainer(config, splits, run_dir, log=lambda _: None)
    with pytest.raises(NonFiniteError) as raised:
        trainer.train()
    message = str(raised.value)
    # 10 steps per epoch; the 5th batch is poisoned; checkpoints every 2 steps.
    assert "step 5 (epoch 1)" in message and "the reconstruction and KL terms" in message
    assert "ckpt-4" in message and "--learning-rate" in message and "--skip-nonfinite" in message
    names = sorted(os.listdir(os.path.join(run_dir, runs.CHECKPOINT_DIR)))
    assert [n for n in names if n.endswith(".index")] == ["ckpt-2.index", "ckpt-4.index"]
    assert not os.path.exists(os.path.join(run_dir, runs.METRICS_FILE))
    restored, _, checkpoint = runs.open_run(run_dir)
    assert checkpoint.endswith("ckpt-4")
    # No update after the bad batch: the weights in memory are those of ckpt-4, all finite.
    for saved, live in zip(_weights(restored), _weights(trainer.model)):
        np.testing.assert_array_equal(saved, live)
        assert np.all(np.isfinite(saved))


def test_skip_nonfinite_skips_and_counts_the_batch(tmp_path, monkeypatch, shapes_splits):
    monkeypatch.setattr(data.ArrayBatches, "epoch", _batches_with(_with_nan, at_epoch=2, at_index=0))
    config = _tiny_config(skip_nonfinite=True)
    metrics = fit(config, str(tmp_path / "run"), splits=shapes_splits, log=lambda _: None)
    skipped = [e["train"]["skipped_nonfinite_batches"] for e in metrics["epochs"]]
    assert skipped == [0, 1] and metrics["skipped_nonfinite_batches"] == 1
    assert all(np.isfinite(e["train"]["loss"]) for e in metrics["epochs"])
    assert np.isfinite(metrics["test"]["elbo"])


def _interrupt(x):
    os.kill(os.getpid(), signal.SIGINT)
    return x


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resuming_repeats_the_uninterrupted_run(tmp_path, monkeypatch, shapes_splits):
    config = _tiny_config(checkpoint_every_steps=4)
    quiet = dict(splits=shapes_splits, log=lambda _: None)
    whole = fit(config, str(tmp_path / "whole"), **quiet)
    run_dir = str(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        # SIGINT arrives during the 7th batch of epoch 2 (global step 17).
        patch.setattr(data.ArrayBatches, "epoch", _batches_with(_interrupt, at_epoch=2, at_index=6))
        with pytest.raises(TrainingInterrupted) as raised:
            fit(config, run_dir, **quiet)
    assert raised.value.exit_code == 130
    assert "SIGINT at step 17 (epoch 2)" in str(raised.value) and f"--resume {run_dir}" in str(raised.value)
    assert runs.latest_checkpoint(run_dir).endswith("ckpt-17")
    # As a version that did not count CPU time saved it: epoch 2's CPU time is unknown, not a part of it.
    older = str(tmp_path / "older")
    shutil.copytree(run_dir, older)
    from_dict = RunHistory.from_dict.__func__
    with monkeypatch.context() as patch:
        patch.setattr(RunHistory, "from_dict", classmethod(
            lambda cls, values: from_dict(cls, {k: v for k, v in values.items() if k != "epoch_cpu_seconds"})))
        continued = fit(config, older, resume=True, **quiet)
    assert ["cpu_seconds" in e for e in continued["epochs"]] == [True, False] and "train_cpu_seconds" not in continued
    # Resumed with 1000 CPU seconds more than the checkpoint saved of epoch 2: its record counts them.
    saved = []

    def with_more_cpu(cls, values):
        history = from_dict(cls, values)
        saved.append(history.epoch_cpu_seconds)
        history.epoch_cpu_seconds += 1000.0
        return history

    with monkeypatch.context() as patch:
        patch.setattr(RunHistory, "from_dict", classmethod(with_more_cpu))
        resumed = fit(config, run_dir, resume=True, **quiet)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    cpu = [e["cpu_seconds"] for e in resumed["epochs"]]
    assert len(saved) == 1 and 0 < saved[0] < 1000 and 0 < cpu[0] < 1000 and cpu[1] > 1000 + saved[0]
    assert resumed["train_cpu_seconds"] == sum(cpu)
    assert all(e["cpu_seconds"] > 0 for e in whole["epochs"])
    assert whole["train_cpu_seconds"] == sum(e["cpu_seconds"] for e in whole["epochs"])
    assert resumed["resumes"] == [{"checkpoint": "ckpt-17", "step": 17, "epoch": 2}]
    for mine, theirs in zip(resumed["epochs"], whole["epochs"]):
        assert mine["train"] == theirs["train"] and mine["validation"] == theirs["validation"]
    timing = {"seconds"}  # wall time of the evaluation, the one field that may differ
    assert {k: v for k, v in resumed["test"].items() if k not in timing} == {
        k: v for k, v in whole["test"].items() if k not in timing}
    for a, b in zip(_weights(runs.load_run(run_dir)), _weights(runs.load_run(str(tmp_path / "whole")))):
        np.testing.assert_array_equal(a, b)


def test_the_xla_step_traces_once_and_computes_what_the_graph_step_does():
    images = (np.random.default_rng(0).uniform(size=(7,) + IMAGE_SHAPE) * 255).astype(np.uint8)
    losses = {}
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        vae = VAE(tiny_model_config(arch="mlp"))
        totals, step = StepTotals(), tf.Variable(0, dtype=tf.int64)
        train_step = make_train_step(vae, keras.optimizers.Adam(1e-2), totals, step, seed=0,
                                     batch_shape=(3,) + IMAGE_SHAPE, jit_compile=jit_compile)
        # The model's training loss at each step's seed, compiled the same way, before the step's update.
        reference = tf.function(lambda x, seed, vae=vae: vae.training_loss(x, seed=seed)[0], jit_compile=jit_compile,
                                autograph=False)
        expected, found = [], []
        for epoch in (1, 2, 3):
            for x in data.training_batches(images, 3, binarize=True, seed=0, epoch=epoch):
                expected.append(float(reference(x, seeds.step_seed(0, step))))
                found.append(float(train_step(x)))
        assert train_step.experimental_get_tracing_count() == 1
        # The same ops on the same seeds: equal up to float32 rounding (measured: equal, or 1e-7 relative).
        np.testing.assert_allclose(found, expected, rtol=1e-5)
        losses[jit_compile] = found
    # Under XLA TensorFlow's stateless sampler uses another algorithm, so the
    # posterior samples differ, and the losses by that alone: at the first step
    # (the same weights) measured 2.4 per cent apart, their means over the 6
    # steps 0.9 per cent (of about 45 nats).
    assert losses[True][0] == pytest.approx(losses[False][0], rel=0.04)
    assert np.mean(losses[True]) == pytest.approx(np.mean(losses[False]), rel=0.02)
    assert losses[True][-1] < losses[True][0] and losses[False][-1] < losses[False][0]
    assert not np.allclose(losses[True], losses[False], rtol=1e-6)


@pytest.mark.parametrize("compute", ["float16", "bfloat16", None])
def test_fit_with_xla_and_mixed_precision_writes_a_finite_float32_run(tmp_path, compute):
    """None: the run records the default it chose, a precision, not null (a resumed run keeps it)."""
    from probvae.training import precision
    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=60),
        model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(16,)),
        train=TrainConfig(epochs=1, batch_size=20, jit_compile=True, precision=compute, eval_batch_size=250),
    )
    lines = []
    try:
        metrics = fit(config, str(tmp_path / "run"), log=lines.append)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.mixed_precision.global_policy().name == "float32"
    chosen = compute or precision.default_precision("mlp")
    assert metrics["precision"] == chosen and any(f"{chosen} compute" in line for line in lines)
    assert RunConfig.from_json((tmp_path / "run" / "config.json").read_text()).train.precision == chosen
    for section in (metrics["epochs"][0]["train"], metrics["epochs"][0]["validation"], metrics["test"]):
        assert np.isfinite(section["elbo"]) and section["elbo"] < 0


class _Terminal:
    """A stream that says it is a terminal, recording what is written."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_draws_a_bar_with_etas_on_a_terminal_and_logs_each_epoch(monkeypatch):
    from probvae.training import callbacks

    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])

    class Totals:
        def means(self):
            return {"loss": 245.5}

    lines, terminal = [], _Terminal()
    progress = callbacks.Progress(lines.append, epochs=10, stream=terminal, every_seconds=1.0)
    clock[0] = 1030.0  # 30 of 60 steps in 30 s: 30 s left in the epoch, then 9 epochs of 60 s
    progress.update(1, 30, 60, 1000.0, Totals())
    assert terminal.text.startswith("\repoch 1/10 [============>")
    assert "30/60  loss 245.50  1.0 steps/s  epoch ETA 30s  run ETA 9m30s" in terminal.text
    progress.update(1, 31, 60, 1000.0, Totals())  # within a second: not redrawn
    assert terminal.text.count("epoch 1/10") == 1
    progress.end_epoch(1, 62.0, "epoch 1/10  train ELBO -250.00")
    assert terminal.text.endswith("\r\x1b[K") and lines == ["epoch 1/10  train ELBO -250.00  (1m02s; about 9m18s left)"]
    progress.end_epoch(10, 60.0, "epoch 10/10  done")
    assert lines[-1] == "epoch 10/10  done  (1m00s)"
    # Not a terminal: no bar at all, the same lines; with early stopping the time left is an upper bound.
    plain, lines = io.StringIO(), []
    quiet = callbacks.Progress(lines.append, epochs=4, early_stopping=True, stream=plain)
    quiet.update(1, 30, 60, 1000.0, Totals())
    quiet.end_epoch(1, 3600.0 * 1.5, "epoch 1/4")
    assert plain.getvalue() == "" and lines == ["epoch 1/4  (1h30m; at most 4h30m left)"]
    # One epoch that took ten times the others (the machine was busy) does not inflate the estimate.
    lines = []
    steady = callbacks.Progress(lines.append, epochs=100, stream=io.StringIO())
    for epoch, seconds in enumerate([90.0, 30.0, 30.0, 300.0, 30.0, 30.0], start=1):
        steady.end_epoch(epoch, seconds, f"epoch {epoch}/100")
    assert lines[3] == "epoch 4/100  (5m00s; about 48m00s left)" and lines[-1].endswith("(30s; about 47m00s left)")


def test_durations_read_as_a_person_writes_them():
    from probvae.training.callbacks import duration

    assert [duration(s) for s in (0.04, 0.44, 9.9, 9.97, 42.4, 200, 3900)] == [
        "0.0s", "0.4s", "9.9s", "10s", "42s", "3m20s", "1h05m"]


@pytest.mark.slow
def test_nothing_is_converted_by_autograph_in_training_and_evaluation(tmp_path, monkeypatch):
    """The library's compiled functions state their control flow (tf.cond,
    tf.while_loop) and trace with autograph off: its source transformation of
    every function a trace calls was about 40% of a small run's tracing.
    A function compiled with autograph on goes through `converted_call`."""
    from tensorflow.python.autograph.impl import api

    converted = []
    original = api.converted_call

    def counting(function, *args, **kwargs):
        converted.append(getattr(function, "__qualname__", repr(function)))
        return original(function, *args, **kwargs)

    monkeypatch.setattr(api, "converted_call", counting)
    tf.function(lambda x: x + 1)(tf.constant(1.0))  # the hook sees a function autograph converts
    assert len(converted) == 1
    converted.clear()

    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=24),
        model=ModelConfig(arch="gated", hidden_units=(6,), latent_dim=(3, 2), latent_layers=2, prior="vamp",
                          prior_components=2, posterior="diag"),
        train=TrainConfig(epochs=1, batch_size=8, eval_batch_size=50, test_iwae_samples=3, seed=2, jit_compile=False),
    )
    splits = data.load_dataset("shapes", max_train_examples=24)
    splits = dataclasses.replace(splits, x_validation=splits.x_validation[:10], x_test=splits.x_test[:10])
    run_dir = str(tmp_path / "run")
    fit(config, run_dir, splits=splits, log=lambda _: None)  # the step loop, validation and the test evaluation
    evaluation.evaluate_run(run_dir, estimator="ais", ais=evaluation.AISSettings(num_steps=2, num_chains=2),
                            max_examples=4)  # the compiled AIS chunk
    assert converted == [], sorted(set(converted))
