"""Fuzzing what users hand the package: npz files and API inputs of any dtype,
shape and value either work or raise the package's own one-line error, never a
traceback from NumPy or TensorFlow."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probvae import data
from probvae.errors import UserError
from probvae.model import VAE

from conftest import IMAGE_SHAPE, tiny_model_config

# Valid choices repeated, so that most draws get past the first check and reach the later ones.
DTYPES = ["uint8"] * 4 + ["float32"] * 3 + ["int8", "int32", "int64", "float16", "float64", "bool", "complex64", "<U2"]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def arrays(draw, shapes, labels=False):
    shape = draw(shapes)
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.kind == "U":
        return np.full(shape, "a", dtype)
    special = draw(st.sampled_from(["plain"] * 5 + ["nan", "inf", "negative", "large"]))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    values = rng.integers(0, 10, shape).astype(np.float64) if labels else rng.uniform(0, 1, shape)
    if dtype.kind in "iu" and not labels:
        values = values * 255
    if special == "negative":
        values = values - 2
    elif special == "large":
        values = values * 1000
    with np.errstate(invalid="ignore", over="ignore"):
        result = values.astype(dtype) if dtype.kind != "b" else values > 0.5
    if special in ("nan", "inf") and dtype.kind in "fc" and result.size:
        result.flat[0] = np.nan if special == "nan" else np.inf
    return result


IMAGE_SHAPES = st.sampled_from([(6, 8, 8)] * 4 + [(6, 8, 8, 1)] * 3 + [
    (6, 8, 8, 3), (0, 8, 8), (6, 0, 8), (6,), (6, 8, 8, 1, 1), (1, 8, 8), (3, 5, 4)])
LABEL_SHAPES = st.sampled_from([(6,)] * 5 + [(5,), (6, 1), (6, 2), (), (0,), (3,)])


def one_line(error: Exception) -> bool:
    return isinstance(error, UserError) and "\n" not in str(error) and str(error).strip() != ""


@FUZZ
@given(absent=st.sampled_from([set()] * 6 + [{"x_train"}, {"x_test"}, {"y_train"}, {"y_test"}, {"y_train", "y_test"}]),
       extra=st.booleans(), data_=st.data())
def test_any_npz_loads_or_raises_one_clear_error(absent, extra, data_):
    keys = {"x_train", "y_train", "x_test", "y_test"} - absent | ({"other"} if extra else set())
    contents = {}
    for key in keys:
        label = key.startswith("y")
        contents[key] = data_.draw(arrays(LABEL_SHAPES if label else IMAGE_SHAPES, labels=label), label=key)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/fuzz.npz"
        np.savez(path, **contents)
        try:
            splits = data.load_dataset(f"npz:{path}", validation_fraction=0.2)
        except Exception as error:  # noqa: BLE001 - the point: which kinds escape
            assert one_line(error), f"{type(error).__name__}: {error}"
            return
    assert splits.x_train.dtype == np.uint8 and splits.x_train.ndim == 4
    for images, labels in ((splits.x_train, splits.y_train), (splits.x_test, splits.y_test)):
        assert labels is None or (labels.dtype == np.int64 and labels.shape == (len(images),))


@pytest.fixture(scope="module")
def model():
    return VAE(tiny_model_config())


API_SHAPES = st.sampled_from([(2,) + IMAGE_SHAPE, (2, 8, 8), (0,) + IMAGE_SHAPE, (2, 8, 8, 3), (8, 8, 1), (2, 4, 4, 1),
                              (1,) + IMAGE_SHAPE])


@FUZZ
@given(value=arrays(API_SHAPES), as_tensor=st.booleans())
def test_any_api_input_works_or_raises_one_clear_error(model, value, as_tensor):
    if as_tensor:
        if value.dtype.kind == "U":
            value = tf.constant(value)
        else:
            value = tf.constant(value)
    try:
        x = model.prepare_inputs(value)
    except Exception as error:  # noqa: BLE001
        assert one_line(error), f"{type(error).__name__}: {error}"
        return
    assert x.dtype == tf.float32 and tuple(x.shape[1:]) == IMAGE_SHAPE and x.shape[0] > 0
    assert np.all(np.isfinite(model.log_likelihood(value, num_samples=2).numpy()))
