"""Benchmark probvae's training and evaluation against the plain tf-keras

The `probvae bench` command (probvae/cli/bench.py): `python scripts/bench.py --help`.
"""

from probvae.cli.bench import main, parse_args
from probvae.cli.main import run_command

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    run_command("bench")
