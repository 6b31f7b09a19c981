import errno
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from probvae import runs
from probvae._keras import keras
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.model import VAE
from probvae.training import fit


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=60),
        model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(9,), posterior="full"),
        train=TrainConfig(epochs=1, batch_size=20, kl_warmup_epochs=0, jit_compile=False),  # 2 steps: no XLA
    )
    fit(config, run_dir, log=lambda _: None)
    return run_dir


def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "values.json"
    runs.write_json(str(path), {"a": 1.5})
    assert json.loads(path.read_text()) == {"a": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["values.json"]


def test_write_json_reports_a_full_disk_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    runs.write_json(str(path), {"epochs": [1]})

    def no_space(_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ValueError, match=f"cannot write {path}: No space left on device; free disk space"):
        runs.write_json(str(path), {"epochs": [1, 2]})
    assert json.loads(path.read_text()) == {"epochs": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_resume_config_keeps_the_saved_config_and_names_contradictions(tmp_path):
    saved = RunConfig().replace(data={"dataset": "shapes"}, model={"image_shape": (28, 28, 1)}, train={"epochs": 3})
    runs.save_config(str(tmp_path), saved)
    assert runs.resume_config(str(tmp_path)) == saved
    # The image shape comes from the data; None asks for nothing.
    asked = saved.replace(model={"image_shape": None})
    assert runs.resume_config(str(tmp_path), asked) == saved
    # How the run is carried out may change ...
    lenient = asked.replace(train={"skip_nonfinite": True, "eager": True, "checkpoint_every_steps": 7})
    assert runs.resume_config(str(tmp_path), lenient) == saved.replace(
        train={"skip_nonfinite": True, "eager": True, "checkpoint_every_steps": 7})
    # ... what it computes may not.
    contradicting = asked.replace(train={"epochs": 5, "learning_rate": 0.01})
    with pytest.raises(ValueError, match=r"train.epochs 3 \(asked 5\), train.learning_rate 0.001 \(asked 0.01\)"):
        runs.resume_config(str(tmp_path), contradicting)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no config.json"):
        runs.resume_config(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="does not exist"):
        runs.resume_config(str(tmp_path / "nowhere"))


def _model_tensors(prefix):
    """{key: value} of the model's variables in a checkpoint, read by TensorFlow's checkpoint reader."""
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith("model/") and key.endswith("/.ATTRIBUTES/VARIABLE_VALUE")}


def test_load_run_restores_the_trained_weights(tiny_run, tmp_path):
    model, config, checkpoint = runs.open_run(tiny_run)
    # Checkpoints are named after the global step: 60 examples in batches of 20.
    # The run's model is its best epoch's, here the only one, also saved as ckpt-3.
    assert checkpoint.endswith("best-3") and config == runs.load_config(tiny_run)
    # load_run gives the same model and hangs nothing on it.
    assert not {"checkpoint_path", "run_config"} & set(vars(runs.load_run(tiny_run)))
    stored = _model_tensors(checkpoint)
    # Weights 784x9 + 9, 9x5 + 5 (posterior: 2 + 3), 2x9 + 9, 9x784 + 784, and the KL weight.
    assert len(stored) == 9 == len(model.variables)
    # Every variable of the loaded model holds the tensor stored under its key: written
    # out again, the loaded model's checkpoint has the run's keys and values.
    restored = _model_tensors(tf.train.Checkpoint(model=model).write(str(tmp_path / "restored")))
    assert sorted(restored) == sorted(stored)
    for key, value in stored.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)
    again = _model_tensors(tf.train.Checkpoint(model=runs.load_run(tiny_run, checkpoint="ckpt-3")).write(
        str(tmp_path / "latest")))
    for key, value in stored.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    # They are the trained weights: a model initialised as the run's was (seed 0) holds
    # other values in every trainable variable; only the KL weight (1) is the same.
    keras.utils.set_random_seed(0)
    fresh = _model_tensors(tf.train.Checkpoint(model=VAE(model.config)).write(str(tmp_path / "fresh")))
    same = sorted(key for key, value in stored.items() if np.array_equal(fresh[key], value))
    assert same == ["model/kl_weight/.ATTRIBUTES/VARIABLE_VALUE"]
    assert float(stored[same[0]]) == 1.0


def test_load_run_errors_name_the_file(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        runs.load_run(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="ckpt-9 not found"):
        runs.load_run(tiny_run, checkpoint="ckpt-9")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not readable JSON"):
        runs.load_run(str(broken))
    (broken / "config.json").write_text(RunConfig().replace(model={"image_shape": (28, 28, 1)}).to_json())
    with pytest.raises(ValueError, match="no checkpoint"):
        runs.load_run(str(broken))
    (tmp_path / "bad.index").write_text("garbage")
    with pytest.raises(ValueError, match="cannot restore checkpoint"):
        runs.load_run(tiny_run, checkpoint=str(tmp_path / "bad"))
    os.remove(tmp_path / "bad.index")


def test_json_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "m.json"
    runs.write_json(str(path), [1])
    # mkstemp creates 0600 files; a run's JSON is readable like any other file.
    assert (os.stat(path).st_mode & 0o777) == 0o666 & ~umask


def test_a_checkpoint_of_another_model_gives_one_line(tmp_path):
    # A training checkpoint (model, optimizer, step) of a 2-latent model, evaluated as a 3-latent run's:
    # the command prints the error alone, without TensorFlow's warnings about the values left unrestored.
    import subprocess
    import sys

    shape = (28, 28, 1)
    other = VAE(ModelConfig(latent_dim=2, image_shape=shape, hidden_units=(5,)))
    optimizer = keras.optimizers.Adam()
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in other.trainable_variables])
    checkpoint = tf.train.Checkpoint(model=other, optimizer=optimizer, step=tf.Variable(3)).write(
        str(tmp_path / "other" / "ckpt-3"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs.save_config(str(run_dir), RunConfig(data=DataConfig(dataset="shapes"),
                                             model=ModelConfig(latent_dim=3, image_shape=shape, hidden_units=(6,))))
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "evaluate.py")
    result = subprocess.run([sys.executable, script, str(run_dir), "--checkpoint", checkpoint],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot restore checkpoint"), result.stderr[-2000:]
    assert sorted(os.listdir(run_dir)) == ["config.json"]
