"""What every command-line entry point shares: one way of reporting errors
(one line, exit code 2, traceback only with --debug)."""

import argparse
import sys
import traceback
from typing import Callable, Sequence

from probvae.errors import UserError

__all__ = ["run", "image_shape_argument"]

USAGE_ERROR = 2


def run(main: Callable[[], object], argv: Sequence[str] = None) -> None:
    """Run `main`, turning user errors into one line on stderr and exit code 2."""
    argv = sys.argv if argv is None else argv
    debug = "--debug" in argv
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except UserError as error:
        if debug:
            traceback.print_exc()
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
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
