"""The `probvae` console command: `probvae COMMAND [ARGS...]`.

    probvae fit --dataset fashion_mnist
    probvae evaluate RUN_DIR --iwae-samples 5000
    probvae inspect RUN_DIR
    probvae bench --quick
    probvae compare RUN_DIR RUN_DIR ...
    probvae export RUN_DIR OUT

`probvae COMMAND --help` shows a command's flags. Each command is the same
as `python scripts/COMMAND.py` (inspect: scripts/inspect_run.py), and names
itself as it was called: "usage: probvae fit ...", "usage: fit.py ...".
"""

import importlib
import os
import sys
from typing import Optional, Sequence

from probvae import __version__
from probvae.cli import common

__all__ = ["COMMANDS", "main", "run_command"]

# Command -> (module under probvae.cli, one line of help).
COMMANDS = {
    "fit": ("fit", "train a VAE and write its run directory (or resume one)"),
    "evaluate": ("evaluate", "held-out ELBO, log p(x) (importance-weighted or AIS, with BDMC), bits/dim of a run"),
    "inspect": ("inspect_run", "pictures of a trained run and an index.html"),
    "bench": ("bench", "speed and memory against the plain tf-keras recipe"),
    "compare": ("compare", "runs side by side: differing settings, test ELBO and log p(x), validation curves"),
    "export": ("export",
               "a run as a TensorFlow SavedModel (encode, decode, log_likelihood) that loads without probvae"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "usage: probvae COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines) + \
        "\n\n`probvae COMMAND --help` shows a command's flags."


def run_command(name: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> None:
    """Run command `name` with `argv` (default: sys.argv[1:]) as the scripts do.

    `prog` is what its usage and errors call it; default: the script's file
    name when run as one (python scripts/fit.py: "fit.py"), else "probvae NAME".
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog is None:
        script = os.path.basename(sys.argv[0]) if sys.argv else ""
        prog = script if script.endswith(".py") else f"probvae {name}"
    common.prepare_process(argv)
    module = importlib.import_module(f"probvae.cli.{COMMANDS[name][0]}")
    common.run(lambda: module.main(argv, prog), argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    if argv[0] == "--version":
        print(f"probvae {__version__}")
        return
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)} (probvae --help)",
              file=sys.stderr)
        sys.exit(common.USAGE_ERROR)
    run_command(argv[0], argv[1:], prog=f"probvae {argv[0]}")


if __name__ == "__main__":
    main()
