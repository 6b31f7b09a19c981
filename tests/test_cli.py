"""One command-line surface: every command has --version and one-line errors;
fit's --help states every default; the console command lists every command."""

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
