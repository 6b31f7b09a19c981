"""What every command-line entry point shares: one way of reporting errors
(one line on stderr, exit code 2, the traceback only with --debug) and an
argument parser whose mistakes are reported the same way."""

import argparse
import os
import platform
import sys
import traceback
from typing import Callable, Sequence

from probvae.errors import TrainingInterrupted, UserError

__all__ = ["ArgumentParser", "USAGE_ERROR", "image_shape_argument", "int_list_argument", "prefer_onednn", "run"]

USAGE_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are `UserError`s: one line
    naming the argument and pointing at --help, instead of a usage block."""

    def error(self, message):
        raise UserError(f"{message}; see {self.prog} --help")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


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


def image_shape_argument(text: str) -> tuple:
    """argparse type for "H,W,C" (e.g. 64,64,3) -> (64, 64, 3)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected height,width,channels such as 64,64,3, got {text!r}")
    return shape


def int_list_argument(text: str) -> tuple:
    """argparse type for "A,B,..." of positive whole numbers (e.g. 300,300) -> (300, 300)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas such as 300,300, "
                                         f"got {text!r}")
    return values
