import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from probvae import data, runs

from conftest import command_here

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
SMALL = ["--dataset", "shapes", "--arch", "mlp", "--latent-dim", "2", "--epochs", "1",
         "--max-train-examples", "200", "--batch-size", "50"]
# The same run without XLA, whose compiling would take longer than its four steps, where XLA is not the point.
SMALL_GRAPH = [*SMALL, "--no-jit-compile"]


def run_fit(*args, cwd=None):
    """fit.py in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, FIT, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def fit_here(*args):
    """fit.py in this process (conftest.command_here)."""
    return command_here("fit", *args)


def finite_numbers(value):
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_fit_writes_a_complete_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = run_fit(*SMALL, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert str(run_dir) in result.stdout
    # The whole record on stdout (fit.py > log keeps it), nothing on stderr: no bar off a terminal, no TensorFlow noise.
    assert "epoch 1/1  train ELBO" in result.stdout and "final test evaluation" in result.stdout
    assert result.stderr.strip() == "", result.stderr
    assert {"config.json", "metrics.json", "checkpoints", "logs"} <= set(os.listdir(run_dir))
    assert any(name.endswith(".index") for name in os.listdir(run_dir / "checkpoints"))
    assert os.listdir(run_dir / "logs" / "train") and os.listdir(run_dir / "logs" / "validation")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["latent_dim"] == 2 and config["model"]["image_shape"] == [28, 28, 1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and finite_numbers(metrics)
    assert {"elbo", "reconstruction", "kl", "elbo_stderr"} <= set(metrics["test"])
    assert metrics["test"]["elbo"] == pytest.approx(metrics["test"]["reconstruction"] - metrics["test"]["kl"], rel=1e-4)
    # Active units of the validation split, computed here from the posterior means of epoch 1's weights
    # (the run's model) on its fixed binarization: Var_x E_q[z_i|x] > 0.01.
    model = runs.load_run(str(run_dir))
    validation = data.load_config_dataset(runs.load_config(str(run_dir))).x_validation
    means = np.concatenate([model.posterior(x).mean().numpy()
                            for x in data.evaluation_batches(validation, 100, binarize=True, seed=0)])
    assert metrics["epochs"][0]["validation"]["active_units"] == int(np.sum(means.var(axis=0) > 0.01))
    # TensorBoard shows the model: step size, KL weight, active units, per-dimension KL, pictures, HParams.
    tags = {split: tensorboard_tags(run_dir / "logs" / split) for split in ("train", "validation", "hparams")}
    assert {"learning_rate", "kl_weight", "elbo", "loss"} <= tags["train"]
    assert {"elbo", "active_units", "kl_per_dimension", "reconstructions/input",
            "reconstructions/mean of p(x|z) at E[z|x]", "prior samples/mean of p(x|z), z ~ p(z)"} <= tags["validation"]
    assert not {"n_examples", "binarization_seed"} & tags["validation"]
    assert {"_hparams_/session_start_info", "test/elbo", "test/log_likelihood"} <= tags["hparams"]


def tensorboard_tags(directory):
    """The tags of every summary in the event files of `directory`."""
    import tensorflow as tf

    tags = set()
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(str(directory / name)):
            tags |= {value.tag for value in event.summary.value}
    return tags


def test_unknown_dataset_lists_valid_names_without_a_traceback(tmp_path):
    result = run_fit("--dataset", "imagenet", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "fashion_mnist, mnist, kmnist, cifar10, shapes" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
    assert result.stderr.startswith("error: unknown dataset 'imagenet'")


def test_an_existing_run_is_not_overwritten_unless_asked(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mine = '{"data": {}, "model": {}, "train": {}, "mine": true}'  # a run's config.json, by its sections
    (run_dir / "config.json").write_text(mine)
    result = fit_here(*SMALL_GRAPH, "--run-dir", str(run_dir))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (run_dir / "config.json").read_text() == mine
    result = fit_here(*SMALL_GRAPH, "--run-dir", str(run_dir), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "config.json").read_text())["version"] == 1


def test_an_exploding_learning_rate_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = fit_here(*SMALL_GRAPH, "--learning-rate", "1e30", "--checkpoint-every", "1", "--run-dir", str(run_dir))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    # Adam's first step moves every weight by about 1e30; the next forward pass overflows.
    found = re.match(r"error: training stopped at step (\d+) \(epoch 1\): the .* became non-finite \(NaN or inf\); "
                     r"the last good checkpoint is (\S+); lower --learning-rate \(now 1e\+30\)", message)
    assert found, message
    step, checkpoint = int(found.group(1)), found.group(2)
    assert checkpoint == f"{run_dir}/checkpoints/ckpt-{step - 1}"
    assert runs.latest_checkpoint(str(run_dir)) == checkpoint
    assert not (run_dir / "metrics.json").exists()
    model = runs.load_run(str(run_dir))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)


def test_list_presets_prints_one_line_each():
    result = run_fit("--list-presets")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.strip().splitlines()]
    assert names == ["mnist-dense-2d", "mnist-conv-2d", "mnist-dcgan-2d", "mnist-dlwp-2d", "fashion-conv",
                     "fashion-conv-2d", "fashion-best", "fashion-vae", "fashion-vamp", "fashion-vamp-iaf",
                     "fashion-hvae", "fashion-convhvae", "celeba-faces"]


def test_a_preset_trains_on_an_image_folder_with_flags_overriding_it(tmp_path):
    import numpy as np
    import tensorflow as tf

    images = tmp_path / "faces"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):  # 2 validation, 2 test, 20 training images
        tf.io.write_file(str(images / f"{i}.jpg"), tf.io.encode_jpeg(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)))
    (images / "broken.jpg").write_bytes(b"")
    run_dir = tmp_path / "run"
    result = fit_here("--preset", "celeba-faces", "--dataset", f"folder:{images}", "--image-shape", "8,8,3",
                     "--latent-dim", "3", "--epochs", "1", "--batch-size", "4", "--kl-warmup-epochs", "2",
                     "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "1 unreadable files skipped: broken.jpg" in result.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["image_shape"] == [8, 8, 3] and config["model"]["latent_dim"] == 3
    assert config["model"]["conv_layers"] == [[32, 3, 2], [64, 3, 2], [64, 3, 2], [64, 3, 2]]
    assert config["model"]["binarize"] is False and config["train"]["kl_warmup_epochs"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n_examples"] == 2 and finite_numbers(metrics)
    # Warm-up: the first epoch trains with KL weight 0, so its loss is the reconstruction alone.
    train = metrics["epochs"][0]["train"]
    assert train["loss"] == pytest.approx(-train["reconstruction"], rel=1e-5) and train["kl"] > 0
