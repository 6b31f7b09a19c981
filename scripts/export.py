"""Export a trained run as a TensorFlow SavedModel that loads without probvae.

The `probvae export` command (probvae/cli/export.py): `python scripts/export.py --help`.
"""

from probvae.cli.export import main, parse_args
from probvae.cli.main import run_command

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    run_command("export")
