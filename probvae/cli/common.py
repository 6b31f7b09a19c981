"""What every command-line entry point shares: one way of reporting errors
(one line on stderr, exit code 2, the traceback only with --debug), an
argument parser whose mistakes are reported the same way, and the flags of
registered components (`probvae.registry`)."""

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import os
import platform
import sys
import traceback
from typing import Callable, Sequence, Tuple

from probvae.errors import TrainingInterrupted, UserError

__all__ = ["ArgumentParser", "USAGE_ERROR", "add_registry_arguments", "image_shape_argument", "prefer_onednn",
           "prepare_process", "QuietTensorFlow", "stderr_silenced", "require_positive", "run", "show_config_defaults"]

USAGE_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are `UserError`s: one line
    naming the argument and pointing at --help, instead of a usage block;
    every command has --version, --verbose and --debug."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from probvae import __version__

        self.add_argument("--version", action="version", version=f"probvae {__version__}")
        self.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up messages")
        self.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's start-up messages")

    def error(self, message):
        raise UserError(f"{message}; see {self.prog} --help")


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def show_config_defaults(parser: argparse.ArgumentParser, sections: dict) -> None:
    """Append "(default: V)" to the help of each flag that sets a config field
    (`sections`: {"train": ("epochs", ...), ...}), V from a default `RunConfig`,
    unless the help already states its default. The flags themselves default
    to None, so that only the flags given override a preset or a resumed run."""
    from probvae.config import RunConfig

    config = RunConfig()
    for action in parser._actions:
        for section, names in sections.items():
            if action.dest in names:
                value = getattr(getattr(config, section), action.dest, None)
                if value is not None and "default" not in (action.help or ""):
                    action.help = f"{action.help} (default: {_shown(value)})" if action.help else \
                        f"default: {_shown(value)}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def prepare_process(argv: Sequence[str] = ()) -> None:
    """What a command does before TensorFlow is imported: TensorFlow's C++
    log level (warnings and above, unless the user chose), oneDNN kernels,
    `tf.keras` as tf_keras (`TF_USE_LEGACY_KERAS=1` unless the user chose:
    the commands use tf_keras, tfp.layers' Keras, and TensorFlow otherwise
    imports Keras 3 as it starts, 1.1 of its 4.6 CPU seconds here), and,
    unless `--verbose` or `--debug` is among `argv`, silence for the lines
    TensorFlow's C++ libraries print while they load and look for devices
    (absl's banner, oneDNN and CPU-feature notes, "failed call to cuInit" on
    a machine without a GPU): see `QuietTensorFlow`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    prefer_onednn()
    if not {"--verbose", "--debug"} & set(argv) and not any(isinstance(f, QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlow())


@contextlib.contextmanager
def stderr_silenced():
    """Send file descriptor 2 (C++ and Python alike) to the null device inside the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class QuietTensorFlow(importlib.abc.MetaPathFinder):
    """An import hook: the first `import tensorflow` (wherever it happens)
    runs with stderr silenced, and lists the devices before it returns, so
    the start-up lines of TensorFlow's C++ libraries are never printed. The
    hook removes itself after that one import."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            with stderr_silenced():
                execute(module)
                module.config.list_physical_devices()  # where a CPU-only machine complains about CUDA

        spec.loader.exec_module = exec_module
        return spec


def prefer_onednn() -> None:
    """Ask TensorFlow for its oneDNN CPU kernels on x86-64 unless the user chose
    (TF_ENABLE_ONEDNN_OPTS). Call it before TensorFlow is imported.

    TensorFlow turns them on by default only on some Intel CPUs; on the AMD
    CPU of docs/performance.md they train the conv model 1.35x faster per CPU
    second, with the same results from run to run.
    """
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def run(main: Callable[[], object], argv: Sequence[str] = None) -> None:
    """Run `main`, turning user errors into one line on stderr and exit code 2.

    An interrupted training run exits with 128 + the signal number after
    printing how to resume it; a second Ctrl-C (KeyboardInterrupt) exits 130.
    """
    argv = sys.argv if argv is None else argv
    debug = "--debug" in argv
    try:
        main()
    except TrainingInterrupted as error:
        if debug:
            traceback.print_exc()
        print(f"interrupted: {_one_line(error)}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except UserError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def require_positive(args: argparse.Namespace, *names: str) -> None:
    """Raise a UserError naming the flag if one of `names` was given below 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")


def image_shape_argument(text: str) -> tuple:
    """argparse type for "H,W,C" (e.g. 64,64,3) -> (64, 64, 3)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected height,width,channels such as 64,64,3, got {text!r}")
    return shape


def latent_sizes_argument(text: str):
    """argparse type for "32" -> 32 or "40,40" -> (40, 40) (one size per latent level)."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 32, or one per latent layer such as "
                                         f"40,40, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def _typed(parse: Callable, name: str) -> Callable:
    """An argparse type from a field's parser: a ValueError becomes an argparse error."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name
    return convert


def add_registry_arguments(group, registries: dict) -> Tuple[str, ...]:
    """Add a choice flag per registry (--prior, ...) and a flag per field its
    entries declare (--prior-components, ...) to `group`; return the config
    field names they set. Choices, summaries and defaults come from the registry."""
    names = []
    for option, registry in registries.items():
        names.append(option)
        group.add_argument(f"--{option.replace('_', '-')}", choices=registry.names(),
                           help=registry.describe())
    seen = set()
    for registry in registries.values():
        for entry in registry.entries():
            for field in entry.fields:
                if field.name in seen:
                    continue
                seen.add(field.name)
                names.append(field.name)
                flag = f"--{field.name.replace('_', '-')}"
                defaults = {e.name: f.default for r in registries.values() for e in r.entries()
                            for f in e.fields if f.name == field.name}
                shown = lambda value: ",".join(map(str, value)) if isinstance(value, tuple) else str(value)  # noqa: E731
                if len(set(map(shown, defaults.values()))) == 1:
                    text = f"{field.help} ({', '.join(defaults)}; default {shown(field.default) or 'none'})"
                else:
                    text = f"{field.help} (default " + "; ".join(
                        f"{name}: {shown(value)}" for name, value in defaults.items()) + ")"
                if isinstance(field.default, bool):
                    group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
                elif field.parse is not None:
                    group.add_argument(flag, type=_typed(field.parse, field.name), choices=field.choices, help=text)
    return tuple(names)
