"""Compare runs: the settings in which they differ, their test ELBO and log p(x),
epochs and training time, as a markdown table (and CSV), and a plot of their
validation curves.

    probvae compare runs/a runs/b runs/c
    probvae compare runs/* --csv runs.csv --plot curves.png
"""

import argparse

from probvae.cli import common

__all__ = ["parse_args", "main"]

# The picture formats matplotlib writes (by the file name's extension).
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf")


def parse_args(argv=None, prog="probvae compare"):
    common.import_components(argv, prog)  # before the registries make the choices
    parser = common.ArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories written by fit.py")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE")
    parser.add_argument("--plot", metavar="FILE", default="validation_curves.png",
                        help="where to draw the validation curves (default: validation_curves.png)")
    return parser.parse_args(argv)


def main(argv=None, prog="probvae compare"):
    """`probvae compare`: print the table, write the CSV and the plot, print their paths."""
    import os

    args = parse_args(argv, prog)
    for path in [args.csv, args.plot]:
        if path and os.path.isdir(path):
            raise common.UserError(f"{path} is a folder; give a file name")
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if path and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise common.UserError(f"cannot write {path}: {folder} is not a folder this user can write in; "
                                   "give another path")
    extension = os.path.splitext(args.plot)[1].lower().lstrip(".")
    if extension not in PLOT_FORMATS:
        raise common.UserError(f"--plot {args.plot}: unknown picture format {extension or '(none)'!r}; end the "
                               f"name with one of: {', '.join('.' + name for name in PLOT_FORMATS)}")
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

    curves, bounds = comparison.curves()
    try:
        drawn = plotting.plot_validation_curves(curves, args.plot, bounds)
    except OSError as error:
        raise common.UserError(f"cannot write {args.plot}: {error.strerror}") from None
    print(f"validation curves drawn to {os.path.abspath(drawn)}")
