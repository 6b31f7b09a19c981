"""tf.distribute: `fit` on two replicas (two logical CPU devices, in a fresh
process), killed and resumed, ends with the numbers of one device."""

import pytest

from distributed_checks import run_checks


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    return run_checks(["fit"], tmp_path_factory.mktemp("resume"))


@pytest.mark.slow
def test_a_mirrored_run_resumes_and_ends_with_the_one_device_numbers(mirrored):
    report = mirrored["fit"]
    one, two, resumed = report["metrics"]
    assert two["distribution"]["replicas"] == 2 and one["distribution"]["replicas"] == 1
    assert resumed["resumes"] == [{"checkpoint": "ckpt-12", "step": 12, "epoch": 2}]
    for mine, theirs in zip(resumed["epochs"], two["epochs"]):  # same strategy: exactly the same numbers
        assert mine["train"] == theirs["train"] and mine["validation"] == theirs["validation"]
    without_time = [{k: v for k, v in m["test"].items() if k != "seconds"} for m in (resumed, two)]
    assert without_time[0] == without_time[1]
    for mine, theirs in zip(two["epochs"], one["epochs"]):
        for split in ("train", "validation"):
            for key in ("elbo", "reconstruction", "kl"):
                assert mine[split][key] == pytest.approx(theirs[split][key], rel=1e-5), (split, key)
    for key in ("elbo", "log_likelihood", "kl"):  # ELBO and importance-weighted log p(x), distributed
        assert two["test"][key] == pytest.approx(one["test"][key], rel=1e-5), key
    # The test figures come from the best epoch's checkpoint, written by the mirrored run too.
    assert two["best"]["epoch"] == one["best"]["epoch"] and two["test"]["checkpoint"].startswith("best-")
    assert resumed["best"] == two["best"] and resumed["test"]["checkpoint"] == two["test"]["checkpoint"]
    assert report["weight_max_abs_diff"] < 2e-4  # measured 5e-5: XLA rounds batches of 3 and 6 differently

