import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from probvae import data
from probvae.errors import UserError

FASHION_DIR = data.SYSTEM_IDX_DIRS["fashion_mnist"]


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def make_idx_dir(directory, n_train=12, n_test=5):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": rng.integers(0, 10, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": rng.integers(0, 10, n_test),
    }
    for key, name in data.IDX_FILES.items():
        write_idx(os.path.join(directory, name), arrays[key])
    return arrays


def test_idx_reader_round_trips(tmp_path):
    arrays = make_idx_dir(tmp_path)
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / data.IDX_FILES["x_train"])), arrays["x_train"])


def test_idx_reader_rejects_truncated_files(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">BBBBII", 0, 0, 8, 2, 3, 3) + b"\x00" * 4)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(str(path))


def test_data_dir_idx_files_come_first_and_split_is_seeded(tmp_path):
    arrays = make_idx_dir(tmp_path)
    splits = data.load_dataset("mnist", data_dir=str(tmp_path), validation_fraction=0.25, split_seed=3)
    assert splits.source == f"IDX files in {tmp_path}"
    assert len(splits.x_train) == 9 and len(splits.x_validation) == 3 and len(splits.x_test) == 5
    assert splits.image_shape == (28, 28, 1)
    # Train and validation partition the original training set.
    together = np.concatenate([splits.x_train, splits.x_validation])[..., 0]
    assert sorted(map(bytes, together)) == sorted(map(bytes, arrays["x_train"].astype(np.uint8)))
    again = data.load_dataset("mnist", data_dir=str(tmp_path), validation_fraction=0.25, split_seed=3)
    np.testing.assert_array_equal(again.x_validation, splits.x_validation)


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR) and not os.environ.get("CI"),
                    reason="Debian's dataset-fashion-mnist is not installed (CI installs it)")
def test_real_fashion_mnist_idx_files_have_the_known_shapes():
    files = {key: os.path.join(FASHION_DIR, name) for key, name in data.IDX_FILES.items()}
    x_train, y_train = data.read_idx(files["x_train"]), data.read_idx(files["y_train"])
    x_test, y_test = data.read_idx(files["x_test"]), data.read_idx(files["y_test"])
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    splits = data.load_dataset("fashion_mnist")
    assert splits.source == f"IDX files in {FASHION_DIR}"
    assert len(splits.x_train) + len(splits.x_validation) == 60000


def test_tfds_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=20):
        splits = data.load_dataset("kmnist", validation_fraction=0.2)
    assert splits.source == "TFDS kmnist"
    assert splits.image_shape == (28, 28, 1) and splits.x_train.dtype == np.uint8
    assert len(splits.x_train) == 16 and len(splits.x_validation) == 4


def test_npz_source_accepts_floats_and_checks_ranges(tmp_path):
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.uniform(size=(10, 4, 4)), x_test=rng.uniform(size=(3, 4, 4)))
    splits = data.load_dataset(f"npz:{path}", validation_fraction=0.2)
    assert splits.image_shape == (4, 4, 1) and splits.y_train is None
    np.savez(path, x_train=rng.uniform(size=(10, 4, 4)) * 3, x_test=rng.uniform(size=(3, 4, 4)))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        data.load_dataset(f"npz:{path}")
    with pytest.raises(ValueError, match="does not exist"):
        data.load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    # The dtype is checked even when a split holds no images.
    for bad in (np.zeros((0, 4, 4), np.complex64), np.zeros((3, 4, 4), np.bool_)):
        np.savez(path, x_train=rng.uniform(size=(10, 4, 4)), x_test=bad)
        with pytest.raises(ValueError, match=f"have dtype {bad.dtype}; pass uint8 0..255 or floats in"):
            data.load_dataset(f"npz:{path}")


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="fashion_mnist, mnist, kmnist, cifar10, shapes"):
        data.load_dataset("imagenet")


def test_shapes_are_seeded_and_drawn():
    x, y = data.make_shapes(8, seed=5)
    x2, _ = data.make_shapes(8, seed=5)
    np.testing.assert_array_equal(x, x2)
    assert x.shape == (8, 28, 28, 1) and x.dtype == np.uint8 and set(y) <= {0, 1, 2, 3}
    assert all(image.max() > 100 and image.min() == 0 for image in x)


def test_training_batches_binarize_dynamically_and_resume_mid_epoch():
    images = np.full((10, 2, 2, 1), 128, np.uint8)
    epoch1 = [b.numpy() for b in data.training_batches(images, 3, binarize=True, seed=1, epoch=1)]
    assert len(epoch1) == 3 and all(b.shape == (3, 2, 2, 1) for b in epoch1)
    values = np.concatenate(epoch1)
    assert set(np.unique(values)) == {0.0, 1.0}
    again = [b.numpy() for b in data.training_batches(images, 3, binarize=True, seed=1, epoch=1)]
    np.testing.assert_array_equal(np.concatenate(again), values)
    epoch2 = np.concatenate([b.numpy() for b in data.training_batches(images, 3, binarize=True, seed=1, epoch=2)])
    assert not np.array_equal(epoch2, values)
    resumed = [b.numpy() for b in data.training_batches(images, 3, binarize=True, seed=1, epoch=1, start_step=1)]
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(epoch1[1:]))


def test_training_batches_shuffle_each_example_once():
    images = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    batches = np.concatenate([b.numpy() for b in data.training_batches(images, 4, binarize=False, seed=0, epoch=1)])
    assert sorted(np.round(batches.ravel() * 255).astype(int)) == list(range(12))
    assert list(np.round(batches.ravel() * 255).astype(int)) != list(range(12))


def test_batch_larger_than_data_is_refused():
    with pytest.raises(ValueError, match="lower --batch-size"):
        data.training_batches(np.zeros((2, 1, 1, 1), np.uint8), 3, binarize=False, seed=0, epoch=1)


def test_evaluation_binarization_is_fixed_by_its_seed():
    images = np.full((50, 3, 3, 1), 77, np.uint8)
    first = np.concatenate(list(data.evaluation_batches(images, 7, binarize=True, seed=4).as_numpy_iterator()))
    second = np.concatenate(list(data.evaluation_batches(images, 50, binarize=True, seed=4).as_numpy_iterator()))
    np.testing.assert_array_equal(first, second)
    assert first.shape == (50, 3, 3, 1)
    # Bernoulli(77/255): the mean lies within 4 standard errors of 0.302.
    assert abs(first.mean() - 77 / 255) < 4 * np.sqrt(0.302 * 0.698 / first.size)


def test_folder_dataset_streams_with_labels_and_a_held_out_split(tmp_path):
    import tensorflow as tf

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            tf.io.write_file(str(tmp_path / label / f"{i}.png"), tf.io.encode_png(np.full((9, 7, 1), 25 * i, np.uint8)))
    splits = data.load_dataset(f"folder:{tmp_path}", validation_fraction=0.2, image_shape=(4, 4, 1))
    assert isinstance(splits.x_train, data.ImageStream) and splits.image_shape == (4, 4, 1)
    assert (len(splits.x_train), len(splits.x_validation), len(splits.x_test)) == (6, 2, 2)
    assert sorted(np.concatenate([splits.y_train, splits.y_validation, splits.y_test])) == [0] * 5 + [1] * 5
    batch = next(iter(data.training_batches(splits.x_train, 4, binarize=False, seed=0, epoch=1)))
    assert batch.shape == (4, 4, 4, 1) and batch.dtype == np.float32
    with pytest.raises(ValueError, match="holds no readable JPEG or PNG"):
        (tmp_path / "empty").mkdir()
        data.load_dataset(f"folder:{tmp_path / 'empty'}")


def test_celeb_a_is_streamed_from_tfds_at_the_models_size():
    with tfds.testing.mock_data(num_examples=6):
        splits = data.load_dataset("celeb_a", image_shape=(8, 8, 3))
        assert splits.source.startswith("TFDS celeb_a, streamed") and splits.y_train is None
        assert len(splits.x_train) == 6 and splits.image_shape == (8, 8, 3)
        batches = list(data.training_batches(splits.x_train, 4, binarize=False, seed=0, epoch=1))
        assert [tuple(b.shape) for b in batches] == [(4, 8, 8, 3)]
        assert 0.0 <= float(np.min(batches[0])) <= float(np.max(batches[0])) <= 1.0


def test_pixels_scale_to_the_correctly_rounded_fraction_in_every_context():
    """v / 255 for every uint8 value, eagerly, in tf.data and in a tf.function
    (whose graph optimizer rewrites a division by a constant), so batches a
    compiled loop computes are tf.data's bit for bit."""
    from probvae.data.pipelines import _scale

    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    exact = values.astype(np.float32) / np.float32(255)
    compiled = tf.function(_scale)(tf.constant(values)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(values).map(_scale))).numpy()
    for scaled in (_scale(tf.constant(values)).numpy(), compiled, mapped):
        np.testing.assert_array_equal(scaled, exact)
    # The batches of a compiled loop over an in-memory set are those of training_batches.
    images = np.random.default_rng(0).integers(0, 256, size=(40, 16, 16, 1), dtype=np.uint8)
    source = data.ArrayBatches(images, 8, binarize=True, seed=3)
    order = source.order(2)
    batch = tf.function(lambda step: source.batch(order, tf.constant(2, tf.int64), step))
    for step, expected in enumerate(data.training_batches(images, 8, binarize=True, seed=3, epoch=2)):
        np.testing.assert_array_equal(batch(tf.constant(step, tf.int64)), expected)


def streamed_binarizations(images, batch_sizes, seed):
    return [np.concatenate(list(data.evaluation_batches(images, b, binarize=True, seed=seed).as_numpy_iterator()))
            for b in batch_sizes]


def check_held_out_binarization(images):
    """The fixed binarization of a streamed split depends on its seed, not on the batch size."""
    by_3, by_5 = streamed_binarizations(images, (3, 5), seed=4)
    np.testing.assert_array_equal(by_3, by_5)
    again, = streamed_binarizations(images, (2,), seed=4)
    np.testing.assert_array_equal(by_3, again)
    other, = streamed_binarizations(images, (3,), seed=5)
    assert not np.array_equal(by_3, other)
    assert set(np.unique(by_3)) == {0.0, 1.0}


def test_a_streamed_tfds_split_binarizes_the_same_at_any_batch_size():
    with tfds.testing.mock_data(num_examples=7):
        splits = data.load_dataset("celeb_a", image_shape=(5, 4, 1))
        check_held_out_binarization(splits.x_test)


def test_an_image_folder_binarizes_the_same_at_any_batch_size(tmp_path):
    grey = np.random.default_rng(3).integers(30, 220, (9, 6, 5, 1)).astype(np.uint8)
    for i, image in enumerate(grey):
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
    stream = data.folders.ImageFiles(sorted(str(p) for p in tmp_path.glob("*.png")), (6, 5, 1))
    check_held_out_binarization(stream)


def test_array_held_out_binarization_depends_on_its_seed_only():
    images = np.random.default_rng(5).integers(0, 256, (11, 4, 3, 1)).astype(np.uint8)
    first, second = streamed_binarizations(images, (3, 11), seed=2)
    np.testing.assert_array_equal(first, second)
    # The reference runs' numbers: one draw of [11, 4, 3, 1] uniforms from (seed, 0x5EED).
    uniforms = tf.random.stateless_uniform(images.shape, seed=[2, 0x5EED]).numpy()
    np.testing.assert_array_equal(first, (uniforms < images / np.float32(255)).astype(np.float32))
    assert not np.array_equal(first, streamed_binarizations(images, (3,), seed=3)[0])


@pytest.mark.parametrize("changes, message", [
    ({"validation_fraction": 0.0}, "validation_fraction must lie strictly between 0 and 1"),
    ({"max_train_examples": -1}, "max_train_examples must be a whole number of at least 1"),
    ({"split_seed": -2}, "split_seed must be a whole number in"),
])
def test_load_dataset_applies_the_configs_checks(changes, message):
    with pytest.raises(UserError, match=message):
        data.load_dataset("shapes", **changes)


def test_unbinarized_evaluation_batches_keep_floats_in_the_unit_interval_and_scale_uint8():
    rng = np.random.default_rng(9)
    floats = rng.uniform(size=(5, 3, 2, 1)).astype(np.float32)
    batches = np.concatenate(list(data.evaluation_batches(floats, 2, binarize=False, seed=0).as_numpy_iterator()))
    np.testing.assert_array_equal(batches, floats)  # not divided by 255 a second time
    grey = rng.integers(0, 256, (5, 3, 2, 1), dtype=np.uint8)
    batches = np.concatenate(list(data.evaluation_batches(grey, 3, binarize=False, seed=0).as_numpy_iterator()))
    np.testing.assert_array_equal(batches, grey.astype(np.float32) / np.float32(255))
