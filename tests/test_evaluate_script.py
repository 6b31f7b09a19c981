import json
import math
import os
import subprocess
import sys

import pytest

from probvae import evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
EVALUATE = os.path.join(ROOT, "scripts", "evaluate.py")
SMALL = ["--dataset", "shapes", "--arch", "mlp", "--latent-dim", "2", "--epochs", "1",
         "--max-train-examples", "200", "--batch-size", "50", "--test-iwae-samples", "3"]
FIELDS = {
    "elbo", "elbo_stderr", "reconstruction", "reconstruction_stderr", "kl", "kl_stderr",
    "log_likelihood", "log_likelihood_stderr", "log_likelihood_mc_stderr", "effective_sample_size",
    "iwae_samples", "bits_per_dim", "bits_per_dim_stderr", "elbo_bits_per_dim", "elbo_bits_per_dim_stderr",
    "active_units", "active_unit_threshold", "latent_dim", "posterior_mean_variance", "kl_per_dimension",
    "kl_total_correlation", "n_examples", "image_shape", "likelihood", "binarization", "binarization_seed",
    "checkpoint", "seed", "batch_size", "split", "dataset", "run_dir", "units", "seconds",
}


def run(script, *args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300)


def numbers(value):
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "shapes"
    result = run(FIT, *SMALL, "--run-dir", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_fit_puts_the_test_log_likelihood_in_the_metrics(run_dir):
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert {"elbo", "elbo_stderr", "reconstruction", "kl", "n_examples", "checkpoint"} <= set(test)
    assert test["iwae_samples"] == 3 and test["n_examples"] == 500 and test["checkpoint"] == "best-4"  # the best epoch, named by global step: 200 / 50
    assert math.isfinite(test["log_likelihood"]) and test["bits_per_dim"] > 0


def test_evaluate_writes_every_field_and_repeats_exactly(run_dir):
    args = dict(iwae_samples=20, batch_size=150, seed=7)
    result = run(EVALUATE, str(run_dir), "--iwae-samples", "20", "--batch-size", "150", "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert "log p(x), K=20" in result.stdout and "active units:" in result.stdout
    assert str(run_dir / "eval_test_iwae20.json") in result.stdout
    assert "evaluated 300/500 images, K=20" in result.stderr  # progress after each batch of 150
    first = json.loads((run_dir / "eval_test_iwae20.json").read_text())
    assert FIELDS <= set(first), FIELDS - set(first)
    assert all(math.isfinite(n) for n in numbers(first))
    assert first["iwae_samples"] == 20 and first["seed"] == 7 and first["batch_size"] == 150
    assert first["split"] == "test" and first["n_examples"] == 500 and first["checkpoint"] == "best-4"
    assert first["binarization"] == "fixed, seed 0" and first["binarization_seed"] == 0
    assert len(first["kl_per_dimension"]) == 2 and 0 <= first["active_units"] <= 2
    # The same evaluation again, in another process: the same numbers, bit for bit.
    result = run(EVALUATE, str(run_dir), "--iwae-samples", "20", "--batch-size", "150", "--seed", "7")
    assert result.returncode == 0, result.stderr
    again = json.loads((run_dir / "eval_test_iwae20.json").read_text())
    first.pop("seconds"), again.pop("seconds")
    assert first == again
    # In this process (TensorFlow set up by the test session, not by the
    # script), the same numbers to float32 round-off.
    here = evaluation.evaluate_run(str(run_dir), split="test", **args)
    for name in ("elbo", "reconstruction", "kl", "log_likelihood"):
        assert here[name] == pytest.approx(first[name], rel=1e-6)


def test_evaluate_run_on_another_split(run_dir):
    result = evaluation.evaluate_run(str(run_dir), split="validation", iwae_samples=2, batch_size=100,
                                     binarization_seed=5, max_examples=120)
    written = json.loads((run_dir / "eval_validation_iwae2_first120.json").read_text())
    assert result["file"] == str(run_dir / "eval_validation_iwae2_first120.json")
    assert dict(written, file=result["file"]) == json.loads(json.dumps(result))
    assert written["split"] == "validation" and written["n_examples"] == 120  # of 250: 10% of 2500 shapes
    assert written["binarization"] == "fixed, seed 5" and written["binarization_seed"] == 5


def test_user_errors_are_one_line(tmp_path, run_dir):
    result = run(EVALUATE, str(tmp_path / "nowhere"), "--iwae-samples", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: run directory {tmp_path / 'nowhere'} does not exist; pass the folder fit.py printed")
    with pytest.raises(ValueError, match="iwae_samples must be a whole number of at least 1"):
        evaluation.evaluate_run(str(run_dir), iwae_samples=0)
    result = run(EVALUATE, str(run_dir), "--iwae-samples", "0")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: --iwae-samples must be at least 1 (got 0)")


def test_ais_and_bdmc_from_the_command_line(run_dir):
    result = run(EVALUATE, str(run_dir), "--estimator", "ais", "--ais-steps", "50", "--ais-chains", "4",
                 "--bdmc", "20", "--max-examples", "100", "--seed", "3")
    assert result.returncode == 0, result.stderr
    path = run_dir / "eval_test_ais50x4_first100.json"
    assert f"written to {path}" in result.stdout
    assert "log p(x), AIS T=50, C=4" in result.stdout and "BDMC on 20 simulated images" in result.stdout
    assert "AIS, T=50, C=4: 100/100 images" in result.stderr and "s left)" in result.stderr
    written = json.loads(path.read_text())
    assert written["estimator"] == "ais" and written["n_examples"] == 100 and "iwae_samples" not in written
    assert {"num_steps": 50, "num_chains": 4, "num_leapfrog_steps": 10, "schedule": "sigmoid",
            "initial": "posterior"}.items() <= written["ais"].items()
    assert 0 < written["ais"]["acceptance"] <= 1 and written["ais_seconds"] > 0
    assert all(math.isfinite(n) for n in numbers(written))
    bdmc = written["bdmc"]
    assert bdmc["examples"] == 20 and bdmc["gap"] == pytest.approx(bdmc["upper"] - bdmc["lower"])
    assert bdmc["gap"] > -3 * bdmc["gap_stderr"]
    # AIS is above the ELBO, and (50 steps) above the importance-weighted bound of 5 samples.
    assert written["log_likelihood"] > written["elbo"]
    iwae = evaluation.evaluate_run(str(run_dir), iwae_samples=5, max_examples=100, seed=3)
    error = math.hypot(written["log_likelihood_mc_stderr"], iwae["log_likelihood_mc_stderr"])
    assert written["log_likelihood"] > iwae["log_likelihood"] - 3 * error
    assert os.path.exists(run_dir / "eval_test_iwae5_first100.json")  # beside the AIS result, not over it


def test_an_evaluation_of_years_is_refused_before_the_model_loads(run_dir):
    result = run(EVALUATE, str(run_dir), "--iwae-samples", "1000000000")
    # Exactly one line: TensorFlow's start-up messages are silenced (probvae.cli.common.QuietTensorFlow).
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --iwae-samples 1000000000 on 500 images means 5e+11 decoder passes, more than 1e+11 (K = 5000 on "
        "10,000 images is 5e+07): days to years of computing; ask for less, or pass --force to run it anyway"]
    with pytest.raises(ValueError, match=r"AIS settings \(num_steps x num_chains x num_leapfrog_steps\) on 500 "
                                         r"images means 4.8e\+11 decoder passes.*pass force=True"):
        evaluation.evaluate_run(str(run_dir), estimator="ais",
                                ais=evaluation.AISSettings(num_steps=100_000, num_chains=320))
