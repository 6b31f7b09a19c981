"""Evaluate a trained run on held-out data: ELBO, importance-weighted log p(x),
bits/dim, active units and per-dimension KL, with standard errors.

    probvae evaluate RUN_DIR                      # test split, K = 1000
    probvae evaluate RUN_DIR --iwae-samples 5000  # the K of published tables
    probvae evaluate RUN_DIR --split validation --seed 1

Prints a table and writes RUN_DIR/eval_<split>.json (see docs/evaluation.md).
"""

import argparse
import sys

from probvae.cli import common

__all__ = ["parse_args", "main"]

SPLITS = ("test", "validation", "train")  # probvae.evaluation.SPLITS, without importing TensorFlow


def parse_args(argv=None):
    parser = common.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by fit.py")
    parser.add_argument("--split", choices=SPLITS, default="test", help="held-out split (default: test)")
    parser.add_argument("--iwae-samples", type=int, default=1000, metavar="K",
                        help="importance samples per image for log p(x) (default: 1000)")
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help="images per evaluation step (default: the run's eval_batch_size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default: 0)")
    parser.add_argument("--max-examples", type=int, metavar="N", help="evaluate the first N images only")
    parser.add_argument("--binarization-seed", type=int,
                        help="seed of the fixed binarization of Bernoulli data (default: the run's split seed)")
    parser.add_argument("--checkpoint", help="checkpoint name or path, latest or best (default: the run's model: the best "
                        "validation epoch's weights if the run kept them, else the latest)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def main(argv=None):
    """`evaluate.py` / `probvae evaluate`: evaluate a run and write its JSON."""
    args = parse_args(argv)
    common.require_positive(args, "iwae_samples", "batch_size", "max_examples")
    from probvae import evaluation

    result = evaluation.evaluate_run(
        args.run_dir, split=args.split, iwae_samples=args.iwae_samples, batch_size=args.batch_size,
        seed=args.seed, checkpoint=args.checkpoint, binarization_seed=args.binarization_seed,
        max_examples=args.max_examples, log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(evaluation.format_report(result))
    print(f"written to {evaluation.evaluation_path(args.run_dir, args.split)}")
