import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from probvae.training.checkpoints import RunState, StopSignals


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
    state, weights = _state(tmp_path, 1.0)
    state.step.assign(4)
    state.save({"epochs": []})

    def disk_full(checkpoint_number=None, **_):
        # What a save cut short leaves: a temporary folder and part of the files.
        os.makedirs(tmp_path / f"ckpt-{checkpoint_number}_temp")
        (tmp_path / f"ckpt-{checkpoint_number}.index").write_bytes(b"\0")
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(state.manager, "save", disk_full)
    state.step.assign(6)
    weights.assign([9.0, 9.0])
    with pytest.raises(ValueError) as raised:
        state.save({"epochs": []})
    message = str(raised.value)
    assert f"cannot write checkpoint {tmp_path}/ckpt-6 (No space left on device)" in message
    assert "free disk space" in message and f"last good checkpoint {tmp_path}/ckpt-4 is kept" in message
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    fresh, fresh_weights = _state(tmp_path)
    fresh.restore(log=lambda _: None)
    np.testing.assert_array_equal(fresh_weights.numpy(), [1.0, 2.0])


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
