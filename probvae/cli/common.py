"""What every command-line entry point shares: one way of reporting errors
(one line on stderr, exit code 2, the traceback only with --debug), an
argument parser named after its command ("probvae fit", or "fit.py" run as a
script) whose mistakes are reported the same way ("...; see probvae fit
--help"), `--import MODULE` (the user's components, imported before any
flag or config is read: `import_components`), and the flags of registered
components (`probvae.registry`)."""

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import os
import platform
import sys
import traceback
from typing import Callable, Optional, Sequence, Tuple

from probvae.errors import TrainingInterrupted, UserError

__all__ = ["ArgumentParser", "USAGE_ERROR", "add_config_arguments", "component_of", "import_components",
           "prefer_onednn", "prepare_process", "QuietTensorFlow", "stderr_silenced", "require_positive", "run"]

USAGE_ERROR = 2


class _OneLineParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are `UserError`s: one line
    naming the argument and pointing at the command's --help ("see probvae
    fit --help"), instead of a usage block; empty values are refused."""

    def error(self, message):
        raise UserError(f"{message}; see {self.prog} --help")

    def _get_value(self, action, arg_string):
        # An empty value is never what a user means (`--resume ''` is not "no --resume").
        if isinstance(arg_string, str) and not arg_string.strip():
            name = "/".join(action.option_strings) or action.metavar or action.dest
            self.error(f"argument {name}: an empty value; give one or leave the argument out")
        return super()._get_value(action, arg_string)


IMPORT_HELP = ("import MODULE first: a module on the path (mylab.priors) or a .py file, e.g. one registering "
               "components of your own (docs/extending.md); repeatable, or several separated by commas")


def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--import", dest="imports", metavar="MODULE", action="append", default=[],
                        help=IMPORT_HELP)


class ArgumentParser(_OneLineParser):
    """The parser of a command: `prog` is how the user called it ("probvae
    fit", "fit.py"); every command has --version, --verbose, --debug and
    --import (see `import_components`, which reads --import before the
    parser is built)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from probvae import __version__

        self.add_argument("--version", action="version", version=f"probvae {__version__}")
        self.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up messages")
        self.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's start-up messages")
        _add_import(self)


def import_components(argv: Optional[Sequence[str]], prog: str, run_flags: Sequence[str] = ()) -> None:
    """Import the modules `--import` names in `argv` (default sys.argv[1:]),
    then, for each flag of `run_flags` given (fit's --resume, --init-from),
    the modules that run's config.json records: before a parser builds its
    choices and flags from the registries, so a user's components are among
    them. Other arguments are left to the command's parser.

    Raises:
      UserError: a module that cannot be imported (one line).
    """
    parser = _OneLineParser(prog=prog, add_help=False)
    _add_import(parser)
    for flag in run_flags:
        parser.add_argument(flag)
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    from probvae import components

    components.import_modules(known.imports)
    from probvae import runs

    for flag in run_flags:
        run_dir = getattr(known, flag.lstrip("-").replace("-", "_"))
        if run_dir is not None:
            runs.import_components(run_dir)


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _with_default(text: str, default) -> str:
    """`text` with "(default: V)" unless it states its default or there is none."""
    if default is None or "default" in text:
        return text
    return f"{text} (default: {_shown(default)})" if text else f"default: {_shown(default)}"


def _flag_of(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def add_config_arguments(parser: argparse.ArgumentParser, titles: dict) -> dict:
    """A group of flags per config section (`titles`: {"data": "data", "train":
    "training", ...}): one flag per own field, from its `Flag` metadata, and
    one per field of the components the section can choose, from the registry.
    Every flag defaults to None, so that only the flags given override a
    preset or a resumed run.

    Returns:
      {section: the config field names the flags set}.
    """
    from probvae.config import RunConfig
    from probvae.config.fields import flags

    sections = {}
    for section, fields in RunConfig.SECTIONS.items():
        group = parser.add_argument_group(titles.get(section, section))
        names = []
        for name, default, flag in flags(fields):
            text = flag.help or (flag.registry.describe() if flag.registry is not None else "")
            choices = flag.choices
            if flag.registry is not None and not hasattr(flag.registry, "spellings"):
                choices = flag.registry.names()
            _add(group, flag.flag or _flag_of(name), name, flag.parse, choices, _with_default(text, default),
                 flag.metavar)
            for alias, value in flag.aliases:
                group.add_argument(alias, dest=name, action="store_const", const=value, help=argparse.SUPPRESS)
            names.append(name)
        sections[section] = tuple(names) + _add_component_fields(group, fields.registries())
    return sections


def _add(group, flag: str, dest: str, parse, choices, text: str, metavar=None) -> None:
    if parse is None:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
    else:
        kind = parse if parse in (int, float, str) else _typed(parse, dest)  # argparse names the plain types
        group.add_argument(flag, dest=dest, type=kind, choices=choices, help=text, metavar=metavar)


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


def _typed(parse: Callable, name: str) -> Callable:
    """An argparse type from a field's parser: a ValueError becomes an argparse error."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name
    return convert


def _add_component_fields(group, registries: dict) -> Tuple[str, ...]:
    """Add a flag per field the entries of `registries` declare (--prior-components, ...)
    to `group`; return the field names. Summaries and defaults come from the registry."""
    names = []
    for registry in dict.fromkeys(registries.values()):
        for entry in registry.entries():
            for field in entry.fields:
                if field.name in names:
                    continue
                names.append(field.name)
                defaults = {e.name: f.default for r in registries.values() for e in r.entries()
                            for f in e.fields if f.name == field.name}
                if len(set(map(_shown, defaults.values()))) == 1:
                    text = f"{field.help} ({', '.join(defaults)}; default {_shown(field.default)})"
                else:
                    text = f"{field.help} (default " + "; ".join(
                        f"{name}: {_shown(value)}" for name, value in defaults.items()) + ")"
                parse = None if isinstance(field.default, bool) else field.parse
                many = field.choices is not None and len(field.choices) > 5  # listed by the error, not the usage
                if parse is not None or isinstance(field.default, bool):
                    _add(group, _flag_of(field.name), field.name, parse, field.choices, text,
                         "NAME" if many else None)
    return tuple(names)


def component_of(section, name: str) -> Optional[str]:
    """Who declares component field `name` that `section` (a config section)
    does not use, e.g. "the network conv (--arch / --decoder-arch)"; None if
    the section uses it or no component declares it."""
    if name in section.component_fields():
        return None
    owners = {}  # registry -> (its options, the entries declaring the field)
    for option, registry in section.registries().items():
        entries = [e.name for e in registry.entries() if any(f.name == name for f in e.fields)]
        if entries:
            owners.setdefault(registry, ([], entries))[0].append(_flag_of(option))
    return " or ".join(f"the {registry.kind} {' or '.join(entries)} ({' / '.join(options)})"
                       for registry, (options, entries) in owners.items()) or None
