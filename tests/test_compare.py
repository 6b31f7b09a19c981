"""probvae compare: runs side by side, from their files alone."""

import os
import subprocess
import sys

import pytest

from probvae import runs
from probvae.analysis import compare
from probvae.config import RunConfig
from probvae.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARE = os.path.join(ROOT, "scripts", "compare.py")


def fake_run(path, config, validation, test=None, evaluations=()):
    os.makedirs(path)
    runs.save_config(str(path), config)
    epochs = [{"epoch": i + 1, "seconds": 30.0, "validation": {"elbo": v}, "train": {"elbo": v - 1}}
              for i, v in enumerate(validation)]
    metrics = {"epochs": epochs}
    if test is not None:
        metrics.update(test=test, train_seconds=30.0 * len(epochs))
    runs.write_json(str(path / runs.METRICS_FILE), metrics)
    for result in evaluations:
        runs.write_json(str(path / result["name"]), {k: v for k, v in result.items() if k != "name"})
    return str(path)


@pytest.fixture
def three_runs(tmp_path):
    base = RunConfig().replace(data={"dataset": "shapes"})
    test = {"elbo": -240.0, "log_likelihood": -236.5, "log_likelihood_stderr": 0.8, "iwae_samples": 100}
    evaluation = {"split": "test", "n_examples": 500, "elbo": -240.1, "log_likelihood_stderr": 0.8}
    return [
        fake_run(tmp_path / "a", base, [-260.0, -250.0], test),
        fake_run(tmp_path / "b", base.replace(train={"lr_schedule": "constant", "epochs": 3}), [-262.0, -251.0, -248.0],
                 test, evaluations=[
                     dict(evaluation, name="eval_test_iwae5000.json", estimator="iwae", iwae_samples=5000,
                          log_likelihood=-236.0),
                     dict(evaluation, name="eval_test_ais1000x16.json", estimator="ais",
                          ais={"num_steps": 1000, "num_chains": 16}, log_likelihood=-235.8),
                     dict(evaluation, name="eval_test_iwae9000_first100.json", estimator="iwae", iwae_samples=9000,
                          log_likelihood=-200.0, max_examples=100)]),
        fake_run(tmp_path / "c", base.replace(model={"latent_dim": 8}), [-270.0]),  # still training, no test yet
    ]


def test_the_table_shows_the_differences_and_the_best_estimate_of_each_run(three_runs):
    comparison = compare.compare_runs(three_runs)
    # lr_plateau_* fields exist only for the plateau schedule: not differences in themselves.
    assert comparison.differing == ["model.latent_dim", "train.epochs", "train.lr_schedule"]
    assert comparison.markdown().splitlines() == [
        "| run | model.latent_dim | train.epochs | train.lr_schedule | test ELBO | test NLL | estimator | epochs | "
        "train time (min) |",
        "|---|---|---|---|---|---|---|---|---|",
        "| a | 40 | 100 | plateau | -240.00 | 236.50 ± 0.80 | K=100 | 2 | 1.0 |",
        "| b | 40 | 3 | constant | -240.10 | 235.80 ± 0.80 | AIS T=1000, C=16 | 3 | 1.5 |",
        "| c | 8 | 100 | plateau |  |  |  | 1 | 0.5 |",
    ]
    assert comparison.csv().splitlines()[2].startswith("b,40,3,constant,-240.10,235.80 ± 0.80,")
    assert comparison.summaries[1].source == "eval_test_ais1000x16.json"


def test_the_command_prints_the_table_and_writes_the_csv_and_the_curves(three_runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # -X importtime lists every module the command imports, on stderr.
    result = subprocess.run([sys.executable, "-X", "importtime", COMPARE, *three_runs, "--csv", str(out / "t.csv"),
                             "--plot", str(out / "curves.png")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time")}
    assert "probvae.analysis.compare" in imported and "tensorflow" not in imported  # files alone, in a moment
    assert result.stdout.splitlines()[0].startswith("| run | model.latent_dim |")
    assert f"table written to {out / 't.csv'}" in result.stdout
    assert f"validation curves drawn to {out / 'curves.png'}" in result.stdout
    assert (out / "t.csv").read_text().startswith("run,model.latent_dim") and (out / "curves.png").stat().st_size > 0
    result = subprocess.run([sys.executable, COMPARE, str(tmp_path / "nowhere")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: run directory {tmp_path / 'nowhere'} does not exist; pass the folder fit.py printed"]
    with pytest.raises(UserError, match="give one or more run directories"):
        compare.compare_runs([])
