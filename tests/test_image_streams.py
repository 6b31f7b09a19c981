import os
import re

import numpy as np
import pytest
import tensorflow as tf

from probvae import data
from probvae.data import folders
from probvae.data.folders import ImageFiles, decodable, folder_splits, list_image_files, resize_and_crop


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.asarray(image, np.uint8)))


def truncated_jpeg(path):
    encoded = tf.io.encode_jpeg(tf.fill([16, 16, 3], tf.constant(90, tf.uint8))).numpy()
    with open(path, "wb") as handle:
        handle.write(encoded[: len(encoded) // 2])  # a valid header, a cut-off body


@pytest.fixture
def folder(tmp_path):
    """Two classes of 6 distinct 10x12 RGB images (pixel value 20 * index), plus bad files."""
    for label, name in enumerate(["cats", "dogs"]):
        for i in range(6):
            write_png(str(tmp_path / name / f"{i}.png"), np.full((10, 12, 3), 20 * (6 * label + i), np.uint8))
    (tmp_path / "cats" / "empty.jpg").write_bytes(b"")
    (tmp_path / "dogs" / "notes.png").write_text("not an image")
    (tmp_path / "dogs" / "readme.txt").write_text("ignored: not an image extension")
    return tmp_path


def test_resize_and_crop_keeps_the_aspect_and_the_centre():
    image = np.zeros((4, 8, 1), np.uint8)
    image[:, :, 0] = np.arange(8) * 30
    # Same height: no resize, columns 2..5 kept.
    np.testing.assert_array_equal(resize_and_crop(image, 4, 4).numpy()[..., 0], np.tile(np.arange(2, 6) * 30, (4, 1)))
    wide = np.zeros((10, 20, 1), np.uint8)
    wide[:, 5:15] = 200  # the centre half of the width
    small = resize_and_crop(wide, 5, 5).numpy()
    # Scaled by 1/2 to 5x10, then columns 2..6 kept: the centre half only.
    assert small.shape == (5, 5, 1) and small.dtype == np.uint8
    np.testing.assert_array_equal(small[:, 1:4, 0], 200)
    grown = resize_and_crop(np.full((3, 2, 3), 77, np.uint8), 6, 6).numpy()
    assert grown.shape == (6, 6, 3) and np.all(grown == 77)


def test_listing_finds_classes_and_leaves_out_unreadable_files(folder):
    readable, unreadable, labels, classes = list_image_files(str(folder))
    assert classes == ["cats", "dogs"] and len(readable) == 12
    assert [os.path.basename(p) for p in unreadable] == ["empty.jpg", "notes.png"]
    assert list(labels) == [0] * 6 + [1] * 6
    write_png(str(folder / "loose.png"), np.zeros((2, 2, 1)))
    assert list_image_files(str(folder))[2] is None  # not every image is in a class folder


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        list_image_files(str(tmp_path / "nowhere"))
    (tmp_path / "bad.png").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"no readable JPEG or PNG images \(1 files .* 1 unreadable\)"):
        list_image_files(str(tmp_path))


def test_folder_splits_partition_the_files_with_a_seed(folder):
    train, validation, test, source = folder_splits(str(folder), (4, 4, 3), validation_fraction=0.2, split_seed=1)
    # 12 images: round(2.4) = 2 for validation, 2 for test, 8 for training.
    assert (len(train), len(validation), len(test)) == (8, 2, 2)
    everything = list(train.paths) + list(validation.paths) + list(test.paths)
    assert len(set(everything)) == 12
    assert "2 classes: cats, dogs" in source and "2 unreadable files skipped" in source
    again = folder_splits(str(folder), (4, 4, 3), validation_fraction=0.2, split_seed=1)[1]
    assert list(again.paths) == list(validation.paths)
    assert len(folder_splits(str(folder), (4, 4, 3), max_train_examples=3)[0]) == 3
    # Without a shape, the first image decides: 10x12 RGB.
    assert folder_splits(str(folder))[0].image_shape == (10, 12, 3)


def test_training_batches_stream_each_file_once_in_a_seeded_order(folder):
    stream = folder_splits(str(folder), (3, 3, 1), validation_fraction=0.1)[0]  # 10 training images

    def epoch(number, start_step=0):
        batches = data.training_batches(stream, 3, binarize=False, seed=4, epoch=number, start_step=start_step)
        return [np.round(b.numpy()[:, 0, 0, 0] * 255).astype(int) for b in batches]
    first = epoch(1)
    assert len(first) == 3 and all(b.shape == (3,) for b in first)  # 10 // 3 steps, the rest dropped
    values = np.concatenate(first)
    assert len(set(values)) == 9  # distinct images, none twice
    np.testing.assert_array_equal(np.concatenate(epoch(1)), values)
    assert not np.array_equal(np.concatenate(epoch(2)), values)
    np.testing.assert_array_equal(np.concatenate(epoch(1, start_step=1)), values[3:])
    assert stream.shape == (10, 3, 3, 1) and stream[:4].shape == (4, 3, 3, 1) and stream[2].shape == (3, 3, 1)


def test_files_that_fail_to_decode_are_skipped_and_counted(folder):
    paths, _, _, _ = list_image_files(str(folder))
    truncated_jpeg(str(folder / "cut.jpg"))
    stream = ImageFiles(paths[:5] + [str(folder / "cut.jpg")], (4, 4, 3))
    batches = list(data.evaluation_batches(stream, 4, binarize=True, seed=3))
    assert [b.shape[0] for b in batches] == [4, 1] and stream.skipped == 1
    again = np.concatenate([b.numpy() for b in data.evaluation_batches(stream, 2, binarize=True, seed=3)])
    assert set(np.unique(again)) <= {0.0, 1.0} and len(again) == 5
    assert len(list(data.training_batches(stream, 2, binarize=False, seed=0, epoch=1))) == 2 and stream.skipped == 1


def test_grey_and_rgb_decoding(tmp_path):
    write_png(str(tmp_path / "grey.png"), np.full((4, 4, 1), 100))
    write_png(str(tmp_path / "colour.png"), np.stack([np.full((4, 4), v) for v in (255, 0, 0)], -1))
    grey_as_rgb = ImageFiles([str(tmp_path / "grey.png")], (4, 4, 3))[0]
    assert grey_as_rgb.shape == (4, 4, 3) and np.all(grey_as_rgb == 100)
    red_as_grey = ImageFiles([str(tmp_path / "colour.png")], (4, 4, 1))[0]
    # Luma of pure red: 0.299 * 255 = 76 (within rounding of the decoder's integer weights).
    assert red_as_grey.shape == (4, 4, 1) and np.all(np.abs(red_as_grey.astype(int) - 76) <= 1)
    with pytest.raises(ValueError, match="grey .* or RGB"):
        ImageFiles([str(tmp_path / "grey.png")], (4, 4, 2))


def test_truncated_files_are_left_out_when_listing_so_the_decoder_never_complains(folder):
    truncated_jpeg(str(folder / "cats" / "cut.jpg"))
    whole = (folder / "dogs" / "0.png").read_bytes()
    (folder / "dogs" / "cut.png").write_bytes(whole[: len(whole) - 20])  # the IEND chunk cut off
    encoded = tf.io.encode_jpeg(tf.fill([16, 16, 3], tf.constant(90, tf.uint8))).numpy()
    (folder / "cats" / "padded.jpg").write_bytes(encoded + b"\0" * 10)  # padding after the end marker is fine
    readable, unreadable, _, _ = list_image_files(str(folder))
    assert sorted(os.path.basename(p) for p in unreadable) == ["cut.jpg", "cut.png", "empty.jpg", "notes.png"]
    assert str(folder / "cats" / "padded.jpg") in readable and len(readable) == 13


def corrupt_png(path):
    """A PNG with its signature and IEND chunk but a damaged body: it passes the listing's
    quick look and fails to decode."""
    encoded = bytearray(tf.io.encode_png(np.full((6, 5, 1), 40, np.uint8)).numpy())
    middle = len(encoded) // 2
    encoded[middle: middle + 8] = b"\xff" * 8
    with open(path, "wb") as handle:
        handle.write(bytes(encoded))


def test_the_decode_check_finds_corrupt_bodies_and_reports_its_progress(folder, monkeypatch):
    corrupt_png(str(folder / "dogs" / "corrupt.png"))
    paths = sorted(str(p) for p in folder.glob("*/*.png") if p.name != "notes.png")  # 12 images and the corrupt one
    monkeypatch.setattr(folders, "_DECODE_CHECK_CHUNK", 4)
    monkeypatch.setattr(folders, "DECODE_CHECK_PROGRESS_SECONDS", 0.0)
    lines = []
    ok = decodable(paths, lines.append)
    assert [os.path.basename(p) for p, good in zip(paths, ok) if not good] == ["corrupt.png"]
    assert ok.sum() == 12 and lines and all("checking that the images decode: " in line for line in lines)
    assert lines[-1].startswith("checking that the images decode: 12/13 (") and "s left)" in lines[-1]
    assert not decodable([]).size
    # The listing leaves it out with the others, so the labels count only images that decode.
    readable, unreadable, labels, _ = list_image_files(str(folder), log=lines.append)
    assert sorted(os.path.basename(p) for p in unreadable) == ["corrupt.png", "empty.jpg", "notes.png"]
    assert len(readable) == len(labels) == 12 and labels.tolist() == [0] * 6 + [1] * 6


def test_a_stream_whose_every_file_fails_is_one_user_error(tmp_path):
    from probvae import evaluation
    from probvae.config import ModelConfig
    from probvae.errors import UserError
    from probvae.model import VAE

    paths = [str(tmp_path / f"cut{index}.jpg") for index in range(2)]
    for path in paths:
        truncated_jpeg(path)
    stream = ImageFiles(paths, (7, 6, 1))
    assert stream.failing() == paths
    model = VAE(ModelConfig(arch="mlp", hidden_units=(3,), latent_dim=2, image_shape=(7, 6, 1)))
    message = f"none of the 2 images could be read ({paths[0]}, {paths[1]}): their files changed or were removed"
    with pytest.raises(UserError, match=re.escape(message)):
        evaluation.evaluate(model, stream, iwae_samples=2, batch_size=2)
    with pytest.raises(UserError, match=re.escape(message)):
        evaluation.evaluate_elbo(model, stream, batch_size=3)
