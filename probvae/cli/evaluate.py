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
    print(format_report(result))
    print(f"written to {evaluation.evaluation_path(args.run_dir, args.split)}")


def format_report(result: dict) -> str:
    """A plain-text table of an `evaluate` result."""
    k = result["iwae_samples"]
    rows = [
        ("ELBO", result["elbo"], result["elbo_stderr"], "nats"),
        ("  reconstruction", result["reconstruction"], result["reconstruction_stderr"], "nats"),
        ("  KL", result["kl"], result["kl_stderr"], "nats"),
        (f"log p(x), K={k}", result["log_likelihood"], result["log_likelihood_stderr"], "nats"),
        ("bits/dim from log p(x)", result["bits_per_dim"], result["bits_per_dim_stderr"], "bits"),
        ("bits/dim from ELBO", result["elbo_bits_per_dim"], result["elbo_bits_per_dim_stderr"], "bits"),
    ]
    where = f"{result.get('dataset', '')} {result.get('split', '')}".strip() or "held-out data"
    lines = [
        f"{where}: {result['n_examples']} images, checkpoint {result['checkpoint']}, seed {result['seed']}, "
        f"binarization {result['binarization']}",
        f"{'':24s} {'mean':>12s} {'std. error':>11s}",
    ]
    lines += [f"{name:24s} {mean:12.4f} {stderr:11.4f}  {unit}" for name, mean, stderr, unit in rows]
    kl = " ".join(f"{value:.2f}" for value in result["kl_per_dimension"])
    lines += [
        f"Monte Carlo error of log p(x): {result['log_likelihood_mc_stderr']:.4f} nats; "
        f"mean effective sample size {result['effective_sample_size']:.1f} of {k}",
        f"active units: {result['active_units']} of {result['latent_dim']} "
        f"(Var_x E_q[z_i|x] > {result['active_unit_threshold']})",
        f"KL per dimension (nats): {kl}; total correlation {result['kl_total_correlation']:.2f}",
        f"({result['seconds']:.1f} s)",
    ]
    return "\n".join(lines)
