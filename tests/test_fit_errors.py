"""Bad input to scripts/fit.py: one line naming the problem and the fix, exit
code 2, no traceback, and every file that was there left as it was.

The cases run fit.py's `main` in this process through `probvae.cli.common.run`, the
code path the script takes (the subprocess tests in test_fit_script.py cover
the script itself), so many cases stay cheap.
"""

import importlib.util
import json
import os
import re
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from probvae.cli import common
from probvae.config import RunConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("fit_script", os.path.join(ROOT, "scripts", "fit.py"))
fit_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fit_script)

TINY = ["--max-train-examples", "12", "--batch-size", "4", "--epochs", "1", "--arch", "mlp", "--latent-dim", "2"]


def run_cli(argv):
    """fit.py's exit code for `argv` (0 if main returned)."""
    try:
        common.run(lambda: fit_script.main(argv), argv)
    except SystemExit as exit:
        return exit.code
    return 0


def snapshot(root):
    """Every folder and file under `root`, with the files' bytes."""
    found = {}
    for folder, _, files in os.walk(root):
        found[os.path.relpath(folder, root)] = None
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, root)] = stream.read()
    return found


def npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def images(n, shape=(8, 8), dtype=np.uint8, value=None):
    data = np.random.default_rng(0).integers(0, 256, (n,) + shape).astype(dtype)
    return data if value is None else np.full((n,) + shape, value, dtype)


def saved_run(tmp, **changes):
    """A run directory holding only a config.json (shapes, mlp)."""
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    values = RunConfig().replace(data={"dataset": "shapes", "max_train_examples": 12},
                                 model={"arch": "mlp", "latent_dim": 2, "image_shape": (28, 28, 1)},
                                 train={"epochs": 1, "batch_size": 4}).to_dict()
    for key, value in changes.items():
        section, name = key.split(".")
        values[section][name] = value
    (run / "config.json").write_text(json.dumps(values))
    return run


def with_checkpoint_files(tmp, index=b"not an index", data=b"not data", state=True):
    run = saved_run(tmp)
    (run / "checkpoints" / "ckpt-3.index").write_bytes(index)
    (run / "checkpoints" / "ckpt-3.data-00000-of-00001").write_bytes(data)
    if state:
        (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    return run


def npz_run_with_new_channels(tmp):
    """A run trained on 8x8 grey npz images whose file now holds colour images."""
    source = npz(tmp / "data.npz", x_train=images(10, (8, 8, 3)), x_test=images(2, (8, 8, 3)))
    run = saved_run(tmp, **{"data.dataset": source, "model.image_shape": [8, 8, 1], "data.max_train_examples": None})
    return ["--resume", str(run)]


def missing_checkpoint(tmp):
    run = with_checkpoint_files(tmp)
    for name in ("ckpt-3.index", "ckpt-3.data-00000-of-00001"):
        os.remove(run / "checkpoints" / name)
    return ["--resume", str(run)]


def garbage_npz(tmp):
    (tmp / "bad.npz").write_bytes(b"\x00garbage")
    return ["--dataset", f"npz:{tmp}/bad.npz"]


def file_as_run_dir(tmp):
    (tmp / "afile").write_text("x")
    return ["--dataset", "shapes", "--run-dir", str(tmp / "afile")]


def plain_folder(tmp):
    (tmp / "plain").mkdir()
    return ["--resume", str(tmp / "plain")]


def huge_folder_images(tmp):
    from PIL import Image

    (tmp / "pictures").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(tmp / "pictures" / f"{i}.png")
    return ["--dataset", f"folder:{tmp / 'pictures'}", "--image-shape", "100000,100000,3", "--dry-run"]


def run_without_config(tmp):
    (saved_run(tmp) / "config.json").unlink()
    return ["--resume", str(tmp / "run")]


def config_text(text):
    def setup(tmp):
        (saved_run(tmp) / "config.json").write_text(text)
        return ["--resume", str(tmp / "run")]
    return setup


CASES = {
    "unknown dataset": (lambda t: ["--dataset", "imagenet"], r"unknown dataset 'imagenet'; choose one of: "
                        r"fashion_mnist, mnist, kmnist, cifar10, shapes, celeb_a, npz:PATH, folder:PATH"),
    "epochs below 1": (lambda t: ["--dataset", "shapes", "--epochs", "0"],
                       "epochs must be a whole number of at least 1"),
    "latent dim below 1": (lambda t: ["--dataset", "shapes", "--latent-dim", "-2"],
                           "latent_dim must be a whole number"),
    "negative beta": (lambda t: ["--dataset", "shapes", "--beta", "-0.5"], r"beta must be 0 or more \(got -0.5\)"),
    "learning rate not a number": (lambda t: ["--dataset", "shapes", "--learning-rate", "nan"],
                                   "learning_rate must be a finite number"),
    "negative seed": (lambda t: ["--dataset", "shapes", "--seed", "-3"],
                      r"seed must be a whole number in 0\.\.1073741823"),
    "not an integer": (lambda t: ["--epochs", "two"], r"argument --epochs: invalid int value: 'two'; see .* --help"),
    "unknown choice": (lambda t: ["--arch", "resnet"], r"argument --arch: invalid choice: 'resnet'"),
    "batch larger than the data": (lambda t: ["--dataset", "shapes", "--max-train-examples", "20",
                                              "--batch-size", "50"],
                                   "batch size 50 is larger than the 20 training examples; lower --batch-size"),
    "image shape the data do not have": (
        lambda t: ["--dataset", "shapes", "--image-shape", "8,8,3"],
        r"the model expects images of shape \(8, 8, 3\) but shapes has \(28, 28, 1\); "),
    "floats outside [0, 1]": (
        lambda t: ["--dataset", npz(t / "f.npz", x_train=images(10, dtype=np.float32, value=1.5),
                                    x_test=images(2, dtype=np.float32))],
        r"training images are floats outside \[0, 1\]; scale them to \[0, 1\] or pass uint8 0\.\.255"),
    "integers outside 0..255": (
        lambda t: ["--dataset", npz(t / "i.npz", x_train=images(10, dtype=np.int32, value=300),
                                    x_test=images(2, dtype=np.int32))],
        r"training images are integers outside 0\.\.255"),
    "empty npz arrays": (
        lambda t: ["--dataset", npz(t / "e.npz", x_train=images(0), x_test=images(0))], "has too few images"),
    "npz without test images": (lambda t: ["--dataset", npz(t / "m.npz", x_train=images(10))],
                                r"lacks array\(s\) x_test; it needs x_train and x_test"),
    "npz that is not an npz": (garbage_npz, r"cannot read .*bad.npz as .npz .*save it with numpy.savez"),
    "npz labels shorter than the images": (
        lambda t: ["--dataset", npz(t / "l.npz", x_train=images(10), y_train=np.arange(7), x_test=images(3))],
        r"y_train has shape \(7,\) but x_train holds 10 images; give one label per image"),
    "npz labels that are strings": (
        lambda t: ["--dataset", npz(t / "s.npz", x_train=images(10), x_test=images(3), y_test=np.array(["a"] * 3))],
        r"y_test holds <U1 values; labels must be whole numbers \(class indices\) or left out"),
    "npz that does not exist": (lambda t: ["--dataset", f"npz:{t}/none.npz"], "npz file .*none.npz does not exist"),
    "run directory holding a run": (lambda t: ["--dataset", "shapes", "--run-dir", str(saved_run(t))],
                                    r"already holds a run; pass --resume .*run to continue it, "
                                    r"--overwrite to replace it"),
    "run directory that is a file": (file_as_run_dir, "is a file; pass a folder path to --run-dir"),
    "images too large for memory": (
        huge_folder_images, r"images of shape 100000x100000x3 through the gated network and the diag posterior of "
                            r"40 latent dimensions need at least [\d.e+]+ GiB, more than this machine's [\d.]+ GiB; "
                            r"lower --batch-size, --latent-dim or --image-shape"),
    # A full covariance has d(d + 3)/2 parameters: 5e9 outputs of the posterior's dense layer here.
    "full posterior too large for memory": (
        lambda t: ["--dataset", "shapes", "--posterior", "full", "--latent-dim", "100000", "--dry-run"],
        r"the full posterior of 100000 latent dimensions need at least [\d.e+]+ GiB, more than this machine's "
        r"[\d.]+ GiB; .*or --posterior diag$"),
    "run directory name the filesystem cannot hold": (
        lambda t: ["--dataset", "shapes", "--dry-run", "--run-dir", str(t / ("x" * 300))],
        r"the name x{40}\.\.\. has 300 bytes, more than the filesystem's 255; choose a shorter --run-dir"),
    "run directory path the filesystem cannot hold": (
        lambda t: ["--dataset", "shapes", "--dry-run", "--run-dir", str(t.joinpath(*["y" * 200] * 25))],
        r"its path has \d+ bytes and the run's files would pass the filesystem's limit of 4096"),
    "resume and overwrite": (lambda t: ["--resume", str(saved_run(t)), "--overwrite"], "contradict each other"),
    "resume a missing folder": (lambda t: ["--resume", str(t / "gone")], "gone does not exist; pass the folder fit.py"),
    "resume a folder without a run": (plain_folder, "holds no config.json; start a new run there"),
    # Not "start a new run there", which would answer that it holds a run: name the way out and its cost.
    "resume a run whose config.json is gone": (
        run_without_config, r"holds a run without its config.json, .*restore that file, or start over with "
                            r"--run-dir .*run --overwrite \(deletes the run's checkpoints, metrics and logs\)"),
    "resume with contradicting flags": (lambda t: ["--resume", str(saved_run(t)), "--epochs", "4", "--beta", "1"],
                                        r"different configuration: its config.json has train.epochs 1 \(asked 4\); "
                                        "drop the contradicting flags"),
    "config from another version": (config_text(json.dumps({**RunConfig().to_dict(), "version": 99})),
                                    r"config.json: config version 99 is not supported by this probvae "
                                    r"\(it reads version 1\)"),
    "corrupt config": (config_text('{"data": '), "config.json is not readable JSON"),
    "config with a wrong field": (lambda t: ["--resume", str(saved_run(t, **{"model.latent_dim": "two"}))],
                                  r"config.json: latent_dim must be a whole number of at least 1 \(got 'two'\)"),
    "corrupt checkpoint": (lambda t: ["--resume", str(with_checkpoint_files(t))],
                           r"cannot restore checkpoint .*ckpt-3 .*corrupt .*or start again with --overwrite"),
    "missing checkpoint": (missing_checkpoint,
                           r"checkpoint .*ckpt-3 named in .*checkpoint is missing; restore its files or start again"),
    "init from a run of another model": (
        lambda t: ["--dataset", "shapes", *TINY[:-1], "3", "--init-from", str(saved_run(t))],
        r"cannot start from the weights of .*run: its config.json has model.latent_dim 2 \(this run 3\); drop the "
        r"contradicting flags"),
    "init from a run of another prior": (
        lambda t: ["--dataset", "shapes", *TINY, "--prior", "vamp", "--init-from", str(saved_run(t))],
        r"its config.json has model.prior 'standard_normal' \(this run 'vamp'\), model.prior_components None "
        r"\(this run 10\); drop"),
    "init from a run without weights": (
        lambda t: ["--dataset", "shapes", *TINY, "--init-from", str(saved_run(t))],
        r"no checkpoint in .*run/checkpoints; train the run \(fit.py\) first"),
    "init from a missing run": (lambda t: ["--dataset", "shapes", *TINY, "--init-from", str(t / "gone")],
                                r"--init-from .*gone: no such run directory; pass a folder fit.py wrote"),
    "init from the run itself": (
        lambda t: ["--dataset", "shapes", *TINY, "--init-from", str(t / "new-run")],
        r"--init-from names the run directory itself \(.*new-run\); to continue that run use --resume"),
    "images that no longer fit the run": (npz_run_with_new_channels,
                                          r"expects images of shape \(8, 8, 1\) but .* has \(8, 8, 3\)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_line_exit_2_and_touches_nothing(case, tmp_path, capsys):
    setup, expected = CASES[case]
    argv = list(setup(tmp_path))
    if "--resume" not in argv and "--run-dir" not in argv:
        argv += ["--run-dir", str(tmp_path / "new-run")]
    before = snapshot(tmp_path)
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(expected, lines[0]), lines[0]
    assert snapshot(tmp_path) == before


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert run_cli(["--dataset", "shapes", "--epochs", "0", "--debug", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: epochs must be")


def test_dry_run_checks_everything_and_writes_nothing(tmp_path, capsys):
    assert run_cli(["--dataset", "shapes", *TINY, "--run-dir", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "nothing was written" in out and '"image_shape": [\n      28' in out
    assert os.listdir(tmp_path) == []


# --- random command lines ----------------------------------------------------

# (valid values, invalid values) of each option.
VALUES = {
    "--dataset": (["shapes"], ["imagenet", "npz:/nonexistent.npz", "npz:", ""]),
    "--epochs": (["1", "2"], ["-1", "0", "x", "1.5"]),
    "--latent-dim": (["1", "2", "3"], ["-3", "0"]),
    "--batch-size": (["1", "5", "100000"], ["0", "-4"]),
    "--learning-rate": (["1e-3", "0.5", "1e30"], ["nan", "inf", "-1", "0"]),
    "--beta": (["0", "0.5", "1e-40"], ["-1", "inf"]),
    "--seed": (["0", "7"], ["-1", "99999999999", "abc"]),
    "--validation-fraction": (["0.5", "0.99"], ["0", "1.5", "nan"]),
    "--max-train-examples": (["5", "12", "40"], ["0", "-1"]),
    "--checkpoint-every": (["0", "1", "3"], ["-1"]),
    "--arch": (["conv", "mlp"], ["resnet"]),
    "--posterior": (["full", "diag"], ["flow"]),
    "--likelihood": (["bernoulli", "normal"], ["poisson"]),
    "--normal-scale": (["shared", "channel", "pixel"], ["none"]),
}
FLAGS = ["--skip-nonfinite", "--eager", "--overwrite"]
# What fit.py appends to train a few steps at most, with a step size that cannot diverge.
TRAIN_TAIL = ["--dataset", "shapes", "--epochs", "1", "--learning-rate", "1e-3"]


@st.composite
def command_lines(draw):
    """Options in random combinations; each value valid four times in five.
    --dataset is always given (the default, fashion_mnist, depends on the machine)."""
    argv = []
    for option, (valid, invalid) in VALUES.items():
        if option == "--dataset" or draw(st.booleans()):
            values = invalid if draw(st.integers(0, 4)) == 0 else valid
            argv += [option, draw(st.sampled_from(values))]
    argv += [flag for flag in FLAGS if draw(st.booleans())]
    # Most command lines only check; the others train a few steps at most.
    if draw(st.integers(0, 3)) < 3:
        argv.append("--dry-run")
    else:
        argv += TRAIN_TAIL + ["--max-train-examples", draw(st.sampled_from(["6", "12"])),
                              "--batch-size", draw(st.sampled_from(["3", "4"]))]
    return argv


INT_OPTIONS = {"--epochs", "--latent-dim", "--batch-size", "--seed", "--max-train-examples", "--checkpoint-every"}
CHOICES = {"--arch": ("mlp", "gated", "conv"), "--posterior": ("full", "diag"),
           "--likelihood": ("bernoulli", "normal", "continuous_bernoulli"),
           "--normal-scale": ("shared", "channel", "pixel")}
SHAPES_TRAIN_IMAGES = 2500  # the built-in shapes data: 2500 training and 500 test images


def _is_int(text):
    try:
        int(text)
    except ValueError:
        return False
    return True


def expected_problems(argv):
    """The problems fit.py must report for `argv`, each as a regex its one error
    line may match; empty if the command line is good (exit 0).

    argparse converts and checks the choices of every occurrence of an option,
    in order, and stops at the first bad one; the last occurrence of each option
    is its value; the config checks those values; the data checks come last."""
    pairs = [(argv[i], argv[i + 1]) for i in range(len(argv) - 1) if argv[i] in VALUES]
    for option, value in pairs:
        if value == "":
            return [rf"argument {option}: an empty value; give one or leave the argument out"]
        if option in INT_OPTIONS and not _is_int(value):
            return [rf"argument {option}: invalid int value: '{re.escape(value)}'"]
        if option in CHOICES and value not in CHOICES[option]:
            return [rf"argument {option}: invalid choice: '{re.escape(value)}'"]
    final = dict(pairs)
    number = lambda option, default: float(final.get(option, default))  # noqa: E731
    problems = []
    dataset = final["--dataset"]
    if dataset in ("imagenet", "npz:"):
        problems.append(rf"unknown dataset '{dataset}'; choose one of")
    for option, field in (("--epochs", "epochs"), ("--latent-dim", "latent_dim"), ("--batch-size", "batch_size"),
                          ("--max-train-examples", "max_train_examples")):
        if number(option, 1) < 1:
            problems.append(rf"{field} must be a whole number of at least 1 \(got {final[option]}\)")
    learning_rate = number("--learning-rate", 1e-3)
    if not np.isfinite(learning_rate):
        problems.append(r"learning_rate must be a finite number")
    elif learning_rate <= 0:
        problems.append(r"learning_rate must be positive")
    beta = number("--beta", 1.0)
    if not np.isfinite(beta):
        problems.append(r"beta must be a finite number")
    elif beta < 0:
        problems.append(r"beta must be 0 or more")
    if not 0 <= number("--seed", 0) < 2**30:
        problems.append(r"seed must be a whole number in 0\.\.1073741823")
    fraction = number("--validation-fraction", 0.1)
    if not np.isfinite(fraction):
        problems.append(r"validation_fraction must be a finite number")
    elif not 0 < fraction < 1:
        problems.append(r"validation_fraction must lie strictly between 0 and 1")
    if number("--checkpoint-every", 500) < 0:
        problems.append(r"checkpoint_every_steps must be a whole number of at least 0")
    if "--normal-scale" in final and final.get("--likelihood", "bernoulli") != "normal":
        problems.append(r"--normal-scale belongs to the likelihood normal \(--likelihood\), "
                        r"which this run does not use")
    if problems:
        return problems
    if dataset == "npz:/nonexistent.npz":
        return [r"npz file /nonexistent.npz does not exist"]
    train_images = SHAPES_TRAIN_IMAGES - max(1, int(round(fraction * SHAPES_TRAIN_IMAGES)))
    if "--max-train-examples" in final:
        train_images = min(train_images, int(final["--max-train-examples"]))
    batch_size = int(final.get("--batch-size", TrainConfig().batch_size))
    if batch_size > train_images:
        return [rf"batch size {batch_size} is larger than the {train_images} training examples; lower --batch-size"]
    return []


def test_expected_problems_reads_command_lines_as_argparse_and_the_config_do():
    dry = ["--dataset", "shapes", "--dry-run"]
    assert expected_problems(dry) == []
    assert expected_problems(["--dataset", "npz:", "--epochs", "x", "--dry-run"]) == [
        "argument --epochs: invalid int value: 'x'"]
    # The last value counts, once every value has parsed.
    assert expected_problems(["--dataset", "imagenet", "--learning-rate", "nan"] + TRAIN_TAIL) == []
    assert len(expected_problems(["--dataset", "npz:", "--beta", "-1", "--seed", "-1", "--dry-run"])) == 3
    assert expected_problems(["--dataset", "shapes", "--beta", "", "--dry-run"]) == [
        "argument --beta: an empty value; give one or leave the argument out"]
    assert expected_problems(["--dataset", "shapes", "--validation-fraction", "0.99", "--batch-size", "40",
                              "--dry-run"]) == [
        "batch size 40 is larger than the 25 training examples; lower --batch-size"]


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command_lines())
@example(argv=["--dataset", "shapes", "--dry-run"])
@example(argv=["--dataset", "npz:/nonexistent.npz", "--batch-size", "100000", "--dry-run"])
@example(argv=["--dataset", "shapes", "--learning-rate", "nan", "--checkpoint-every", "1"] + TRAIN_TAIL
         + ["--max-train-examples", "6", "--batch-size", "3"])
def test_any_command_line_runs_or_exits_2_naming_its_problem(argv, capsys):
    problems = expected_problems(argv)
    with tempfile.TemporaryDirectory() as root:
        run_dir = os.path.join(root, "run")
        code = run_cli(argv + ["--run-dir", run_dir])
        captured = capsys.readouterr()
        if problems:
            lines = captured.err.strip().splitlines()
            assert code == 2, (argv, problems, captured.err)
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
            assert any(re.search(problem, lines[0]) for problem in problems), (argv, problems, lines[0])
            assert not os.path.exists(run_dir)
        elif "--dry-run" in argv:
            assert code == 0, (argv, captured.err)
            assert f"dry run: the flags, data and run directory {os.path.abspath(run_dir)} are fine" in captured.out
            assert not os.path.exists(run_dir)
        else:
            assert code == 0, (argv, captured.err)
            with open(os.path.join(run_dir, "metrics.json")) as stream:
                metrics = json.load(stream)
            assert [e["epoch"] for e in metrics["epochs"]] == [1] and np.isfinite(metrics["test"]["elbo"])
