"""Compare runs: differing settings, test ELBO and log p(x), validation curves.

The `probvae compare` command (probvae/cli/compare.py): `python scripts/compare.py --help`.
"""

from probvae.cli.compare import main, parse_args
from probvae.cli.main import run_command

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    run_command("compare")
