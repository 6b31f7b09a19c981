"""A real fit.py process killed at the first checkpoint, resumed, stopped with
SIGTERM, resumed again: it ends with every epoch once in metrics.json and, with
--deterministic, the very weights and numbers of a run never interrupted."""

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
# 300 examples in batches of 10: 30 steps per epoch, 60 in all, a checkpoint every 5.
RUN = ["--dataset", "shapes", "--arch", "mlp", "--latent-dim", "2", "--epochs", "2", "--max-train-examples", "300",
       "--batch-size", "10", "--checkpoint-every", "5", "--seed", "3", "--deterministic"]


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

    third = fit("--resume", broken_dir)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert f"resuming from {broken_dir}/checkpoints/ckpt-{stopped_at}" in out
    assert whole.wait(timeout=300) == 0, whole.communicate()[1]

    resumed, reference = metrics_of(broken_dir), metrics_of(whole_dir)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    # It resumed from the newest checkpoint when it was killed (one more may have come in between).
    assert killed_at <= resumed["resumes"][0]["step"] <= killed_at + 5 and len(resumed["resumes"]) == 2
    for mine, theirs in zip(resumed["epochs"], reference["epochs"]):
        assert mine["train"] == theirs["train"] and mine["validation"] == theirs["validation"]
    timing = {"seconds"}  # wall time of the evaluation, the one field that may differ
    assert {k: v for k, v in resumed["test"].items() if k not in timing} == {
        k: v for k, v in reference["test"].items() if k not in timing}
    for a, b in zip(runs.load_run(broken_dir).variables, runs.load_run(whole_dir).variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
