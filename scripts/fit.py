"""Train a VAE and write its run directory.

The `probvae fit` command (probvae/cli/fit.py): `python scripts/fit.py --help`.
"""

from probvae.cli.fit import main, parse_args
from probvae.cli.main import run_command

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    run_command("fit")
