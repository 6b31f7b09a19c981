"""Latent snapshots during training, the index page and inspect_run's argument checks.
The full inspect_run is exercised end to end in test_inspect_script.py."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_plotting import picture
from test_split_label_alignment import FOLDER_LABELS, HEIGHT, WIDTH, check_split, write_folder

from probvae import data, runs
from probvae.analysis import report
from probvae.config import DataConfig, ModelConfig, RunConfig
from probvae.model import VAE

from conftest import IMAGE_SHAPE, tiny_model_config

report_inputs = report._Inputs


def tiny_splits(n=12):
    rng = np.random.default_rng(0)
    images = (rng.uniform(size=(n,) + IMAGE_SHAPE) * 255).astype(np.uint8)
    labels = rng.integers(0, 4, n)
    return data.Splits("shapes", "test", images, labels, images, labels, images, labels)


def test_snapshots_write_a_frame_per_epoch_and_a_gif(tmp_path):
    directory = tmp_path / report.SNAPSHOT_DIR
    directory.mkdir()
    (directory / "epoch_0007.png").write_bytes(b"from an earlier run")
    model = VAE(tiny_model_config(latent_dim=3))
    snapshots = report.LatentSnapshots(num_examples=10, dims=(2, 0))
    for epoch in (1, 2):
        gif = snapshots(epoch, model, tiny_splits(), str(tmp_path))
    assert sorted(os.listdir(directory)) == ["epoch_0001.png", "epoch_0002.png", report.GIF_NAME]
    assert gif == str(directory / report.GIF_NAME)
    picture(str(directory / "epoch_0002.png"))
    with Image.open(gif) as image:
        assert image.n_frames == 2


def test_snapshots_need_a_latent_of_two_dims():
    with pytest.raises(ValueError, match="--latent-dim 2 or more"):
        report.LatentSnapshots.for_config(RunConfig(model=ModelConfig(latent_dim=1)))


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run directory holding an untrained shapes model (config and checkpoint, no metrics)."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "untrained")
    config = RunConfig(data=DataConfig(dataset="shapes"),
                       model=ModelConfig(arch="mlp", latent_dim=3, hidden_units=(9,), image_shape=(28, 28, 1)))
    runs.prepare_run_dir(run_dir)
    runs.save_config(run_dir, config)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=VAE(config.model)),
                                         os.path.join(run_dir, runs.CHECKPOINT_DIR), max_to_keep=1)
    manager.save(checkpoint_number=1)
    return run_dir


def test_inspect_run_rejects_bad_choices_before_drawing(untrained_run, tmp_path):
    arguments = dict(split="validation", out_dir=str(tmp_path / "plots"), max_examples=50, log=lambda _: None)
    with pytest.raises(ValueError, match=r"--examples \[500\] out of range: the split has examples 0..49"):
        report.inspect_run(untrained_run, indices=[500], **arguments)
    with pytest.raises(ValueError, match=r"--interpolate \[-1\] out of range"):
        report.inspect_run(untrained_run, interpolate=[2, -1], **arguments)
    with pytest.raises(ValueError, match=r"--dims needs two different dimensions in 0..2"):
        report.inspect_run(untrained_run, dims=[0, 3], **arguments)
    assert not os.path.exists(tmp_path / "plots")


def test_write_index_links_every_picture(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    entries = [("One", str(tmp_path / "elsewhere" / "one.png"), "first"),
               ("Two", str(tmp_path / "out" / "two.png"), "x < y")]
    path = report.write_index(str(tmp_path / "out"), "Inside <run>", ["a & b"], entries)
    assert path == str(tmp_path / "out" / "index.html")
    text = open(path).read()
    assert "src='../elsewhere/one.png'" in text and "src='two.png'" in text
    assert "Inside &lt;run&gt;" in text and "a &amp; b" in text and "x &lt; y" in text
    assert text.count("<img") == 2


def test_inspect_run_reads_a_folder_run_at_the_runs_image_shape(tmp_path):
    # 40 9x7 files (4 held out for test); the run's model takes them resized and cropped to 4x4.
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(np.full((9, 7, 1), 6 * i, np.uint8)))
    config = RunConfig(data=DataConfig(dataset=f"folder:{folder}"),
                       model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(5,), image_shape=(4, 4, 1)))
    run_dir = tmp_path / "run"
    runs.prepare_run_dir(str(run_dir))
    runs.save_config(str(run_dir), config)
    checkpoint = tf.train.Checkpoint(model=VAE(config.model))
    tf.train.CheckpointManager(checkpoint, str(run_dir / runs.CHECKPOINT_DIR), max_to_keep=1).save()
    # The data as evaluate.py loads it for this run: 4x4 images.
    evaluated = data.load_dataset(config.data.dataset, image_shape=config.model.image_shape)
    assert evaluated.image_shape == (4, 4, 1)
    paths = report.inspect_run(str(run_dir), out_dir=str(tmp_path / "plots"), grid_size=3, log=lambda _: None)
    assert any(path.endswith("index.html") for path in paths)


def test_the_index_lists_every_evaluation_side_by_side(tmp_path):
    base = {"split": "test", "n_examples": 1000, "elbo": -233.99, "log_likelihood_stderr": 0.75,
            "log_likelihood_mc_stderr": 0.01}
    runs.write_json(str(tmp_path / "eval_test_iwae5000.json"),
                    dict(base, estimator="iwae", iwae_samples=5000, log_likelihood=-230.55))
    runs.write_json(str(tmp_path / "eval_test_ais100x4.json"), dict(
        base, estimator="ais", ais={"num_steps": 100, "num_chains": 4}, log_likelihood=-230.12,
        bdmc={"gap": 0.42, "gap_stderr": 0.05, "examples": 50}))
    # an older name
    runs.write_json(str(tmp_path / "eval_test.json"), dict(base, iwae_samples=100, log_likelihood=-230.97))
    (tmp_path / "eval_notes.json").write_text('["not an evaluation"]')
    lines = report.evaluation_lines(str(tmp_path))
    assert lines == [
        "Test split, 1000 images, K=100: log p(x) -230.97 +- 0.75 nats (Monte Carlo error 0.01); ELBO -233.99 "
        "(eval_test.json).",
        "Test split, 1000 images, AIS T=100, C=4: log p(x) -230.12 +- 0.75 nats (Monte Carlo error 0.01); "
        "ELBO -233.99; BDMC gap 0.42 +- 0.05 nats on 50 images simulated from the model (eval_test_ais100x4.json).",
        "Test split, 1000 images, K=5000: log p(x) -230.55 +- 0.75 nats (Monte Carlo error 0.01); ELBO -233.99 "
        "(eval_test_iwae5000.json).",
    ]


def damage(path):
    """Overwrite 8 bytes in the middle of an image file: it still looks like a PNG but fails to decode."""
    encoded = bytearray(open(path, "rb").read())
    encoded[len(encoded) // 2: len(encoded) // 2 + 8] = b"\xff" * 8
    open(path, "wb").write(bytes(encoded))


def damage_one_before_another_label(stream):
    """Damage the file of the first image whose label differs from the next image's, so
    labels paired by position (labels[:len(images)]) would shift a wrong label onto it."""
    labels = np.asarray(stream.labels)
    position = int(np.flatnonzero(labels[:-1] != labels[1:])[0])
    damage(stream.paths[position])
    return position


def test_snapshots_pair_each_label_with_its_image_past_a_file_that_stops_decoding(tmp_path, monkeypatch):
    write_folder(tmp_path, FOLDER_LABELS)
    splits = data.load_dataset(f"folder:{tmp_path}", validation_fraction=0.3, split_seed=3,
                               image_shape=(HEIGHT, WIDTH, 1))
    damage_one_before_another_label(splits.x_validation)  # after the listing, as during a run
    drawn = {}
    scatter = report.plotting.plot_latent_scatter

    def scatter_and_keep(loc, path, labels=None, **options):
        drawn["labels"] = labels
        return scatter(loc, path, labels, **options)

    monkeypatch.setattr(report.plotting, "plot_latent_scatter", scatter_and_keep)
    model = VAE(tiny_model_config(arch="mlp", latent_dim=2, image_shape=(HEIGHT, WIDTH, 1)))
    prepare = model.prepare_inputs

    def prepare_and_keep(images, seed=0):  # the first call has the uint8 images the labels belong to
        drawn.setdefault("images", np.asarray(images))
        return prepare(images, seed)

    model.prepare_inputs = prepare_and_keep
    report.LatentSnapshots(num_examples=10)(1, model, splits, str(tmp_path))
    assert len(drawn["images"]) == 5 == len(splits.x_validation) - 1
    check_split(drawn["images"], drawn["labels"], "snapshot")


def test_inspect_run_pairs_each_label_with_its_image_past_a_file_that_stops_decoding(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    write_folder(folder, FOLDER_LABELS)
    config = RunConfig(data=DataConfig(dataset=f"folder:{folder}", validation_fraction=0.3),
                       model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(5,), image_shape=(HEIGHT, WIDTH, 1)))
    run_dir = str(tmp_path / "run")
    runs.prepare_run_dir(run_dir)
    runs.save_config(run_dir, config)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=VAE(config.model)),
                               os.path.join(run_dir, runs.CHECKPOINT_DIR), max_to_keep=1).save()
    load = report.data_lib.load_config_dataset

    def load_then_damage(run_config):  # a test file stops decoding after the folder is listed
        splits = load(run_config)
        damage_one_before_another_label(splits.x_test)
        return splits

    monkeypatch.setattr(report.data_lib, "load_config_dataset", load_then_damage)
    shown = []
    monkeypatch.setattr(report, "_Inputs", lambda **fields: shown.append(fields) or report_inputs(**fields))
    report.inspect_run(run_dir, out_dir=str(tmp_path / "plots"), grid_size=2, log=lambda _: None)
    images, labels = shown[0]["images"], shown[0]["labels"]
    assert len(images) == 5
    check_split(images, labels, "inspected")
