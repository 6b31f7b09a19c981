"""scripts/inspect_run.py end to end on a run of the built-in shapes dataset."""

import json
import os
import subprocess
import sys

import pytest
import scipy.stats
from PIL import Image
from test_plotting import picture

from probvae import data, runs
from probvae.analysis import inspection, report
from probvae.errors import UserError

from conftest import command_here

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSPECT = os.path.join(ROOT, "scripts", "inspect_run.py")


def run(script, *args):
    """The script in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "shapes")
    result = command_here("fit", "--dataset", "shapes", "--arch", "mlp", "--latent-dim", "2", "--epochs", "1",
                 "--max-train-examples", "200", "--batch-size", "50", "--run-dir", run_dir, "--snapshot-latents",
                 "--no-jit-compile")  # without XLA: compiling would take longer than these four steps
    assert result.returncode == 0, result.stderr
    return run_dir


def test_fit_snapshot_option_writes_the_animation(shapes_run):
    gif = os.path.join(shapes_run, "latent_evolution", "latent_evolution.gif")
    with Image.open(gif) as image:
        assert image.n_frames == 1


def test_inspect_turns_a_run_into_pictures(shapes_run, tmp_path):
    out = str(tmp_path / "plots")
    result = command_here("inspect", shapes_run, "--split", "validation", "--max-examples", "120", "--examples", "3",
                          "5", "--grid-size", "6", "--grid-range", "4", "--seed", "4", "--out", out)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split()
    assert printed[-1] == os.path.join(out, "index.html") and all(os.path.exists(p) for p in printed)
    pictures = [p for p in printed if p.endswith(".png")]
    assert [os.path.basename(p) for p in pictures] == [
        "latent_marginals.png", "latent_summary.png", "posterior.png", "reconstructions.png", "prior_samples.png",
        "latent_scatter.png", "manifold.png", "manifold_range.png", "interpolation.png", "training_curves.png"]
    for path in pictures:
        picture(path)
    index = open(os.path.join(out, "index.html")).read()
    for path in pictures:
        assert f"src='{os.path.relpath(path, out)}'" in index
    gif = os.path.join(shapes_run, "latent_evolution", "latent_evolution.gif")
    assert gif in printed and f"src='{os.path.relpath(gif, out)}'" in index and index.count("<img") == 11

    # The KS statistics in the JSON are those of the aggregate-posterior samples, as scipy computes them.
    values = json.load(open(os.path.join(out, "latent_marginals.json")))
    assert values["n_samples"] == 120 and values["split"] == "validation"
    model = runs.load_run(shapes_run)
    images = data.load_dataset("shapes", max_train_examples=200).x_validation[:120]
    samples = inspection.latent_marginals(model, model.prepare_inputs(images).numpy(), seed=4).samples
    assert [d["dim"] for d in values["dims"]] == [0, 1] and values["plot_dims"] == [0, 1]
    for u, entry in enumerate(values["dims"]):
        assert entry["ks_statistic"] == pytest.approx(scipy.stats.kstest(samples[:, u], "norm").statistic, abs=1e-6)
        assert entry["mean"] == pytest.approx(samples[:, u].mean(), abs=1e-6)


def test_inspect_errors_are_one_line(tmp_path):
    result = run(INSPECT, str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: run directory {tmp_path / 'nowhere'} does not exist; pass the folder fit.py printed"]


def test_an_output_path_that_is_a_file_is_refused_before_any_work(shapes_run, tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("kept")
    with pytest.raises(UserError, match=f"output folder {target} is a file; pass a folder path for the pictures"):
        report.inspect_run(str(shapes_run), out_dir=str(target), log=lambda line: None)
    assert target.read_text() == "kept"
