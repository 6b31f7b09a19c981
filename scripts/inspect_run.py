"""Turn a trained run into a folder of pictures with an index.html.

The `probvae inspect` command (probvae/cli/inspect_run.py): `python scripts/inspect_run.py --help`.
"""

from probvae.cli.inspect_run import main, parse_args
from probvae.cli.main import run_command

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    run_command("inspect")
