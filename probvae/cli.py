"""What every command-line entry point shares: one way of reporting errors
(one line, exit code 2, traceback only with --debug)."""

import os
import platform
import sys
import traceback
from typing import Callable, Sequence

from probvae.errors import UserError

__all__ = ["run", "prefer_onednn"]

USAGE_ERROR = 2


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
