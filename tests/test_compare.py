"""probvae compare: runs side by side, from their files alone."""

import os
import re
import subprocess
import sys

import pytest

from probvae import runs
from probvae.analysis import compare
from probvae.config import RunConfig
from probvae.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARE = os.path.join(ROOT, "scripts", "compare.py")


def fake_run(path, config, validation, test=None, evaluations=(), cpu_seconds=None, bound_samples=0):
    os.makedirs(path)
    runs.save_config(str(path), config)
    epochs = [{"epoch": i + 1, "seconds": 30.0, "validation": {"elbo": v}, "train": {"elbo": v - 1}}
              for i, v in enumerate(validation)]
    for epoch in epochs if bound_samples else ():  # trained on the IWAE bound: it is validated too
        epoch["validation"].update(iwae_bound=epoch["validation"]["elbo"] + 2.0, iwae_samples=bound_samples)
    for epoch, cpu in zip(epochs, cpu_seconds or ()):
        if cpu is not None:  # None: an epoch trained by a version that did not record CPU time
            epoch["cpu_seconds"] = cpu
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
        fake_run(tmp_path / "a", base, [-260.0, -250.0], test, cpu_seconds=[3600.0, 1800.0]),
        # CPU time in its newer epochs only (resumed by a version that records it): unknown in all.
        fake_run(tmp_path / "b", base.replace(train={"lr_schedule": "constant", "epochs": 3}), [-262.0, -251.0, -248.0],
                 test, cpu_seconds=[None, 60.0, 60.0], evaluations=[
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
        "| run | model.latent_dim | train.epochs | train.lr_schedule | test ELBO | test NLL | estimator | checkpoint | "
        "epochs | train time (min) | train CPU (h) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| a | 40 | 100 | plateau | -240.00 | 236.50 ± 0.80 | K=100 |  | 2 | 1.0 | 1.50 |",
        "| b | 40 | 3 | constant | -240.10 | 235.80 ± 0.80 | AIS T=1000, C=16 |  | 3 | 1.5 |  |",
        "| c | 8 | 100 | plateau |  |  |  |  | 1 | 0.5 |  |",
    ]
    assert comparison.csv().splitlines()[2].startswith("b,40,3,constant,-240.10,235.80 ± 0.80,")
    assert comparison.summaries[1].source == "eval_test_ais1000x16.json"


def checkpoint_files(run_dir, *names):
    folder = os.path.join(run_dir, runs.CHECKPOINT_DIR)
    os.makedirs(folder, exist_ok=True)
    for name in names:
        for suffix in (".index", ".data-00000-of-00001"):
            open(os.path.join(folder, name + suffix), "w").close()


def test_a_run_shows_the_evaluation_of_its_best_checkpoint(tmp_path):
    """An evaluation of an older checkpoint (written beside the best one's,
    not over it) is not the run's number, however many samples it used."""
    base = RunConfig().replace(data={"dataset": "shapes"})
    evaluation = {"split": "test", "n_examples": 500, "estimator": "iwae", "log_likelihood_stderr": 0.8}
    run = fake_run(tmp_path / "a", base, [-260.0], evaluations=[
        dict(evaluation, name="eval_test_iwae3.json", iwae_samples=3, checkpoint="best-40", log_likelihood=-236.0,
             elbo=-240.0),
        dict(evaluation, name="eval_test_iwae50_ckpt-15.json", iwae_samples=50, checkpoint="ckpt-15",
             log_likelihood=-250.0, elbo=-255.0),
        dict(evaluation, name="eval_test_iwae3_seed7.json", iwae_samples=3, checkpoint="best-40", seed=7,
             log_likelihood=-236.1, elbo=-240.1)])
    checkpoint_files(run, "ckpt-15", "ckpt-40", "best-40")
    (summary,) = compare.compare_runs([run]).summaries
    assert (summary.source, summary.checkpoint, summary.log_likelihood) == ("eval_test_iwae3.json", "best-40", -236.0)
    assert "| K=3 | best-40 |" in compare.compare_runs([run]).markdown()
    # Without a best-epoch checkpoint the run's model is its newest checkpoint.
    os.remove(os.path.join(run, "checkpoints", "best-40.index"))
    checkpoint_files(run, "ckpt-15")
    os.remove(os.path.join(run, "checkpoints", "ckpt-40.index"))
    assert compare.model_checkpoint(run) == "ckpt-15"
    assert compare.summarise_run(run).source == "eval_test_iwae50_ckpt-15.json"


@pytest.mark.parametrize("content, message", [
    ("[]", "is not an evaluation result|not a number"),
    ('{"split": "test", "estimator": "ais", "log_likelihood": -3.0}', "settings of its ais estimator are missing"),
    ('{"split": "test", "iwae_samples": "many", "log_likelihood": -3.0}', "iwae_samples is 'many', not a number"),
])
def test_a_damaged_evaluation_file_is_one_line_naming_it(tmp_path, content, message):
    run = fake_run(tmp_path / "a", RunConfig().replace(data={"dataset": "shapes"}), [-260.0])
    (tmp_path / "a" / "eval_test_iwae5.json").write_text(content)
    if content == "[]":  # not a JSON object: not an evaluation file at all, left out
        assert compare.summarise_run(run).source == ""
        return
    with pytest.raises(UserError, match=message) as error:
        compare.summarise_run(run)
    assert "eval_test_iwae5.json" in str(error.value)


def test_the_curves_add_the_bound_a_run_was_trained_on(tmp_path, monkeypatch):
    base = RunConfig().replace(data={"dataset": "shapes"})
    elbo_run = fake_run(tmp_path / "elbo", base, [-260.0, -250.0])
    iwae_run = fake_run(tmp_path / "iwae", base.replace(train={"objective": "iwae", "train_samples": 10}),
                        [-252.0, -249.0, -248.5], bound_samples=10)
    curves, bounds = compare.compare_runs([elbo_run, iwae_run]).curves()
    assert curves == {"elbo": [-260.0, -250.0], "iwae": [-252.0, -249.0, -248.5]}
    assert bounds == {"iwae": ("iwae, IWAE bound (K=10)", (-250.0, -247.0, -246.5))}
    # Drawn as a dashed line beside its run's ELBO.
    from probvae.analysis import plot_curves, plotting

    assert os.path.getsize(plotting.plot_validation_curves(curves, str(tmp_path / "c.png"), bounds)) > 0
    drawn = []
    monkeypatch.setattr(plot_curves, "save", lambda figure, path: drawn.append(figure) or path)
    plotting.plot_validation_curves(curves, str(tmp_path / "d.png"), bounds)
    lines = {line.get_label(): line for line in drawn[0].axes[0].get_lines()}
    assert sorted(lines) == ["elbo", "iwae", "iwae, IWAE bound (K=10)"]
    dashed, solid = lines["iwae, IWAE bound (K=10)"], lines["iwae"]
    assert (dashed.get_linestyle(), solid.get_linestyle()) == ("--", "-")
    assert list(dashed.get_ydata()) == [-250.0, -247.0, -246.5]
    assert dashed.get_color() == solid.get_color() != lines["elbo"].get_color()


def test_damaged_metrics_are_one_line(tmp_path):
    run = fake_run(tmp_path / "a", RunConfig().replace(data={"dataset": "shapes"}), [-260.0])
    runs.write_json(os.path.join(run, runs.METRICS_FILE), {"epochs": [{"epoch": 1, "validation": {}}]})
    with pytest.raises(UserError, match="an epoch without a numeric validation ELBO"):
        compare.summarise_run(run)
    runs.write_json(os.path.join(run, runs.METRICS_FILE), [])
    with pytest.raises(UserError, match="is not a metrics file"):
        compare.summarise_run(run)


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


@pytest.mark.parametrize("plot, message", [
    ("curves.xyz", r"unknown picture format 'xyz'; end the name with one of: \.png"),
    ("curves", r"unknown picture format '\(none\)'"),
    ("missing/curves.png", r"cannot write missing/curves.png: .*missing is not a folder this user can write in"),
    ("a-file/curves.png", r"cannot write a-file/curves.png: .*a-file is not a folder this user can write in"),
])
def test_a_plot_that_cannot_be_written_is_one_line_and_nothing_written(three_runs, tmp_path, plot, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a-file").write_text("")
    result = subprocess.run([sys.executable, COMPARE, *three_runs, "--csv", "t.csv", "--plot", plot],
                            capture_output=True, text=True, timeout=300, cwd=str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and re.search(message, lines[0]), result.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["a-file"]  # neither the CSV nor the plot
