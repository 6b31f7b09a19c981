"""One writer per run directory: the lock, its stale takeover, and fit.py's one-line refusal."""

import json
import os
import socket
import subprocess
import sys

import pytest

from probvae import runs
from probvae.config import DataConfig, RunConfig
from probvae.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
_HOLDER = ("import sys, time; from probvae import runs; lock = runs.RunLock(sys.argv[1]); lock.acquire(); "
           "print('held', flush=True); time.sleep(600)")


@pytest.fixture
def held(tmp_path):
    """A run directory whose lock another live process holds: (path, that process)."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield tmp_path, holder
    holder.kill()
    holder.wait()


def test_a_second_writer_is_refused_with_the_holder_named(held):
    path, holder = held
    with pytest.raises(UserError) as error:
        runs.RunLock(str(path)).acquire()
    message = str(error.value)
    assert message.startswith(f"run directory {path} is being written by PID {holder.pid} on host "
                              f"{socket.gethostname()}, since 20")
    assert message.endswith(f"then pass --resume {path}")
    written = json.loads((path / runs.LOCK_FILE).read_text())
    assert written["pid"] == holder.pid and "time.sleep" not in written["command"]


def test_check_refuses_a_held_lock_and_takes_nothing(held, tmp_path_factory):
    path, holder = held
    with pytest.raises(UserError, match=f"is being written by PID {holder.pid} on host"):
        runs.RunLock(str(path)).check()
    free = tmp_path_factory.mktemp("free")
    runs.RunLock(str(free)).check()  # no lock file: nothing to refuse, nothing written
    runs.RunLock(str(free / "new")).check()
    assert os.listdir(free) == []
    with runs.RunLock(str(free)) as lock:  # held by this very object: fine
        lock.check()
    holder.kill()
    holder.wait()
    runs.RunLock(str(path)).check()  # its holder is gone: free, and the file is left for acquire
    assert json.loads((path / runs.LOCK_FILE).read_text())["pid"] == holder.pid


def test_the_lock_is_free_again_when_its_holder_dies(held):
    path, holder = held
    holder.kill()
    holder.wait()  # SIGKILL: no clean-up ran, the file still names the dead process
    lines = []
    with runs.RunLock(str(path), log=lines.append) as lock:
        assert lock.held
        assert json.loads((path / runs.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(lines) == 1 and lines[0].endswith(", which is no longer running")
    assert lines[0].startswith(f"taking over the lock of PID {holder.pid} on host {socket.gethostname()}, since 20")
    assert not (path / runs.LOCK_FILE).exists()  # released and removed


def test_acquire_is_idempotent_and_a_missing_directory_is_locked_when_created(tmp_path):
    lock = runs.RunLock(str(tmp_path / "new"))
    with lock:
        assert not lock.held  # nothing to lock yet, nothing created
        assert not (tmp_path / "new").exists()
        runs.prepare_run_dir(str(tmp_path / "new"), lock=lock)
        assert lock.held and (tmp_path / "new" / runs.LOCK_FILE).exists()
        lock.acquire()
        assert lock.held
    assert os.listdir(tmp_path / "new") == []


def test_fit_refuses_a_locked_run_in_one_line_and_writes_nothing(held):
    path, holder = held
    runs.save_config(str(path), RunConfig(data=DataConfig(dataset="shapes")))  # a run being written
    before = sorted(os.listdir(path))
    for args in (["--resume", str(path)], ["--dataset", "shapes", "--run-dir", str(path), "--overwrite"]):
        result = subprocess.run([sys.executable, FIT, *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines  # TensorFlow's start-up messages are silenced
        assert lines[0].startswith(f"error: run directory {path} is being written by PID {holder.pid} on host ")
    assert sorted(os.listdir(path)) == before
