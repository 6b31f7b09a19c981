import json
import os

import numpy as np
import pytest

from probvae import runs
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.training import fit


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=60),
        model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(9,)),
        train=TrainConfig(epochs=1, batch_size=20),
    )
    fit(config, run_dir, log=lambda _: None)
    return run_dir


def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "values.json"
    runs.write_json(str(path), {"a": 1.5})
    assert json.loads(path.read_text()) == {"a": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["values.json"]


def test_load_run_restores_the_trained_weights(tiny_run):
    model = runs.load_run(tiny_run)
    # Checkpoints are named after the global step: 60 examples in batches of 20.
    assert model.checkpoint_path.endswith("ckpt-3")
    again = runs.load_run(tiny_run, checkpoint="ckpt-3")
    for a, b in zip(model.trainable_variables, again.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(np.abs(v.numpy()).sum() > 0 for v in model.likelihood_head.trainable_variables + model.trainable_variables)


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
