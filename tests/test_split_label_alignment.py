"""Images and labels stay paired through the seeded train/validation(/test) split.

Every source gets a tiny dataset whose label is written into the image: every
pixel holds 20 * label, except pixel [0, 0], which holds the example's own
number. After `load_dataset`, each split's label must be the one its image
shows, and the numbers must partition the examples.
"""

import gzip
import os
import struct

import numpy as np
import tensorflow as tf

from probvae import data

HEIGHT, WIDTH = 6, 5


def labelled_images(labels, first_id=0, channels=None):
    """uint8 images [n, 6, 5] (or [n, 6, 5, channels]): 20 * label everywhere, the id at [0, 0]."""
    shape = (len(labels), HEIGHT, WIDTH) + (() if channels is None else (channels,))
    images = np.empty(shape, np.uint8)
    images[...] = (20 * np.asarray(labels)).reshape((-1,) + (1,) * (len(shape) - 1))
    images[:, 0, 0] = np.arange(first_id, first_id + len(labels)).reshape((-1,) + (1,) * (len(shape) - 3))
    return images


def check_split(images, labels, what):
    """Labels [n] match the images [n, h, w, c]; returns the ids the images carry."""
    images = np.asarray(images)
    assert labels is not None and len(images) == len(labels), what
    body = images.reshape(len(images), -1)[:, images.shape[-1]:]  # every pixel after [0, 0]
    np.testing.assert_array_equal(body, np.repeat(20 * np.asarray(labels)[:, None], body.shape[1], axis=1),
                                  err_msg=what)
    return images[:, 0, 0, 0].tolist()


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


RNG_LABELS = np.random.default_rng(4)
TRAIN_LABELS = RNG_LABELS.integers(0, 10, 30)  # 30 training examples, ids 0..29
TEST_LABELS = RNG_LABELS.integers(0, 10, 7)  # 7 test examples, ids 100..106


def check_array_splits(splits):
    """Train 20 (max_train_examples) and validation 6 (0.2 of 30) from the training set; the test set as given."""
    train = check_split(splits.x_train, splits.y_train, "train")
    validation = check_split(splits.x_validation, splits.y_validation, "validation")
    test = check_split(splits.x_test, splits.y_test, "test")
    assert (len(train), len(validation), len(test)) == (20, 6, 7)
    assert not set(train) & set(validation) and set(train) | set(validation) <= set(range(30))
    assert test == list(range(100, 107))
    # The split is a seeded shuffle, not the file order.
    assert train != sorted(train)


def test_idx_labels_follow_their_images(tmp_path):
    arrays = {"x_train": labelled_images(TRAIN_LABELS), "y_train": TRAIN_LABELS,
              "x_test": labelled_images(TEST_LABELS, first_id=100), "y_test": TEST_LABELS}
    for key, name in data.IDX_FILES.items():
        write_idx(str(tmp_path / name), arrays[key])
    splits = data.load_dataset("mnist", data_dir=str(tmp_path), validation_fraction=0.2, split_seed=3,
                               max_train_examples=20)
    assert splits.source == f"IDX files in {tmp_path}"
    check_array_splits(splits)


def test_npz_labels_follow_their_images(tmp_path):
    path = tmp_path / "labelled.npz"
    np.savez(path, x_train=labelled_images(TRAIN_LABELS, channels=3), y_train=TRAIN_LABELS,
             x_test=labelled_images(TEST_LABELS, first_id=100, channels=3), y_test=TEST_LABELS)
    splits = data.load_dataset(f"npz:{path}", validation_fraction=0.2, split_seed=3, max_train_examples=20)
    assert splits.image_shape == (HEIGHT, WIDTH, 3)
    check_array_splits(splits)


def write_folder(root, labels):
    """PNG files root/c<label>/<id>.png; returns the ids."""
    for number, label in enumerate(labels):
        os.makedirs(root / f"c{label}", exist_ok=True)
        image = labelled_images([label], first_id=number)[0][..., None]
        tf.io.write_file(str(root / f"c{label}" / f"{number}.png"), tf.io.encode_png(image))
    return list(range(len(labels)))


FOLDER_LABELS = np.array([0, 1, 2, 3, 4] * 4)  # 20 files in 5 class folders c0 .. c4


def test_folder_labels_follow_their_images(tmp_path):
    ids = write_folder(tmp_path, FOLDER_LABELS)
    splits = data.load_dataset(f"folder:{tmp_path}", validation_fraction=0.2, split_seed=3, max_train_examples=10,
                               image_shape=(HEIGHT, WIDTH, 1))
    assert isinstance(splits.x_train, data.ImageStream)
    train = check_split(splits.x_train[:], splits.y_train, "train")
    validation = check_split(splits.x_validation[:], splits.y_validation, "validation")
    test = check_split(splits.x_test[:], splits.y_test, "test")
    # 4 held out for validation, 4 for test, the first 10 of the other 12 for training.
    assert (len(train), len(validation), len(test)) == (10, 4, 4)
    assert len(set(train) | set(validation) | set(test)) == 18 and set(train + validation + test) <= set(ids)
    # Single images and index arrays keep the pairing too.
    picked = [7, 2, 5]
    check_split(splits.x_train[np.array(picked)], np.asarray(splits.y_train)[picked], "train, indexed")
    assert check_split(splits.x_train[4][None], splits.y_train[4:5], "train[4]") == [train[4]]


def test_folder_labels_follow_their_images_past_a_file_that_fails_to_decode(tmp_path):
    write_folder(tmp_path, FOLDER_LABELS)
    # A whole PNG (signature to IEND) with damaged image data: listed as an image, fails in the pipeline.
    encoded = bytearray(tf.io.encode_png(labelled_images([2], first_id=99)[0][..., None]).numpy())
    middle = len(encoded) // 2
    encoded[middle: middle + 8] = b"\xff" * 8
    (tmp_path / "c2" / "broken.png").write_bytes(bytes(encoded))
    splits = data.load_dataset(f"folder:{tmp_path}", validation_fraction=0.2, split_seed=3,
                               image_shape=(HEIGHT, WIDTH, 1))
    # Left out when the folder is listed, and named.
    assert "1 unreadable files skipped: c2/broken.png" in splits.source
    assert sum(len(splits.split(name)[0]) for name in ("train", "validation", "test")) == len(FOLDER_LABELS)
    for name in ("train", "validation", "test"):
        images, labels = splits.split(name)
        check_split(images[:], labels, name)
        # Paired as the report pairs them (Splits.labelled), whole and the first 3.
        check_split(*splits.labelled(name), name)
        check_split(*splits.labelled(name, 3), name)


def test_labels_travel_with_their_images_past_a_file_that_stops_decoding(tmp_path):
    write_folder(tmp_path, FOLDER_LABELS)
    splits = data.load_dataset(f"folder:{tmp_path}", validation_fraction=0.2, split_seed=3,
                               image_shape=(HEIGHT, WIDTH, 1))
    stream = splits.x_train
    # After the listing, the second file of the split is damaged on disk: the pipeline drops it.
    path = stream.paths[1]
    encoded = bytearray(open(path, "rb").read())
    encoded[len(encoded) // 2: len(encoded) // 2 + 8] = b"\xff" * 8
    open(path, "wb").write(bytes(encoded))
    images, labels = stream.labelled(slice(None))
    assert len(images) == len(stream) - 1 == len(labels)
    ids = check_split(images, labels, "train, one file damaged")
    assert int(os.path.basename(path)[:-4]) not in ids
    images, labels = stream.labelled(np.array([0, 1, 2]))
    assert len(images) == 2 and check_split(images, labels, "picked") == ids[:2]
