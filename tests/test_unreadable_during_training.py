"""Image files that become unreadable while a run trains on their folder.

The validation figures of every epoch are over the same images (the best
epoch, early stopping and the step size compare them), so a validation
image that can no longer be read stops the run with one line before
anything of that epoch is written; the run resumes once the file is back.
"""

import json
import os
import shutil

import pytest
from test_report import damage
from test_split_label_alignment import FOLDER_LABELS, HEIGHT, WIDTH, write_folder

from probvae import data, training
from probvae.analysis import report
from probvae.cli import common
from probvae.cli import fit as fit_command
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.errors import UserError

# Trains (two short runs and a resume) in this process: left out of the inner loop.
pytestmark = pytest.mark.slow

FLAGS = ["--arch", "mlp", "--hidden-units", "5", "--latent-dim", "2", "--image-shape", f"{HEIGHT},{WIDTH},1",
         "--validation-fraction", "0.2", "--epochs", "2", "--batch-size", "4", "--eval-batch-size", "3",
         "--kl-warmup-epochs", "0", "--test-iwae-samples", "2", "--checkpoint-every", "0", "--seed", "1",
         "--no-jit-compile"]  # without XLA: compiling the step would take longer than these few steps


def validation_paths(folder):
    """The files of the validation split, as the run lists them."""
    splits = data.load_dataset(f"folder:{folder}", validation_fraction=0.2, image_shape=(HEIGHT, WIDTH, 1))
    return [str(path) for path in splits.x_validation.paths]


def test_a_validation_file_removed_during_training_stops_the_command_in_one_line(tmp_path, monkeypatch, capsys):
    folder, run_dir = tmp_path / "images", tmp_path / "run"
    write_folder(folder, FOLDER_LABELS)
    removed = validation_paths(folder)[1]
    kept = str(tmp_path / "kept.png")

    def remove_after_epoch_one(self, epoch, model, splits, directory):
        if epoch == 1:
            shutil.move(removed, kept)

    monkeypatch.setattr(report.LatentSnapshots, "__call__", remove_after_epoch_one)
    argv = ["fit.py", "--dataset", f"folder:{folder}", "--run-dir", str(run_dir), "--snapshot-latents", *FLAGS]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        common.run(lambda: fit_command.main(argv[1:]), argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1] == (
        f"error: validation after epoch 2: 1 of 4 validation images can no longer be read ({removed}); their files "
        "changed or were removed since the data were listed, and a validation without them would not compare with "
        "the other epochs'; nothing of epoch 2 was written: restore the files, then continue with fit.py --resume "
        f"{run_dir} (newest checkpoint: ckpt-3)"), err[-1]
    # Epoch 1 is kept: its metrics and its checkpoint (12 training images, 3 steps).
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [epoch["epoch"] for epoch in metrics["epochs"]] == [1] and "test" not in metrics
    assert sorted(f for f in os.listdir(run_dir / "checkpoints") if f.startswith("ckpt-3."))
    assert not [f for f in os.listdir(run_dir / "checkpoints") if f.startswith("ckpt-6")]
    # With the file back, the run resumes from epoch 1's checkpoint and ends.
    shutil.move(kept, removed)
    monkeypatch.setattr(report.LatentSnapshots, "__call__", lambda *args: None)
    argv = ["fit.py", "--resume", str(run_dir)]
    common.run(lambda: fit_command.main(argv[1:]), argv)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [epoch["epoch"] for epoch in metrics["epochs"]] == [1, 2] and metrics["test"]["n_examples"] == 4
    assert metrics["resumes"][0]["checkpoint"] == "ckpt-3"
    assert all(epoch["validation"]["n_examples"] == 4 for epoch in metrics["epochs"])


def test_validation_files_all_damaged_during_training_stop_the_run(tmp_path):
    folder, run_dir = tmp_path / "images", str(tmp_path / "run")
    write_folder(folder, FOLDER_LABELS)
    paths = validation_paths(folder)

    def damage_after_epoch_one(epoch, model, splits, directory):
        if epoch == 1:
            for path in paths:
                damage(path)

    config = RunConfig(data=DataConfig(dataset=f"folder:{folder}", validation_fraction=0.2),
                       model=ModelConfig(arch="mlp", hidden_units=(5,), latent_dim=2, image_shape=(HEIGHT, WIDTH, 1)),
                       train=TrainConfig(epochs=2, batch_size=4, kl_warmup_epochs=0, test_iwae_samples=2,
                                         checkpoint_every_steps=0, jit_compile=False))
    with pytest.raises(UserError, match=r"^validation after epoch 2: 4 of 4 validation images can no longer be "
                                        r"read \(.*\.png, .*\.png, .*\.png, \.\.\.\); "):
        training.fit(config, run_dir, on_epoch_end=damage_after_epoch_one, log=lambda line: None)
    assert [epoch["epoch"] for epoch in json.loads(open(os.path.join(run_dir, "metrics.json")).read())["epochs"]] == [1]
    assert not os.path.exists(os.path.join(run_dir, "writer.lock"))
