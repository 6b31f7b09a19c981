"""Data: sources (IDX files, TFDS, npz, image folders, the built-in shapes)
and the tf.data pipelines that scale and binarize them.

- `probvae.data.sources`: `load_dataset(name, ...)` -> `Splits`, the IDX
  reader, array checks, `make_shapes`;
- `probvae.data.folders`: image folders and TFDS datasets streamed from disk;
- `probvae.data.pipelines`: training and evaluation batches and the one
  binarization.
"""

from probvae.data.folders import ImageStream
from probvae.data.pipelines import ArrayBatches, binarize_fixed, binarized, evaluation_batches, training_batches
from probvae.data.sources import (
    CLASS_NAMES,
    DATASETS,
    IDX_FILES,
    SYSTEM_IDX_DIRS,
    Splits,
    checked_images,
    load_config_dataset,
    load_dataset,
    make_shapes,
    read_idx,
    to_uint8_images,
    to_unit_interval,
)

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "IDX_FILES",
    "SYSTEM_IDX_DIRS",
    "ImageStream",
    "Splits",
    "binarize_fixed",
    "checked_images",
    "binarized",
    "evaluation_batches",
    "load_config_dataset",
    "load_dataset",
    "make_shapes",
    "read_idx",
    "to_uint8_images",
    "to_unit_interval",
    "training_batches",
    "ArrayBatches",
]
