"""`fit.py --deterministic` twice with the same flags: bit-identical runs.

tests/test_reference_runs.py compares deterministic runs with numbers
recorded earlier, to a relative 1e-5; here two processes started side by
side must agree bit for bit: every tensor of every checkpoint (weights,
Adam's moments, step, metric sums) and every number of metrics.json but
the wall-clock times. Without --deterministic runs may differ, and nothing
is asserted about them.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
# A conv model (its backward convolutions are where threads could reorder sums):
# 40 examples in batches of 10, 4 steps per epoch, 2 epochs, checkpoints at steps 3 and 6 too.
RUN = ["--dataset", "shapes", "--arch", "conv", "--latent-dim", "3", "--epochs", "2", "--max-train-examples", "40",
       "--batch-size", "10", "--seed", "5", "--test-iwae-samples", "3", "--checkpoint-every", "3", "--deterministic"]
# What depends on the clock or the folder, not on the computation.
UNTIMED = {"seconds", "train_seconds", "cpu_seconds", "train_cpu_seconds", "run_dir"}


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in UNTIMED}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _checkpoint_tensors(prefix):
    """Every tensor of a checkpoint but the host state (a JSON string that holds epoch times)."""
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.endswith("VARIABLE_VALUE") and not key.startswith("host_state")}


@pytest.mark.slow
def test_two_deterministic_runs_are_bit_identical(tmp_path):
    run_dirs = [str(tmp_path / name) for name in ("first", "second")]
    processes = [subprocess.Popen([sys.executable, FIT, *RUN, "--run-dir", run_dir], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for run_dir in run_dirs]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]

    metrics = []
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "metrics.json")) as stream:
            metrics.append(json.load(stream))
    assert [e["epoch"] for e in metrics[0]["epochs"]] == [1, 2] and metrics[0]["test"]["iwae_samples"] == 3
    assert _without_times(metrics[0]) == _without_times(metrics[1])

    names = [sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) for run_dir in run_dirs]
    assert names[0] == names[1]
    prefixes = sorted(name[: -len(".index")] for name in names[0] if name.endswith(".index"))
    assert prefixes == ["best-8", "ckpt-4", "ckpt-6", "ckpt-8"]  # 3 kept; best of the 2 epochs
    for prefix in prefixes:
        first, second = (_checkpoint_tensors(os.path.join(run_dir, "checkpoints", prefix)) for run_dir in run_dirs)
        assert sorted(first) == sorted(second)
        assert any(key.startswith("optimizer/") for key in first) and any(key.startswith("model/") for key in first)
        for key, value in first.items():
            np.testing.assert_array_equal(second[key], value, err_msg=f"{prefix}: {key}")
    # The runs did train: the last checkpoint's weights are not the first's.
    early, late = (_checkpoint_tensors(os.path.join(run_dirs[0], "checkpoints", p)) for p in ("ckpt-4", "ckpt-8"))
    assert any(not np.array_equal(early[k], late[k]) for k in early if k.startswith("model/"))
