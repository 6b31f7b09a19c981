"""A real fit.py process killed at the first checkpoint, resumed, stopped with
SIGTERM, resumed again and interrupted with SIGINT during its final test
evaluation, resumed once more: it ends with every epoch once in metrics.json
and, with --deterministic, the very weights and numbers of a run never
interrupted."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from probvae import runs
from probvae._keras import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
# 300 examples in batches of 10: 30 steps per epoch, 60 in all, a checkpoint every 5.
RUN = ["--dataset", "shapes", "--arch", "mlp", "--latent-dim", "2", "--epochs", "2", "--max-train-examples", "300",
       "--batch-size", "10", "--checkpoint-every", "5", "--seed", "3", "--deterministic",
       "--test-iwae-samples", "300"]  # a final evaluation of seconds, long enough to interrupt


def fit(*args, **kwargs):
    return subprocess.Popen([sys.executable, FIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def latest_step(run_dir):
    """Step of the checkpoint the state file names, or -1."""
    try:
        with open(os.path.join(run_dir, runs.CHECKPOINT_DIR, "checkpoint")) as stream:
            return int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', stream.read()).group(1))
    except (OSError, AttributeError):
        return -1


def signal_after_checkpoint(process, run_dir, number, after_step, timeout=300):
    """Send `number` once a checkpoint later than `after_step` exists; return its step."""
    deadline = time.time() + timeout
    while latest_step(run_dir) <= after_step:
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(number)
    return latest_step(run_dir)


def metrics_of(run_dir):
    with open(os.path.join(run_dir, runs.METRICS_FILE)) as stream:
        return json.load(stream)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole_dir, broken_dir = str(tmp_path / "whole"), str(tmp_path / "broken")
    whole = fit(*RUN, "--run-dir", whole_dir)

    first = fit(*RUN, "--run-dir", broken_dir)
    killed_at = signal_after_checkpoint(first, broken_dir, signal.SIGKILL, after_step=-1)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert "test" not in (metrics_of(broken_dir) if os.path.exists(os.path.join(broken_dir, "metrics.json")) else {})

    second = fit("--resume", broken_dir)
    signal_after_checkpoint(second, broken_dir, signal.SIGTERM, after_step=latest_step(broken_dir))
    _, err = second.communicate(timeout=120)
    assert second.returncode == 128 + signal.SIGTERM, err
    message = err.strip().splitlines()[-1]
    stopped_at = int(re.search(r"SIGTERM at step (\d+)", message).group(1))
    assert f"saved checkpoint {broken_dir}/checkpoints/ckpt-{stopped_at}" in message
    assert message.endswith(f"continue with: fit.py --resume {broken_dir}") and "Traceback" not in err

    # Interrupted once more, with SIGINT, during the final test evaluation: training is complete.
    third = fit("--resume", broken_dir, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = []
    for line in third.stdout:
        seen.append(line)
        if line.startswith("final test evaluation: 500 images, K=300"):
            break
    else:
        pytest.fail(f"no final test evaluation: {third.communicate()}")
    assert f"resuming from {broken_dir}/checkpoints/ckpt-{stopped_at}" in "".join(seen)
    time.sleep(0.2)
    third.send_signal(signal.SIGINT)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 128 + signal.SIGINT, err
    assert err.strip().splitlines()[-1] == (
        f"interrupted: SIGINT during the final test evaluation; training is complete and saved (newest checkpoint "
        f"ckpt-60); evaluate with: evaluate.py {broken_dir}, or rerun this evaluation with: fit.py --resume "
        f"{broken_dir}")
    assert "test" not in metrics_of(broken_dir)

    fourth = fit("--resume", broken_dir)
    out, err = fourth.communicate(timeout=300)
    assert fourth.returncode == 0, err
    assert "resuming from" in out + err and "training is complete" in out + err
    assert whole.wait(timeout=300) == 0, whole.communicate()[1]

    resumed, reference = metrics_of(broken_dir), metrics_of(whole_dir)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2] and resumed["test"]["iwae_samples"] == 300
    # It resumed from the newest checkpoint when it was killed (one more may have come in between),
    # from the one SIGTERM saved, and from the last one (no epoch 3 to name).
    assert killed_at <= resumed["resumes"][0]["step"] <= killed_at + 5 and len(resumed["resumes"]) == 3
    assert resumed["resumes"][1]["step"] == stopped_at
    assert resumed["resumes"][2] == {"checkpoint": "ckpt-60", "step": 60, "epoch": None}
    for mine, theirs in zip(resumed["epochs"], reference["epochs"]):
        assert mine["train"] == theirs["train"] and mine["validation"] == theirs["validation"]
    timing = {"seconds"}  # wall time of the evaluation, the one field that may differ
    assert {k: v for k, v in resumed["test"].items() if k not in timing} == {
        k: v for k, v in reference["test"].items() if k not in timing}
    for a, b in zip(runs.load_run(broken_dir).variables, runs.load_run(whole_dir).variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# A tiny run of a model with more state than weights: stride-2 convolutions of 8
# and 16 filters, each followed by batch normalisation, and a VampPrior of 3
# pseudo-inputs (a mixture prior's variables resume by the same mechanism: the
# prior layer's variables and their Adam moments in the checkpoint). 60
# examples in batches of 10, 6 steps per epoch, 2 epochs, a checkpoint every 3 steps.
STATEFUL = ["--preset", "mnist-conv-2d", "--prior", "vamp", "--prior-components", "3", "--dataset", "shapes",
            "--epochs", "2", "--max-train-examples", "60", "--batch-size", "10", "--checkpoint-every", "3",
            "--test-iwae-samples", "3", "--deterministic", "--seed", "8"]


def checkpoint_tensors(prefix):
    """Every tensor of a checkpoint but the host state (JSON with wall-clock times) and
    tf.train.Checkpoint's save_counter (made by its first save() in a process, so a
    best-<step> written before that in a resumed process lacks it; checkpoints are
    numbered by step, not by it)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.endswith("VARIABLE_VALUE") and not key.startswith(("host_state", "save_counter"))}


def kill_and_resume(args, whole_dir: str, broken_dir: str, timeout: int = 300) -> int:
    """Train `args` into whole_dir uninterrupted and into broken_dir killed with SIGKILL
    right after a mid-epoch checkpoint, then resumed there; both must end cleanly.
    Returns the step the run was killed at."""
    whole = fit(*args, "--run-dir", whole_dir)
    first = fit(*args, "--run-dir", broken_dir)
    killed_at = signal_after_checkpoint(first, broken_dir, signal.SIGKILL, after_step=-1)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL and 3 <= killed_at < 12
    resumed = fit("--resume", broken_dir)
    out, err = resumed.communicate(timeout=timeout)
    assert resumed.returncode == 0, err
    assert f"resuming from {broken_dir}/checkpoints/ckpt-" in out
    _, err = whole.communicate(timeout=timeout)
    assert whole.returncode == 0, err
    return killed_at


@pytest.mark.slow
def test_a_killed_run_of_a_learned_prior_and_batch_norm_resumes_to_the_uninterrupted_state(tmp_path):
    import tensorflow as tf

    args = STATEFUL
    whole_dir, broken_dir = str(tmp_path / "whole"), str(tmp_path / "broken")
    killed_at = kill_and_resume(args, whole_dir, broken_dir)

    mine, reference = metrics_of(broken_dir), metrics_of(whole_dir)
    assert [e["epoch"] for e in mine["epochs"]] == [1, 2] and len(mine["resumes"]) == 1
    assert killed_at <= mine["resumes"][0]["step"] <= killed_at + 3  # the newest checkpoint when killed
    for a, b in zip(mine["epochs"], reference["epochs"]):
        assert a["train"] == b["train"] and a["validation"] == b["validation"]
    assert {k: v for k, v in mine["test"].items() if k != "seconds"} == {
        k: v for k, v in reference["test"].items() if k != "seconds"}
    # Final and best checkpoints: every tensor (weights, prior variables, batch-norm
    # statistics, Adam's moments, step) bit for bit those of the run never interrupted.
    folder = os.path.join(broken_dir, runs.CHECKPOINT_DIR)
    for name in ("ckpt-12", mine["best"]["checkpoint"]):
        resumed_tensors = checkpoint_tensors(os.path.join(folder, name))
        reference_tensors = checkpoint_tensors(os.path.join(whole_dir, runs.CHECKPOINT_DIR, name))
        assert sorted(resumed_tensors) == sorted(reference_tensors)
        for key, value in reference_tensors.items():
            np.testing.assert_array_equal(resumed_tensors[key], value, err_msg=f"{name}: {key}")
    # The pseudo-inputs among them (their Adam moments are among the optimizer's variables).
    prior_keys = [key for key in resumed_tensors if key.startswith("model/prior_layer/")]
    assert len(prior_keys) == 1 and "pseudo_inputs" in prior_keys[0], prior_keys

    # load_run rebuilds the model with the checkpoint's values, batch-norm moving statistics included.
    model, _, checkpoint = runs.open_run(broken_dir)
    stored = checkpoint_tensors(checkpoint)
    written = checkpoint_tensors(tf.train.Checkpoint(model=model).write(str(tmp_path / "loaded" / "model")))
    model_keys = sorted(key for key in stored if key.startswith("model/"))
    assert sorted(written) == model_keys
    for key in model_keys:
        np.testing.assert_array_equal(written[key], stored[key], err_msg=key)
    moving = [key for key in model_keys if "moving_mean" in key or "moving_variance" in key]
    # Two batch normalisations in the encoder, two in the decoder, mean and variance each.
    assert len(moving) == 8
    layers = [layer for part in (model.encoder, model.decoder) for layer in part.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(layers) == 4
    # Trained away from their initial values (mean 0, variance 1).
    for layer in layers:
        assert np.abs(layer.moving_mean.numpy()).max() > 1e-3
        assert np.abs(layer.moving_variance.numpy() - 1).max() > 1e-3
