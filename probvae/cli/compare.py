"""Compare runs: the settings in which they differ, their test ELBO and log p(x),
epochs and training time, as a markdown table (and CSV), and a plot of their
validation curves.

    probvae compare runs/a runs/b runs/c
    probvae compare runs/* --csv runs.csv --plot curves.png
"""

import argparse

from probvae.cli import common

__all__ = ["parse_args", "main"]


def parse_args(argv=None):
    parser = common.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories written by fit.py")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE")
    parser.add_argument("--plot", metavar="FILE", default="validation_curves.png",
                        help="where to draw the validation curves (default: validation_curves.png)")
    return parser.parse_args(argv)


def main(argv=None):
    """`probvae compare`: print the table, write the CSV and the plot, print their paths."""
    import os

    args = parse_args(argv)
    for path in [args.csv, args.plot]:
        if path and os.path.isdir(path):
            raise common.UserError(f"{path} is a folder; give a file name")
    from probvae.analysis.compare import compare_runs

    comparison = compare_runs(args.run_dirs)
    print(comparison.markdown())
    if args.csv:
        try:
            with open(args.csv, "w") as stream:
                stream.write(comparison.csv())
        except OSError as error:
            raise common.UserError(f"cannot write {args.csv}: {error.strerror}") from None
        print(f"table written to {os.path.abspath(args.csv)}")
    from probvae.analysis import plotting

    curves = {os.path.basename(os.path.normpath(s.run_dir)): s.validation_elbo for s in comparison.summaries}
    print(f"validation curves drawn to {os.path.abspath(plotting.plot_validation_curves(curves, args.plot))}")
