"""A run that starts from another run's weights (`train.init_from`, fit.py
--init-from): it starts from exactly the weights `load_run` gives for that
run, trains from there with its own objective and schedule, records where
it came from, and resumes from its own checkpoints, not from those weights."""

import dataclasses
import os
import shutil

import numpy as np
import pytest

from probvae import data, runs
from probvae.config import RunConfig, TrainConfig
from probvae.training import Trainer, fit, seed_process


@pytest.fixture(scope="module")
def source(family_run):
    """A trained run (shapes, an MLP with a learned Gaussian prior), shared with other tests."""
    return family_run("diag_gaussian")


@pytest.fixture(scope="module")
def splits(source):
    loaded = data.load_config_dataset(runs.load_config(source))
    return dataclasses.replace(loaded, x_validation=loaded.x_validation[:26], x_test=loaded.x_test[:13])


def _config(source, **train):
    """The source's model and data, trained for 2 epochs of 6 steps on the importance-weighted bound."""
    values = dict(init_from=source, epochs=2, batch_size=10, objective="iwae", train_samples=3, learning_rate=3e-3,
                  kl_warmup_epochs=0, eval_batch_size=13, test_iwae_samples=4, seed=2, jit_compile=False)
    values.update(train)
    trained = runs.load_config(source)
    return RunConfig(data=trained.data, model=trained.model, train=TrainConfig(**values))


def _weights(model):
    return [v.numpy() for v in model.weights]


def test_the_run_starts_from_the_weights_load_run_gives(source, splits, tmp_path):
    config = _config(source, seed=9)
    seed_process(config.train)
    trainer = Trainer(config, splits, str(tmp_path / "tuned"), log=lambda _: None)
    fresh = _weights(trainer.model)
    path = trainer.initialize_from_run()
    expected = runs.open_run(source)
    assert path == expected.checkpoint and os.path.basename(path).startswith(runs.BEST_PREFIX)
    loaded = _weights(trainer.model)
    assert len(loaded) == len(expected.model.weights)
    for mine, theirs in zip(loaded, _weights(expected.model)):
        np.testing.assert_array_equal(mine, theirs)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(fresh, loaded)) > 0.01  # not the seed's weights
    assert trainer.metrics["initialized_from"] == {"run_dir": source, "checkpoint": os.path.basename(path)}
    # The optimizer and the step start afresh.
    assert int(trainer.state.step.numpy()) == 0 and int(trainer.optimizer.iterations.numpy()) == 0


@pytest.fixture(scope="module")
def tuned(source, splits, tmp_path_factory):
    """Two epochs of the importance-weighted bound at a constant step size
    (the source had the plateau schedule, and its fields) from the source's
    weights, checkpointing every 4 steps; and a copy of it cut back to step 8, as if
    killed there, then resumed."""
    config = _config(source, lr_schedule="constant", checkpoint_every_steps=4)
    root = tmp_path_factory.mktemp("tuned")
    whole = fit(config, str(root / "whole"), splits=splits, log=lambda _: None)
    killed_dir = str(root / "killed")
    shutil.copytree(str(root / "whole"), killed_dir)
    checkpoints = os.path.join(killed_dir, runs.CHECKPOINT_DIR)
    for name in os.listdir(checkpoints):  # keep ckpt-8 (and the best) only, as a run killed after step 8 would
        if not name.startswith(("ckpt-8.", runs.BEST_PREFIX)):
            os.remove(os.path.join(checkpoints, name))
    with open(os.path.join(checkpoints, "checkpoint"), "w") as stream:
        stream.write('model_checkpoint_path: "ckpt-8"\nall_model_checkpoint_paths: "ckpt-8"\n')
    os.remove(os.path.join(killed_dir, runs.METRICS_FILE))
    logged = []
    resumed = fit(config, killed_dir, splits=splits, resume=True, log=logged.append)
    return {"whole": whole, "whole_dir": str(root / "whole"), "resumed": resumed, "resumed_dir": killed_dir,
            "resumed_log": logged}


def test_a_tuned_run_records_where_its_weights_came_from(source, tuned):
    whole = tuned["whole"]
    origin = {"run_dir": source, "checkpoint": os.path.basename(runs.open_run(source).checkpoint)}
    assert whole["initialized_from"] == origin == tuned["resumed"]["initialized_from"]
    assert runs.load_config(tuned["whole_dir"]).train.init_from == source


def test_a_tuned_run_resumes_from_its_own_checkpoint(tuned):
    assert not any(line.startswith("initial weights") for line in tuned["resumed_log"])
    resumed_from = os.path.join(tuned["resumed_dir"], runs.CHECKPOINT_DIR, "ckpt-8")
    assert any(line.startswith(f"resuming from {resumed_from}: epoch 2, step 2 of 6") for line in tuned["resumed_log"])
    # The numbers of the uninterrupted run, up to the order of float32 sums, which
    # multi-threaded kernels may change from run to run without --deterministic
    # (measured: 1e-8 relative in the figures, 1e-6 in a few weights).
    for mine, theirs in zip(tuned["resumed"]["epochs"], tuned["whole"]["epochs"], strict=True):
        for part in ("train", "validation"):
            assert mine[part].keys() == theirs[part].keys()
            for key, value in mine[part].items():
                assert value == (pytest.approx(theirs[part][key], rel=1e-5) if isinstance(value, float)
                                 else theirs[part][key]), (part, key)
    for mine, theirs in zip(*(_weights(runs.load_run(d, "latest")) for d in (tuned["resumed_dir"],
                                                                              tuned["whole_dir"]))):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-7)
