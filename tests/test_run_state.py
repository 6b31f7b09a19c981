import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from probvae.training.checkpoints import RunState, StopSignals

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(directory, value=0.0, max_to_keep=3):
    weights = tf.Variable([value, 2.0 * value], name="w")
    return RunState(str(directory), max_to_keep=max_to_keep, weights=weights), weights


def _indexes(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".index"))


def test_checkpoints_are_named_by_step_and_restore_every_part(tmp_path):
    state, weights = _state(tmp_path, 1.0, max_to_keep=2)
    for step in (3, 5, 8):
        state.step.assign(step)
        state.epoch.assign(step // 4)
        weights.assign([step, -step])
        state.save({"epochs": [{"epoch": 1}], "epoch_seconds": 0.5 * step})
    assert _indexes(tmp_path) == ["ckpt-5.index", "ckpt-8.index"]  # two kept
    fresh, fresh_weights = _state(tmp_path)
    host = fresh.restore(log=lambda _: None)
    assert host == {"epochs": [{"epoch": 1}], "epoch_seconds": 4.0}
    assert int(fresh.step.numpy()) == 8 and int(fresh.epoch.numpy()) == 2
    np.testing.assert_array_equal(fresh_weights.numpy(), [8.0, -8.0])


def test_a_run_without_checkpoints_restores_nothing(tmp_path):
    state, _ = _state(tmp_path / "checkpoints")
    assert state.restore(log=lambda _: None) is None and state.latest is None


def test_a_failed_save_names_the_path_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from tensorflow.python.checkpoint import functional_saver

    state, weights = _state(tmp_path, 1.0)
    state.step.assign(4)
    state.save({"epochs": []})
    written = []

    def disk_full_when_merging(checkpoint_prefixes, destination_prefix, **_):
        # TensorFlow has written the shard (data and index) to <prefix>_temp/;
        # the disk fills up as it is merged into <prefix>.index and .data-*.
        for prefix in np.ravel(tf.convert_to_tensor(checkpoint_prefixes).numpy()):
            written.extend(sorted(os.listdir(os.path.dirname(prefix.decode()))))
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(functional_saver.gen_io_ops, "merge_v2_checkpoints", disk_full_when_merging)
    state.step.assign(6)
    weights.assign([9.0, 9.0])
    with pytest.raises(ValueError) as raised:
        state.save({"epochs": []})
    assert written == ["part-00000-of-00001.data-00000-of-00001", "part-00000-of-00001.index"]
    message = str(raised.value)
    assert f"cannot write checkpoint {tmp_path}/ckpt-6 (No space left on device)" in message
    assert "free disk space" in message and f"last good checkpoint {tmp_path}/ckpt-4 is kept" in message
    # The partial files are gone; the state file still names ckpt-4.
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    monkeypatch.undo()
    fresh, fresh_weights = _state(tmp_path)
    fresh.restore(log=lambda _: None)
    np.testing.assert_array_equal(fresh_weights.numpy(), [1.0, 2.0])
    assert int(fresh.step.numpy()) == 4


# Saves a checkpoint with weights 1 at step 1, then starts saving weights 2 at step 2.
SAVER = """
import sys
import tensorflow as tf
from probvae.training.checkpoints import RunState
directory, size = sys.argv[1], int(sys.argv[2])
weights = {f"w{i}": tf.Variable(tf.zeros([size]), name=f"w{i}") for i in range(4)}
state = RunState(directory, **weights)
for step in (1, 2):
    state.step.assign(step)
    for variable in weights.values():
        variable.assign(tf.fill([size], float(step)))
    print(f"saving {step}", flush=True)
    state.save({"epochs": [], "step": step})
    print(f"saved {step}", flush=True)
"""


def test_a_save_killed_mid_write_leaves_the_last_good_checkpoint(tmp_path):
    """A real TensorFlow save of 4 x 32 MiB is SIGKILLed while it writes its
    data file; the next RunState restores the checkpoint before it."""
    size = 8 * 2**20  # float32 values per variable
    directory = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    saver = subprocess.Popen([sys.executable, "-c", SAVER, str(directory), str(size)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert [saver.stdout.readline().strip() for _ in range(3)] == ["saving 1", "saved 1", "saving 2"]
        deadline = time.time() + 60
        # The shard being written: <prefix>_temp/part-00000-of-00001.data-00000-of-00001[.tempstate...].
        pattern = str(directory / "ckpt-2_temp" / "*.data-*")
        while not any(os.path.getsize(path) > 0 for path in glob.glob(pattern)):
            assert saver.poll() is None and time.time() < deadline, "the second save finished or never began"
            time.sleep(0.001)
        saver.kill()
    finally:
        saver.kill()
        saver.wait()
    assert saver.returncode == -signal.SIGKILL
    # Cut short: part of the data on disk, nothing merged, the state file names ckpt-1.
    partial = glob.glob(pattern)
    assert partial and 0 < sum(os.path.getsize(p) for p in partial) < 4 * 4 * size
    assert not glob.glob(str(directory / "ckpt-2.*"))
    assert 'model_checkpoint_path: "ckpt-1"' in (directory / "checkpoint").read_text()

    weights = {f"w{i}": tf.Variable(tf.zeros([size]), name=f"w{i}") for i in range(4)}
    state = RunState(str(directory), **weights)
    assert state.restore(log=lambda _: None) == {"epochs": [], "step": 1}
    assert int(state.step.numpy()) == 1
    assert all(np.all(variable.numpy() == 1.0) for variable in weights.values())
    assert sorted(os.listdir(directory)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    # The run goes on: step 2 saved again, now whole.
    state.step.assign(2)
    for variable in weights.values():
        variable.assign(tf.fill([size], 2.0))
    assert state.save({"epochs": [], "step": 2}).endswith("ckpt-2")
    again = {f"w{i}": tf.Variable(tf.zeros([size]), name=f"w{i}") for i in range(4)}
    assert RunState(str(directory), **again).restore(log=lambda _: None) == {"epochs": [], "step": 2}
    assert all(np.all(variable.numpy() == 2.0) for variable in again.values())


def _saved(directory, steps):
    state, weights = _state(directory, 1.0)
    for step in steps:
        state.step.assign(step)
        weights.assign([step, step])
        state.save({"epochs": []})
    return state


def test_a_missing_checkpoint_is_named_with_the_fix(tmp_path):
    _saved(tmp_path, (2, 4))
    for name in os.listdir(tmp_path):
        if name.startswith("ckpt-4"):
            os.remove(tmp_path / name)
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path}/ckpt-4 named in .*checkpoint is missing; "
                                         rf"restore its files or delete .* to resume from {tmp_path}/ckpt-2"):
        _state(tmp_path)[0].restore(log=lambda _: None)


def test_an_unreadable_state_file_falls_back_to_the_newest_checkpoint_file(tmp_path):
    _saved(tmp_path, (2, 10, 4))
    (tmp_path / "checkpoint").write_text("this is { not a checkpoint state")
    warnings = []
    state, weights = _state(tmp_path)
    state.restore(log=warnings.append)
    assert int(state.step.numpy()) == 10 and weights.numpy().tolist() == [10.0, 10.0]
    assert "unreadable" in warnings[0] and "ckpt-10" in warnings[0]


def test_a_corrupt_checkpoint_is_refused_with_the_fix(tmp_path):
    _saved(tmp_path, (2, 4))
    data_file = tmp_path / "ckpt-4.data-00000-of-00001"
    data_file.write_bytes(b"garbage" * 3)
    with pytest.raises(ValueError, match=r"cannot restore checkpoint .*ckpt-4 .*corrupt.* --overwrite"):
        _state(tmp_path)[0].restore(log=lambda _: None)
    assert data_file.read_bytes() == b"garbage" * 3  # left for the user to inspect


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    _saved(tmp_path, (2,))
    other = RunState(str(tmp_path), weights=tf.Variable([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="cannot restore checkpoint"):
        other.restore(log=lambda _: None)


def test_stop_signals_turn_the_first_signal_into_a_flag():
    previous = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # the handler runs between bytecodes
            if stop.received:
                break
        assert stop.received == signal.SIGINT and stop.name == "SIGINT"
        # A second signal gets the previous handler: Ctrl-C twice stops at once.
        assert signal.getsignal(signal.SIGINT) is previous
    assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is not None


def test_checkpoints_a_killed_run_left_unlisted_are_removed_at_the_next_save(tmp_path):
    state, _ = _state(tmp_path, 1.0, max_to_keep=2)
    for step in (2, 4):
        state.step.assign(step)
        state.save({"epochs": []})
    # A run killed after writing ckpt-6 but before the state file named it, and
    # one killed before pruning ckpt-1: both on disk, neither listed.
    for name in ("ckpt-6", "ckpt-1"):
        for suffix in (".index", ".data-00000-of-00001"):
            (tmp_path / (name + suffix)).write_bytes(b"left behind")
    resumed, _ = _state(tmp_path, max_to_keep=2)
    resumed.restore(log=lambda _: None)
    assert int(resumed.step.numpy()) == 4
    resumed.step.assign(5)
    resumed.save({"epochs": []})
    assert _indexes(tmp_path) == ["ckpt-4.index", "ckpt-5.index"]
    assert not glob.glob(str(tmp_path / "ckpt-6*")) and not glob.glob(str(tmp_path / "ckpt-1*"))


def test_a_state_file_that_is_not_utf8_falls_back_to_the_newest_checkpoint_file(tmp_path):
    _saved(tmp_path, (2, 10, 4))
    (tmp_path / "checkpoint").write_bytes(b"model_checkpoint_path: \"\xff\xfe\"\n")
    warnings = []
    state, weights = _state(tmp_path)
    state.restore(log=warnings.append)
    assert int(state.step.numpy()) == 10 and weights.numpy().tolist() == [10.0, 10.0]
    assert "unreadable" in warnings[0] and "ckpt-10" in warnings[0]
    # The damaged file is kept for the user, beside the state file the next save writes.
    assert (tmp_path / "checkpoint.damaged").read_bytes().startswith(b"model_checkpoint_path")
