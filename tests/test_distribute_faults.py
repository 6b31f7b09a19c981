"""tf.distribute: steps on two replicas (two logical CPU devices, in a fresh
process) check for non-finite values, skip them and scale losses as one
device does."""

import numpy as np
import pytest

from distributed_checks import STEPS, run_checks

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    return run_checks(["faults"], tmp_path_factory.mktemp("faults"))


def test_mirrored_steps_check_faults_and_scale_losses_like_one_device(mirrored):
    report = mirrored["faults"]
    stop, skip = report["stop"], report["skip"]
    # NaN in row 4 of step 2's global batch of 6 (rows 3-5 are the second replica's): the
    # reconstruction and KL terms (bits 1, 2), the loss (4) and the gradients (8) go bad.
    assert stop["terms"] == [15, 15] and stop["fault_steps"] == [2, 2] and stop["steps"] == [STEPS, STEPS]
    assert all(error and "step 3" in error for error in stop["errors"]), stop["errors"]
    assert skip["skipped"] == [1, 1] and skip["errors"] == [None, None]
    assert stop["skipped"] == [STEPS - 2, STEPS - 2]  # the bad step and every one after it
    for measured in (stop, skip):
        one, two = measured["losses"]
        assert np.isnan(one[2]) and np.isnan(two[2])
        np.testing.assert_allclose(two, one, rtol=1e-5)
        # No update reached either replica's copy of the weights at the bad step (stop:
        # nor after it); both copies stay equal, and equal to one device's.
        assert measured["replicas_differ"] == 0.0 and measured["weight_max_abs_diff"] < 1e-4
    mixed = report["mixed_precision"]
    assert mixed["optimizers"] == ["LossScaleOptimizerV3"] * 2 and mixed["compute_dtype"] == "float16"
    # The loss scale fell from 2^15 (float16 gradients overflowed), yet no fault was recorded
    # and no step counted as skipped: non-finite gradients are the loss scale's business.
    assert mixed["loss_scales"][0] < 2 ** 15 and mixed["loss_scales"][1] < 2 ** 15
    assert mixed["terms"] == [0, 0] and mixed["skipped"] == [0, 0] and mixed["replicas_differ"] == 0.0
    one, two = mixed["losses"]
    assert np.all(np.isfinite(one)) and np.all(np.isfinite(two))
    # Which float16 sums overflow depends on how a batch is split, so the runs part after a
    # few steps (measured: within 2e-6 relative for 5 steps, 2% apart by step 8).
    np.testing.assert_allclose(two[:2], one[:2], rtol=1e-4)

