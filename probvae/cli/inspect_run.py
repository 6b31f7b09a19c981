"""Turn a trained run into a folder of pictures with an index.html.

    probvae inspect runs/fashion_mnist-20250101-120000
    probvae inspect RUN_DIR --split validation --n 6 --grid-range 4 --out /tmp/plots
"""

import argparse

from probvae.cli import common
from probvae.evaluation.names import SPLITS

__all__ = ["parse_args", "main"]


def parse_args(argv=None, prog="probvae inspect"):
    common.import_components(argv, prog)  # before the registries make the choices
    parser = common.ArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by fit.py")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="held-out images to look at (default test)")
    parser.add_argument("--n", type=int, default=4, help="posterior inspection of the first N examples (default 4)")
    parser.add_argument("--examples", type=int, nargs="+", metavar="INDEX",
                        help="posterior inspection of these example indices instead")
    parser.add_argument("--out", help="output folder (default RUN_DIR/plots)")
    parser.add_argument("--max-examples", type=int, help="use only the first N images of the split")
    parser.add_argument("--dims", type=int, nargs=2, metavar=("I", "J"),
                        help="latent dimensions of the 2-D plots (default: the two most active)")
    parser.add_argument("--grid-size", type=int, default=20,
                        help="points per axis of the decoded manifold (default 20)")
    parser.add_argument("--grid-range", type=float, metavar="R",
                        help="also decode a grid evenly spaced over [-R, R], e.g. 4")
    parser.add_argument("--interpolate", type=int, nargs=2, metavar=("A", "B"),
                        help="example indices to interpolate between")
    parser.add_argument("--checkpoint", help="checkpoint name or path, latest or best (default: the run's model: the "
                        "best validation epoch's weights if the run kept them, else the latest)")
    parser.add_argument("--data-dir", help="read the data from this folder instead of the run's own --data-dir")
    parser.add_argument("--seed", type=int, default=0, help="seed of posterior and prior samples (default 0)")
    return parser.parse_args(argv)


def main(argv=None, prog="probvae inspect"):
    args = parse_args(argv, prog)
    common.require_positive(args, "n", "max_examples", "grid_size")
    from probvae import runs

    runs.load_config(args.run_dir)  # a wrong folder fails here, before TensorFlow loads
    from probvae.analysis.report import inspect_run

    inspect_run(args.run_dir, split=args.split, out_dir=args.out, num_shown=args.n, indices=args.examples,
                max_examples=args.max_examples, dims=args.dims, grid_size=args.grid_size,
                grid_range=args.grid_range, interpolate=args.interpolate, seed=args.seed,
                checkpoint=args.checkpoint, data_dir=args.data_dir)
