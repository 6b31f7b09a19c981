"""fit's pre-flight check of the final test evaluation's cost counts the test
images the data really hold, for sources whose size only the data know (an
npz file, an image folder), not one image."""

import os

import numpy as np
import pytest
import tensorflow as tf

from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.errors import UserError
from probvae.training.preflight import prepare_run

SHAPE = (8, 6, 1)


def npz_dataset(root) -> str:
    """An npz of 12 training and 7 test images."""
    rng = np.random.default_rng(5)
    path = os.path.join(root, "small.npz")
    np.savez(path, x_train=rng.integers(0, 256, (12,) + SHAPE, dtype=np.uint8),
             x_test=rng.integers(0, 256, (7,) + SHAPE, dtype=np.uint8))
    return f"npz:{path}"


def folder_dataset(root) -> str:
    """A folder of 20 PNG files: 0.35 of them (7) held out for test."""
    rng = np.random.default_rng(6)
    folder = os.path.join(root, "images")
    os.makedirs(folder)
    for number in range(20):
        image = tf.constant(rng.integers(0, 256, SHAPE, dtype=np.uint8))
        tf.io.write_file(os.path.join(folder, f"{number}.png"), tf.io.encode_png(image))
    return f"folder:{folder}"


def config(dataset: str, test_iwae_samples: int) -> RunConfig:
    return RunConfig(data=DataConfig(dataset=dataset, validation_fraction=0.35),
                     model=ModelConfig(arch="mlp", hidden_units=(5,), latent_dim=2, image_shape=SHAPE),
                     train=TrainConfig(batch_size=2, test_iwae_samples=test_iwae_samples))


@pytest.mark.parametrize("make", [npz_dataset, folder_dataset])
def test_the_test_cost_counts_every_test_image(tmp_path, make):
    dataset = make(str(tmp_path))
    run_dir = str(tmp_path / "run")
    # 7 test images x 2e10 samples = 1.4e11 decoder passes, over the 1e11 limit (one image: 2e10, under it).
    with pytest.raises(UserError) as raised:
        prepare_run(config(dataset, 2 * 10**10), run_dir, log=lambda line: None)
    message = str(raised.value)
    assert "test_iwae_samples 20000000000 on 7 " in message and "1.4e+11 decoder passes" in message, message
    assert "lower --test-iwae-samples" in message
    assert not os.path.exists(run_dir)
    # 7 x 1e10 = 7e10 is within the limit.
    checked, splits = prepare_run(config(dataset, 10**10), run_dir, log=lambda line: None)
    assert len(splits.x_test) == 7 and checked.model.image_shape == SHAPE
    assert not os.path.exists(run_dir)
