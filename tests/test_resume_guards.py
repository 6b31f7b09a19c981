"""What `fit --resume` refuses, before it writes anything: a trained run whose
checkpoints are gone (it would train again from the first step and replace
metrics.json), a finished run whose best epoch's checkpoint is gone, a
checkpoint that does not fit the data or the steps per epoch; and the
history a checkpoint carries, read back from this and earlier versions."""

import dataclasses
import os
import shutil

import pytest

from probvae import data, runs
from probvae.cli import common
from probvae.cli import fit as fit_command
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.errors import UserError
from probvae.training import RunHistory, Trainer, fit
from probvae.training.history import check_restored

# 30 shapes in batches of 10: 3 steps per epoch, 2 epochs; without XLA, whose compiling would take longer.
CONFIG = RunConfig(data=DataConfig(dataset="shapes", max_train_examples=30),
                   model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(5,)),
                   train=TrainConfig(epochs=2, batch_size=10, checkpoint_every_steps=0, test_iwae_samples=2, seed=4,
                                     jit_compile=False))


@pytest.fixture(scope="module")
def splits():
    return data.load_dataset("shapes", max_train_examples=30)


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    """A finished run (its config with the image shape, its folder)."""
    run_dir = str(tmp_path_factory.mktemp("trained") / "run")
    fit(CONFIG, run_dir, splits=splits, log=lambda _: None)
    return runs.load_config(run_dir), run_dir


def _copy(run_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    return copy


def _snapshot(root):
    """Every file under `root` with its bytes."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as stream:
                found[os.path.relpath(os.path.join(folder, name), root)] = stream.read()
    return found


def _resume_command(run_dir, capsys):
    """`fit --resume RUN_DIR` as the command runs it: (exit code, stderr lines)."""
    argv = ["--resume", run_dir]
    with pytest.raises(SystemExit) as exited:
        common.run(lambda: fit_command.main(argv), argv)
    return exited.value.code, capsys.readouterr().err.strip().splitlines()


def test_metrics_json_keeps_its_keys(trained):
    _, run_dir = trained
    metrics = runs.read_json(os.path.join(run_dir, runs.METRICS_FILE))
    assert sorted(metrics) == ["best", "data_source", "dataset", "device", "distribution", "epochs", "parameters",
                               "precision", "resumes", "run_dir", "skipped_nonfinite_batches", "stopped_early", "test",
                               "train_cpu_seconds", "train_seconds", "units"]
    # (the default step size follows the validation ELBO, so each epoch records its own)
    assert [sorted(e) for e in metrics["epochs"]] == [["cpu_seconds", "epoch", "learning_rate", "seconds", "train",
                                                          "validation"]] * 2
    assert metrics["best"]["checkpoint"].startswith("best-") and metrics["resumes"] == []


def test_a_trained_run_whose_checkpoints_are_gone_is_not_trained_again(trained, tmp_path, capsys):
    run_dir = _copy(trained[1], tmp_path)
    shutil.rmtree(os.path.join(run_dir, runs.CHECKPOINT_DIR))
    before = _snapshot(run_dir)
    code, lines = _resume_command(run_dir, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "records 2 trained epoch(s)" in lines[0] and "holds no checkpoint" in lines[0]
    assert "--overwrite" in lines[0]
    assert _snapshot(run_dir) == before  # metrics.json untouched, nothing written


def test_a_finished_run_whose_best_checkpoint_is_gone_is_refused_in_one_line(trained, tmp_path, capsys):
    run_dir = _copy(trained[1], tmp_path)
    folder = os.path.join(run_dir, runs.CHECKPOINT_DIR)
    best = [name for name in os.listdir(folder) if name.startswith(runs.BEST_PREFIX)]
    assert best
    for name in best:
        os.remove(os.path.join(folder, name))
    before = _snapshot(run_dir)
    code, lines = _resume_command(run_dir, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "best epoch's checkpoint best-" in lines[0] and "is missing" in lines[0]
    assert _snapshot(run_dir) == before


def test_a_checkpoint_of_other_data_is_refused(trained, splits):
    config, run_dir = trained
    fewer = dataclasses.replace(splits, x_train=splits.x_train[:20], y_train=splits.y_train[:20])
    trainer = Trainer(config, fewer, run_dir, log=lambda _: None)
    with pytest.raises(UserError, match="the run trained on 30 examples, the data now gives 20"):
        trainer.restore()


def test_a_checkpoint_that_does_not_fit_the_steps_per_epoch_is_refused(trained, splits):
    config, run_dir = trained
    # Batches of 5: 6 steps per epoch, where the checkpoint at step 6 is after epoch 2 of 3 steps each.
    trainer = Trainer(config.replace(train={"batch_size": 5}), splits, run_dir, log=lambda _: None)
    with pytest.raises(UserError, match=r"\(step 6, epoch 2\) does not fit 6 steps per epoch"):
        trainer.restore()


def test_a_checkpoint_whose_history_counts_other_epochs_is_refused():
    """Step 6 after epoch 2 of 3 steps each sits at an epoch end, but the history lists one epoch only."""
    history = RunHistory(epochs=[{"epoch": 1}], train_examples=30)
    with pytest.raises(UserError, match=r"\(step 6, epoch 2\) does not fit 3 steps per epoch"):
        check_restored(history, "ckpt-6", 6, 2, 3, 30)
    check_restored(dataclasses.replace(history, epochs=[{"epoch": 1}, {"epoch": 2}]), "ckpt-6", 6, 2, 3, 30)


def test_the_history_reads_back_old_and_new_checkpoints():
    old = {"epochs": [{"epoch": 1}], "epoch_seconds": 2.5, "resumes": [], "train_examples": 30}  # before "best"
    history = RunHistory.from_dict(old)
    assert (history.best, history.stopped_early, history.lr_reduced_at) == (None, None, None)
    # Keys set only once they have a value stay out. The CPU seconds of the epoch it stopped in were not
    # counted (None: that epoch's record will have none); at an epoch end there are none to count (0).
    assert history.to_dict() == dict(old, best=None, stopped_early=None, epoch_cpu_seconds=None)
    assert RunHistory.from_dict(dict(old, epoch_seconds=0.0)).epoch_cpu_seconds == 0.0
    history.lr_reduced_at = 3
    history.initialized_from = {"run_dir": "a", "checkpoint": "best-3"}
    assert RunHistory.from_dict(history.to_dict()) == history
