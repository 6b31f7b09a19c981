"""The training schedule: cosine step size, best-epoch weights, early stopping."""

import json
import math
import os

import numpy as np
import pytest

from probvae import data, runs
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.training import Trainer, fit, schedules


def test_cosine_step_size_follows_the_closed_form():
    train = TrainConfig(epochs=4, learning_rate=0.02, lr_schedule="cosine", lr_final=0.1)
    schedule = schedules.learning_rate_schedule(train, steps_per_epoch=25)
    total = 100
    for n in (0, 1, 37, 50, 99, 100, 250):
        expected = 0.02 * (0.1 + 0.9 * (1 + math.cos(math.pi * min(n, total) / total)) / 2)
        assert float(schedule(n)) == pytest.approx(expected, rel=1e-5)
    assert schedules.learning_rate_schedule(TrainConfig(lr_schedule="constant", learning_rate=0.3), 9) == 0.3


def test_the_optimizer_steps_along_the_schedule():
    import tensorflow as tf

    optimizer = schedules.make_optimizer(TrainConfig(epochs=2, learning_rate=0.01, lr_schedule="cosine",
                                                     lr_final=0.0), 5)
    weight = tf.Variable(1.0)
    rates = []
    for _ in range(11):
        optimizer.apply_gradients([(tf.constant(0.0), weight)])
        rates.append(float(optimizer.learning_rate))  # the rate of the update just made
    # Update n (0-based) uses lr(n): 10 steps in all, half way at n = 5, 0 from n = 10 on.
    assert rates[0] == pytest.approx(0.01) and rates[5] == pytest.approx(0.005, rel=1e-5)
    assert rates[10] == pytest.approx(0.0, abs=1e-9)
    assert all(a > b for a, b in zip(rates[:10], rates[1:10]))


def test_schedule_fields_are_checked_and_old_configs_keep_their_behaviour():
    with pytest.raises(ValueError, match="constant, plateau, cosine"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="lr_final must be in 0..1"):
        TrainConfig(lr_schedule="cosine", lr_final=1.5)
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=-1)
    assert (TrainConfig().lr_schedule, TrainConfig().keep_best, TrainConfig().kl_warmup_epochs) == ("plateau", True, 10)
    # A config.json written before these fields existed trained at a constant
    # rate without warm-up and evaluated its last weights: it loads that way.
    values = RunConfig().to_dict()
    for name in ("lr_schedule", "lr_plateau_factor", "lr_plateau_patience", "lr_plateau_min", "keep_best", "patience",
                 "kl_warmup_epochs"):
        del values["train"][name]
    old = RunConfig.from_dict(values).train
    assert (old.lr_schedule, old.keep_best, old.patience, old.kl_warmup_epochs) == ("constant", False, 0, 0)


def _config(**train):
    # Without XLA: compiling the step would take longer than these few steps.
    values = dict(epochs=6, batch_size=10, checkpoint_every_steps=0, test_iwae_samples=2, jit_compile=False)
    values.update(train)
    return RunConfig(data=DataConfig(dataset="shapes", max_train_examples=30),
                     model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(8,)),
                     train=TrainConfig(**values))


@pytest.fixture(scope="module")
def shapes_splits():
    return data.load_dataset("shapes", max_train_examples=30)


def _scripted_validation(monkeypatch, elbos, weights):
    """Validation ELBOs taken from `elbos`; the weights after each epoch go to `weights`."""
    original = Trainer.evaluate
    scripted = iter(elbos)

    def evaluate(self, images, seed, **kwargs):
        result = original(self, images, seed, **kwargs)
        result["elbo"] = next(scripted)
        weights.append([v.numpy().copy() for v in self.model.variables])
        return result

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def test_early_stopping_keeps_and_evaluates_the_best_epoch(tmp_path, monkeypatch, shapes_splits):
    weights = []
    _scripted_validation(monkeypatch, [-50.0, -40.0, -45.0, -41.0, -30.0, -20.0], weights)
    run_dir = str(tmp_path / "run")
    lines = []
    metrics = fit(_config(patience=2), run_dir, splits=shapes_splits, log=lines.append)
    # Epoch 2 is best; epochs 3 and 4 are not better: stop after epoch 4.
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert metrics["stopped_early"] == 4
    assert metrics["best"] == {"epoch": 2, "validation_elbo": -40.0, "checkpoint": "best-6"}
    assert any("early stopping after epoch 4" in line for line in lines)
    folder = os.path.join(run_dir, runs.CHECKPOINT_DIR)
    assert sorted(n for n in os.listdir(folder) if n.startswith("best")) == ["best-6.data-00000-of-00001",
                                                                            "best-6.index"]
    assert metrics["test"]["checkpoint"] == "best-6"
    # The run's model is epoch 2's weights, not the last epoch's.
    loaded, _, checkpoint = runs.open_run(run_dir)
    assert checkpoint.endswith("best-6")
    for saved, expected in zip((v.numpy() for v in loaded.variables), weights[1]):
        np.testing.assert_array_equal(saved, expected)
    assert any(not np.array_equal(a, b) for a, b in zip(weights[1], weights[3]))
    assert runs.open_run(run_dir, "latest").checkpoint.endswith("ckpt-12")
    # The test figures are those of the best weights.
    with open(os.path.join(run_dir, runs.METRICS_FILE)) as f:
        assert json.load(f)["test"]["checkpoint"] == "best-6"
    # Resuming a stopped run trains nothing more.
    lines.clear()
    again = fit(_config(patience=2), run_dir, splits=shapes_splits, log=lines.append, resume=True)
    assert [e["epoch"] for e in again["epochs"]] == [1, 2, 3, 4]
    assert any("stopped early after epoch 4" in line for line in lines)


def test_an_importance_weighted_run_keeps_the_epoch_of_its_best_validation_bound(tmp_path, monkeypatch,
                                                                                shapes_splits):
    """With --objective iwae --train-samples K the best epoch, early stopping
    and the plateau step size follow the validation IWAE bound with that K,
    which rises while the ELBO falls; the records keep both."""
    elbos, bounds = iter([-40.0, -41.0, -42.0, -43.0, -44.0, -45.0]), iter([-50.0, -45.0, -44.0, -44.5, -44.2, -30.0])
    original, asked = Trainer.evaluate, []

    def evaluate(self, images, seed, **kwargs):
        result = original(self, images, seed, **kwargs)
        asked.append(kwargs.get("iwae_samples"))
        result.update(elbo=next(elbos), iwae_bound=next(bounds))
        return result

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    lines = []
    config = _config(patience=2, objective="iwae", train_samples=3, lr_schedule="plateau", lr_plateau_patience=1)
    metrics = fit(config, str(tmp_path / "run"), splits=shapes_splits, log=lines.append)
    assert asked == [3] * 5
    assert [e["validation"]["iwae_samples"] for e in metrics["epochs"]] == [3] * 5
    # Epoch 3 has the best bound; 4 and 5 are not better: stop after epoch 5.
    assert metrics["stopped_early"] == 5
    assert metrics["best"] == {"epoch": 3, "validation_elbo": -42.0, "validation_iwae_bound": -44.0,
                               "checkpoint": "best-9"}
    assert metrics["test"]["checkpoint"] == "best-9"
    assert any("early stopping after epoch 5: no better validation IWAE bound (K=3) than epoch 3 (-44.00)" in line
               for line in lines)
    # The step size halves after epoch 4, one epoch without a better bound (the ELBO fell at every epoch).
    assert [e["learning_rate"] for e in metrics["epochs"]] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4])
    assert any("after epoch 4: no better validation IWAE bound (K=3)" in line for line in lines)


def test_without_keep_best_the_last_weights_are_evaluated(tmp_path, monkeypatch, shapes_splits):
    _scripted_validation(monkeypatch, [-50.0, -40.0, -45.0], [])
    run_dir = str(tmp_path / "run")
    metrics = fit(_config(epochs=3, keep_best=False), run_dir, splits=shapes_splits, log=lambda _: None)
    assert metrics["best"]["epoch"] == 2 and metrics["best"]["checkpoint"] is None
    assert metrics["test"]["checkpoint"] == "ckpt-9" and metrics["stopped_early"] is None
    assert not [n for n in os.listdir(os.path.join(run_dir, runs.CHECKPOINT_DIR)) if n.startswith("best")]
    assert runs.open_run(run_dir).checkpoint.endswith("ckpt-9")
    with pytest.raises(ValueError, match="no best-epoch checkpoint"):
        runs.load_run(run_dir, "best")


def test_the_plateau_step_size_against_a_scripted_history():
    train = TrainConfig(lr_schedule="plateau", learning_rate=0.08, lr_plateau_factor=0.25, lr_plateau_patience=2,
                        lr_plateau_min=0.05)
    history = {"best": {"epoch": 3}}
    # Epochs 4 and 5 without a better ELBO than epoch 3: 2 epochs, so after epoch 5 the step size falls.
    assert schedules.reduce_on_plateau(train, history, 4, 0.08) == 0.08
    assert schedules.reduce_on_plateau(train, history, 5, 0.08) == pytest.approx(0.02)
    # Counted again from the reduction: not after epoch 6, after epoch 7, then held at the floor 0.05 * 0.08.
    history["lr_reduced_at"] = 5
    assert schedules.reduce_on_plateau(train, history, 6, 0.02) == 0.02
    assert schedules.reduce_on_plateau(train, history, 7, 0.02) == pytest.approx(0.005)
    history["lr_reduced_at"] = 7
    assert schedules.reduce_on_plateau(train, history, 9, 0.005) == pytest.approx(0.004)
    history["lr_reduced_at"] = 9
    assert schedules.reduce_on_plateau(train, history, 11, 0.004) == pytest.approx(0.004)
    # A better epoch restarts the count.
    assert schedules.reduce_on_plateau(train, {"best": {"epoch": 10}, "lr_reduced_at": 9}, 11, 0.004) == 0.004
    with pytest.raises(ValueError, match="lr_plateau_factor must lie strictly between 0 and 1"):
        TrainConfig(lr_schedule="plateau", lr_plateau_factor=1.0)


@pytest.mark.slow
def test_a_run_lowers_its_step_size_on_a_validation_plateau_and_resumes_the_same(tmp_path, monkeypatch,
                                                                                 shapes_splits):
    elbos = [-50.0, -40.0, -45.0, -41.0, -39.0, -42.0, -43.0]
    config = _config(epochs=7, lr_schedule="plateau", learning_rate=0.01, lr_plateau_factor=0.5,
                     lr_plateau_patience=2)
    _scripted_validation(monkeypatch, elbos, [])
    whole, lines = str(tmp_path / "whole"), []
    metrics = fit(config, whole, splits=shapes_splits, log=lines.append)
    # Best at 2; 3 and 4 not better: halved after epoch 4. 5 is best; 6 and 7 not: halved after 7.
    assert [e["learning_rate"] for e in metrics["epochs"]] == pytest.approx([0.01] * 4 + [0.005] * 3, rel=1e-6)
    assert sum("step size 0.01 -> 0.005 after epoch 4" in line for line in lines) == 1
    assert sum("step size 0.005 -> 0.0025 after epoch 7" in line for line in lines) == 1
    # Killed in epoch 6 (its validation raises) and resumed from epoch 5's checkpoint, the
    # run reduces at the same epochs and ends with the same numbers.
    monkeypatch.undo()
    _scripted_validation(monkeypatch, elbos[:5] + [None], [])
    broken = str(tmp_path / "broken")
    with pytest.raises(TypeError):  # the scripted ELBO None fails the best-epoch comparison
        fit(config, broken, splits=shapes_splits, log=lambda _: None)
    monkeypatch.undo()
    _scripted_validation(monkeypatch, elbos[5:], [])
    again = fit(config, broken, splits=shapes_splits, log=lambda _: None, resume=True)
    assert [e["learning_rate"] for e in again["epochs"]] == [e["learning_rate"] for e in metrics["epochs"]]
    assert again["test"]["elbo"] == metrics["test"]["elbo"]


def test_early_stopping_never_fires_at_the_last_epoch():
    from probvae.training.callbacks import Decision, track_best
    from probvae.training.history import RunHistory

    train = TrainConfig(epochs=4, patience=2)
    history = RunHistory(best={"epoch": 1, "validation_elbo": -10.0, "checkpoint": None})
    worse = {"elbo": -20.0}
    assert track_best(train, history, 2, worse) == Decision()  # one epoch without a better one
    assert track_best(train, history, 3, worse).stop  # two, before the last epoch
    assert track_best(train, history, 4, worse) == Decision()  # the last epoch ends the run anyway
    better = track_best(train, history, 4, {"elbo": -5.0})
    assert better.best == {"epoch": 4, "validation_elbo": -5.0, "checkpoint": None} and not better.stop
