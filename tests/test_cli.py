"""One command-line surface: every command has --version, --import and
one-line errors naming the command as it was called; fit's --help states
every default; the console command lists every command."""

import os
import subprocess
import sys

import pytest

from probvae import __version__
from probvae.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"fit": "fit.py", "evaluate": "evaluate.py", "inspect": "inspect_run.py", "bench": "bench.py",
           "compare": "compare.py", "export": "export.py"}


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_every_command_has_a_script_and_a_version():
    assert set(SCRIPTS) == set(cli_main.COMMANDS)
    for name, script in SCRIPTS.items():
        result = run(os.path.join(ROOT, "scripts", script), "--version")
        assert result.returncode == 0 and result.stdout.strip() == f"probvae {__version__}", (name, result.stderr)
    result = run("-m", "probvae.cli.main", "--help")
    assert all(name in result.stdout for name in SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_command_names_itself_in_its_usage_and_its_errors(name):
    script = SCRIPTS[name]
    for args, prog in [((os.path.join(ROOT, "scripts", script),), script),
                       (("-m", "probvae.cli.main", name), f"probvae {name}"),
                       (("-c", "from probvae.cli.main import main; main()", name), f"probvae {name}")]:
        usage = run(*args, "--help")
        assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {prog} [-h] [--version]"), usage.stdout
        assert "--import MODULE" in usage.stdout
        error = run(*args, "--no-such-flag")  # (or a missing RUN_DIR first)
        lines = error.stderr.splitlines()
        assert error.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), error.stderr
        assert lines[0].endswith(f"; see {prog} --help"), lines[0]


def test_import_takes_a_file_or_a_module_before_the_flags_are_made(tmp_path):
    """--import (repeatable, comma-separated) registers before fit builds its choices from the registries."""
    for index, name in enumerate(["first", "second", "third"]):
        (tmp_path / f"{name}.py").write_text(
            f"from probvae.registry import OPTIMIZERS\nOPTIMIZERS.register('sgd_{index}', 'tf_keras.optimizers:SGD')\n")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, str(tmp_path)])}
    result = subprocess.run([sys.executable, "-m", "probvae.cli.main", "fit", "--import", "first.py,second",
                             "--optimizer", "sgd_2", "--import", "third", "--dataset", "shapes", "--dry-run"],
                            capture_output=True, text=True, timeout=300, env=environment, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert '"optimizer": "sgd_2"' in result.stdout and '"module": "third"' in result.stdout
    missing = run("-m", "probvae.cli.main", "evaluate", "somewhere", "--import", "no_such_module_xyz")
    assert missing.returncode == 2 and missing.stderr.splitlines() == [
        "error: cannot import no_such_module_xyz: no module of that name on the path; give its file (--import "
        "path/to/no_such_module_xyz.py), add its folder to PYTHONPATH, or install the package that provides it"]


def option_help(text, flag):
    """The help of one option in argparse's --help output: its line and the deeper-indented ones after it."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"  {flag} ") or line.strip() == flag or line.startswith(f"  {flag},"):
            entry = [line]
            for following in lines[index + 1:]:
                if not following.startswith("    ") or following.strip().startswith("--"):
                    break
                entry.append(following)
            return " ".join(" ".join(entry).split())
    return ""


def test_fit_help_states_the_defaults_of_the_config_flags():
    text = run(os.path.join(ROOT, "scripts", "fit.py"), "--help").stdout
    for flag, default in [("--epochs", "100"), ("--batch-size", "100"), ("--latent-dim", "40"),
                          ("--arch", "gated"), ("--lr-schedule", "plateau"), ("--kl-warmup-epochs", "10"),
                          ("--seed", "0"), ("--hidden-units", "mlp: 512,256; gated: 300,300")]:
        part = option_help(text, flag)
        assert f"default: {default}" in part or f"default {default}" in part, (flag, part)


@pytest.mark.parametrize("script", ["evaluate.py", "inspect_run.py"])
def test_the_readers_take_a_data_dir(script):
    result = run(os.path.join(ROOT, "scripts", script), "--help")
    assert "--data-dir" in result.stdout


def test_a_command_process_loads_tf_keras_as_tf_keras_and_not_keras_3(monkeypatch):
    from probvae.cli import common

    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    common.prepare_process([])
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")  # the user's choice stands
    common.prepare_process([])
    assert os.environ["TF_USE_LEGACY_KERAS"] == "0"

    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment["PYTHONPATH"] = ROOT
    result = subprocess.run([sys.executable, "-c", (
        "import sys; from probvae.cli import common; common.prepare_process([]); import tensorflow as tf; "
        "from probvae._keras import keras; "
        "print(tf.keras.__name__, tf.keras.layers.Dense is keras.layers.Dense, 'keras.src' in sys.modules)")],
        capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr
    name, same, keras_3 = result.stdout.split()
    assert name.startswith("tf_keras") and same == "True" and keras_3 == "False", result.stdout
