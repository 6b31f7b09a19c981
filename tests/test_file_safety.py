"""Files a command must never touch: the lock through a symbolic link, a full
disk under the lock, --overwrite of a folder that is not (only) a run, export
into an existing or impossible folder, bench --json to a bad path, and files
that are not UTF-8."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from probvae import runs
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
OUTSIDE = "a file of the user's, outside the run\n"


def script(name, *args, cwd=None):
    """Run scripts/<name>.py; (exit code, stdout, stderr lines)."""
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, f"{name}.py"), *map(str, args)],
                            capture_output=True, text=True, timeout=300, cwd=cwd)
    return result.returncode, result.stdout, result.stderr.strip().splitlines()


def files_under(path):
    """Every file and symbolic link under `path`, relative to it, with its bytes."""
    found = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            found[os.path.relpath(full, path)] = os.readlink(full) if os.path.islink(full) else open(full, "rb").read()
    return found


def saved_config(path):
    """A folder holding only a probvae config.json (shapes, a tiny MLP)."""
    os.makedirs(path, exist_ok=True)
    config = RunConfig(data=DataConfig(dataset="shapes", max_train_examples=12),
                       model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(5,), image_shape=(28, 28, 1)),
                       train=TrainConfig(epochs=1, batch_size=4))
    runs.save_config(str(path), config)
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny run as fit writes it: one epoch, so checkpoints, best, logs and metrics."""
    from probvae.training import fit

    run_dir = str(tmp_path_factory.mktemp("trained") / "run")
    config = RunConfig(data=DataConfig(dataset="shapes", max_train_examples=40),
                       model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(6,), posterior="diag"),
                       train=TrainConfig(epochs=1, batch_size=10, kl_warmup_epochs=0, test_iwae_samples=2,
                                         jit_compile=False))  # compiling would take longer than the 3 steps
    fit(config, run_dir, log=lambda _: None)
    return run_dir


# --- writer.lock ---------------------------------------------------------------------------------


@pytest.fixture
def linked_lock(tmp_path):
    """A run folder whose writer.lock is a symbolic link to a user's file outside it: (run, that file)."""
    outside = tmp_path / "precious.txt"
    outside.write_text(OUTSIDE)
    run = saved_config(tmp_path / "run")
    os.symlink(outside, run / runs.LOCK_FILE)
    return run, outside


def test_the_lock_never_follows_a_symbolic_link(linked_lock, tmp_path):
    run, outside = linked_lock
    for take in (runs.RunLock(str(run)).acquire, runs.RunLock(str(run)).check):
        with pytest.raises(UserError, match=rf"cannot lock run directory {run}: {run}/writer.lock is a symbolic "
                                            r"link, which probvae does not follow; remove the link"):
            take()
    with pytest.raises(UserError, match="is a symbolic link"):
        runs.prepare_run_dir(str(run), overwrite=True, lock=runs.RunLock(str(run)))
    assert outside.read_text() == OUTSIDE and os.path.islink(run / runs.LOCK_FILE)
    dangling = saved_config(tmp_path / "dangling")
    os.symlink(tmp_path / "made-through-the-link", dangling / runs.LOCK_FILE)
    with pytest.raises(UserError, match="is a symbolic link"):
        runs.RunLock(str(dangling)).acquire()
    assert not (tmp_path / "made-through-the-link").exists()


def test_the_lock_never_writes_a_hard_link(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text(OUTSIDE)
    run = saved_config(tmp_path / "run")
    os.link(outside, run / runs.LOCK_FILE)
    with pytest.raises(UserError, match=rf"{run}/writer.lock has other names \(a hard link\); remove it"):
        runs.RunLock(str(run)).acquire()
    assert outside.read_text() == OUTSIDE and (run / runs.LOCK_FILE).read_text() == OUTSIDE


def test_fit_refuses_a_linked_lock_in_one_line_and_leaves_its_target(linked_lock):
    run, outside = linked_lock
    before = files_under(run)
    for args in (["--resume", run], ["--dataset", "shapes", "--run-dir", run, "--overwrite"]):
        code, _, lines = script("fit", *args)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"error: cannot lock run directory {run}: {run}/writer.lock is a symbolic link")
    assert outside.read_text() == OUTSIDE and files_under(run) == before


def test_a_full_disk_when_locking_is_one_error_and_leaves_no_lock(tmp_path, monkeypatch):
    run = saved_config(tmp_path / "run")
    written = os.write

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", no_space)
    lock = runs.RunLock(str(run))
    with pytest.raises(UserError) as error:
        lock.acquire()
    assert str(error.value) == (f"cannot lock run directory {run}: cannot write {run}/writer.lock (No space left on "
                                "device); free disk space or fix permissions")
    assert not lock.held and sorted(os.listdir(run)) == ["config.json"]
    new = tmp_path / "new"  # a folder prepare_run_dir makes for the run is removed again
    with pytest.raises(UserError, match="No space left on device"):
        runs.prepare_run_dir(str(new), lock=runs.RunLock(str(new)))
    assert not new.exists()
    monkeypatch.setattr(os, "write", written)
    with lock:  # nothing was left locked
        assert lock.held and json.loads((run / runs.LOCK_FILE).read_text())["pid"] == os.getpid()


# --- --overwrite ---------------------------------------------------------------------------------

USERS = {"logs/app.log": b"another program's log\n", "logs/mine/notes.txt": b"notes\n", "notes.md": b"# mine\n",
         "checkpoints/model.pt": b"not probvae's", "eval_notes.txt": b"x", "eval_by_hand.json": b"[1, 2]",
         "latent_evolution/sketch.png": b"png"}


def write_files(root, files):
    for name, data in files.items():
        os.makedirs(os.path.dirname(root / name), exist_ok=True)
        (root / name).write_bytes(data)


def test_overwrite_of_a_folder_without_a_run_deletes_nothing(tmp_path):
    folder = tmp_path / "work"
    write_files(folder, {"logs/app.log": b"another program's log\n", "logs/train/events.out.tfevents.1.h": b"e",
                         "eval_x.json": b"{}"})
    before = files_under(folder)
    assert not runs.holds_run(str(folder))
    runs.check_run_dir(str(folder))  # not a run: nothing to refuse
    with runs.RunLock(str(folder)) as lock:
        runs.prepare_run_dir(str(folder), overwrite=True, lock=lock)
    assert files_under(folder) == before


def test_overwrite_deletes_what_a_run_wrote_and_only_that(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    write_files(run, {"eval_test_iwae5.json": json.dumps({"split": "test", "iwae_samples": 5}).encode(),
                      "latent_evolution/epoch_0001.png": b"png", "latent_evolution/latent_evolution.gif": b"gif",
                      "checkpoints/ckpt-4_temp/part-00000-of-00001.index": b"half a checkpoint"})
    ours = set(files_under(run))
    assert {"config.json", "metrics.json", "checkpoints/checkpoint", "logs/hparams", "logs/train",
            "logs/validation"} <= ours | {os.path.dirname(name) for name in ours}
    write_files(run, USERS)
    assert runs.holds_run(str(run))
    with pytest.raises(UserError, match="already holds a run"):
        runs.check_run_dir(str(run))
    with runs.RunLock(str(run)) as lock:
        runs.prepare_run_dir(str(run), overwrite=True, lock=lock)
    assert files_under(run) == USERS  # every file of the old run gone, the eval_*.json too; the user's kept
    assert not (run / "logs" / "train").exists() and not (run / "checkpoints" / "ckpt-4_temp").exists()


def test_a_config_or_metrics_file_probvae_did_not_write_is_never_replaced(tmp_path):
    for name, text in (("config.json", '{"learning_rate": 0.1}'), ("config.json", "\xff not json"),
                       ("metrics.json", '[{"loss": 1}]')):
        folder = tmp_path / f"other-{len(os.listdir(tmp_path))}"
        write_files(folder, {name: text.encode("latin-1"), "checkpoints/ckpt-1.index": b"i"})
        before = files_under(folder)
        for overwrite in (False, True):
            with pytest.raises(UserError, match=rf"{folder}/{name} is not a {name} probvae wrote \(or it is "
                                                rf"damaged\), and a run in {folder} would replace it; move it away"):
                runs.prepare_run_dir(str(folder), overwrite=overwrite)
        assert files_under(folder) == before


def test_the_snapshot_folder_is_the_one_the_report_writes():
    from probvae import run_dir
    from probvae.analysis import report

    assert run_dir._SNAPSHOT_DIR == report.SNAPSHOT_DIR
    assert run_dir._SNAPSHOT_NAME.fullmatch(report.GIF_NAME) and run_dir._SNAPSHOT_NAME.fullmatch("epoch_0012.png")


# --- export --------------------------------------------------------------------------------------


def test_export_refuses_paths_it_could_not_or_should_not_write(trained_run, tmp_path):
    run = trained_run
    (tmp_path / "afile").write_text("x")
    earlier = tmp_path / "earlier"  # another export's folder, and the current directory of the command
    write_files(earlier, {"saved_model.pb": b"the earlier model", "variables/variables.index": b"v"})
    before = files_under(tmp_path)
    cases = {"": "error: argument OUT: an empty value; give one",
             str(earlier): f"error: {earlier} exists; give a new folder for the exported model",
             str(tmp_path / "missing" / "out"): f"error: cannot create {tmp_path}/missing/out: {tmp_path}/missing "
                                                "does not exist; give a new folder for the exported model in an "
                                                "existing folder",
             str(tmp_path / "afile" / "out"): f"error: cannot create {tmp_path}/afile/out: {tmp_path}/afile is a "
                                              "file, not a folder; give a new folder",
             str(tmp_path / "afile" / "a" / "b"): f"error: cannot create {tmp_path}/afile/a/b: {tmp_path}/afile/a "
                                                  f"cannot exist: {tmp_path}/afile is a file"}
    for out, message in cases.items():
        code, _, lines = script("export", run, out, cwd=earlier)
        assert code == 2 and len(lines) == 1 and lines[0].startswith(message), (out, lines)
    assert files_under(tmp_path) == before


def test_export_model_never_writes_into_a_folder_that_exists(tmp_path, monkeypatch):
    import tensorflow as tf

    from probvae import export
    from probvae.model import VAE

    vae = VAE(ModelConfig(arch="mlp", latent_dim=2, hidden_units=(3,), image_shape=(4, 4, 1)))
    appeared = tmp_path / "appeared"
    appeared.mkdir()
    monkeypatch.setattr(runs, "check_new_folder", lambda path, what: None)  # it appears after the check
    with pytest.raises(UserError, match=f"{appeared} exists; give a new folder"):
        export.export_model(vae, str(appeared))
    assert os.listdir(appeared) == []

    def disk_full(*args, **kwargs):
        os.makedirs(os.path.join(args[1], "variables"))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tf.saved_model, "save", disk_full)
    with pytest.raises(UserError, match=f"cannot write {tmp_path}/half: No space left on device"):
        export.export_model(vae, str(tmp_path / "half"))
    assert sorted(os.listdir(tmp_path)) == ["appeared"]  # the half-written folder is removed


# --- bench --json --------------------------------------------------------------------------------


def test_bench_checks_its_json_path_before_measuring(tmp_path, monkeypatch):
    from probvae.benchmarks import bench, quality
    from probvae.cli import bench as bench_cli

    def measured(*args, **kwargs):
        raise AssertionError("measured before the output path was checked")

    monkeypatch.setattr(bench, "run", measured)
    monkeypatch.setattr(quality, "time_to_quality", measured)
    (tmp_path / "afile").write_text("x")
    cases = {"": "argument --json: an empty value; give one",
             str(tmp_path / "missing" / "b.json"): f"cannot write {tmp_path}/missing/b.json: No such file or directory",
             str(tmp_path / "afile" / "b.json"): f"cannot write {tmp_path}/afile/b.json: Not a directory",
             str(tmp_path): f"cannot write {tmp_path}: a folder of that name is in the way"}
    for out, message in cases.items():
        for extra in ([], ["--time-to-quality"]):
            with pytest.raises(UserError) as error:
                bench_cli.main(["--quick", "--json", out, *extra])
            assert str(error.value).startswith(message)
    assert sorted(os.listdir(tmp_path)) == ["afile"]
    runs.check_writable(str(tmp_path / "fine.json"))  # a good path passes and is not created
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_bench_with_a_bad_json_path_is_one_line_before_any_output(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, stdout, lines = script("bench", "--quick", "--json", tmp_path / "afile" / "b.json")
    assert code == 2 and stdout == "" and lines == [
        f"error: cannot write {tmp_path}/afile/b.json: Not a directory ({tmp_path}/afile); choose another path, or "
        "create the folder, make it writable or free disk space"]


# --- files that are not UTF-8 --------------------------------------------------------------------


def test_a_config_that_is_not_utf8_is_one_error_naming_it(tmp_path):
    run = saved_config(tmp_path / "run")
    (run / "config.json").write_bytes(b'{"data": "\xff\xfe"}')
    with pytest.raises(UserError, match=rf"{run}/config.json is not readable JSON \(not UTF-8 text: byte 0xff at "
                                        r"position 10\); restore it or retrain"):
        runs.load_config(str(run))
    for command, args in (("evaluate", [run]), ("inspect_run", [run]), ("export", [run, tmp_path / "out"]),
                          ("fit", ["--resume", run])):
        code, _, lines = script(command, *args)
        assert code == 2 and lines == [f"error: {run}/config.json is not readable JSON (not UTF-8 text: byte 0xff "
                                       "at position 10); restore it or retrain"], (command, lines)
    assert sorted(os.listdir(tmp_path)) == ["run"] and sorted(os.listdir(run)) == ["config.json"]


def test_a_state_file_that_is_not_utf8_warns_and_uses_the_newest_checkpoint(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    newest = runs.latest_checkpoint(str(run))
    assert newest == runs.complete_checkpoints(str(run / "checkpoints"), "ckpt")[-1]
    (run / "checkpoints" / "checkpoint").write_bytes(b'model_checkpoint_path: "\xff\xfe"\n')
    lines = []
    assert runs.latest_checkpoint(str(run), log=lines.append) == newest
    assert lines == [f"warning: {run}/checkpoints/checkpoint is unreadable; using the newest checkpoint file {newest}"]
    assert runs.open_run(str(run), "latest").checkpoint == newest
