"""Evaluate a trained run on held-out data: ELBO, importance-weighted log p(x), bits/dim.

The `probvae evaluate` command (probvae/cli/evaluate.py): `python scripts/evaluate.py --help`.
"""

from probvae.cli.evaluate import main, parse_args
from probvae.cli.main import run_command

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    run_command("evaluate")
