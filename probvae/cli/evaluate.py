"""Evaluate a trained run on held-out data: ELBO, log p(x) (importance-weighted
or by annealed importance sampling), bits/dim, active units and per-dimension
KL, with standard errors.

    probvae evaluate RUN_DIR                      # test split, K = 1000
    probvae evaluate RUN_DIR --iwae-samples 5000  # the K of published tables
    probvae evaluate RUN_DIR --estimator ais --ais-steps 1000 --ais-chains 16
    probvae evaluate RUN_DIR --estimator ais --bdmc 100   # and certify AIS on simulated data
    probvae evaluate RUN_DIR --split validation --seed 1

Prints a table and writes RUN_DIR/eval_<split>_<estimator>....json, e.g.
eval_test_iwae5000.json or eval_test_ais1000x16.json; another checkpoint,
seed, binarization seed or subset gets a file of its own, e.g.
eval_test_iwae1000_ckpt-15_seed7.json (see docs/evaluation.md). The file is
checked to be writable before the evaluation starts. SIGINT or SIGTERM stops
the evaluation after the current batch, writes nothing and exits 130 / 143.
"""

import argparse
import sys

from probvae.cli import common
from probvae.errors import TrainingInterrupted
from probvae.evaluation.estimators import ESTIMATORS, estimator_label
from probvae.evaluation.names import AIS_INITIAL, DEFAULT_IWAE_SAMPLES, SPLITS

__all__ = ["parse_args", "main"]

# probvae.evaluation.API_NAMES as flags.
FLAG_NAMES = {"iwae_samples": "--iwae-samples", "ais": "--ais-steps x --ais-chains x --ais-leapfrog-steps",
              "force": "--force", "ais_initial": "--ais-initial prior", "ais_steps": "--ais-steps"}


def parse_args(argv=None, prog="probvae evaluate"):
    common.import_components(argv, prog)  # before the registries make the choices
    parser = common.ArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by fit.py")
    parser.add_argument("--split", choices=SPLITS, default="test", help="held-out split (default: test)")
    parser.add_argument("--iwae-samples", type=int, default=DEFAULT_IWAE_SAMPLES, metavar="K",
                        help=f"importance samples per image for log p(x) (default: {DEFAULT_IWAE_SAMPLES})")
    parser.add_argument("--estimator", choices=tuple(ESTIMATORS), default="iwae",
                        help="estimator of log p(x): " + "; ".join(
                            f"{name}: {entry.description}" for name, entry in ESTIMATORS.items())
                        + " (default: iwae)")
    parser.add_argument("--ais-steps", type=int, default=1000, metavar="T",
                        help="AIS: intermediate distributions from q(z|x) to p(z) p(x|z) (default: 1000)")
    parser.add_argument("--ais-chains", type=int, default=16, metavar="C",
                        help="AIS: independent chains per image (default: 16)")
    parser.add_argument("--ais-leapfrog-steps", type=int, default=10, metavar="L",
                        help="AIS: leapfrog steps per HMC transition (default: 10)")
    parser.add_argument("--ais-initial", choices=AIS_INITIAL, default="posterior",
                        help="AIS: start the chains at q(z|x) or at the prior p(z) (default: posterior)")
    parser.add_argument("--bdmc", type=int, default=0, metavar="N",
                        help="also run bidirectional Monte Carlo with the AIS settings on N images simulated "
                             "from the model: lower and upper bounds on log p(x) and their gap (default: off)")
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help="images per evaluation step (default: the run's eval_batch_size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default: 0)")
    parser.add_argument("--max-examples", type=int, metavar="N", help="evaluate the first N images only")
    parser.add_argument("--binarization-seed", type=int,
                        help="seed of the fixed binarization of Bernoulli data (default: the run's split seed)")
    parser.add_argument("--data-dir", help="read the data from this folder instead of the run's own --data-dir")
    parser.add_argument("--checkpoint", help="checkpoint name or path, latest or best (default: the run's model: "
                        "the best validation epoch's weights if the run kept them, else the latest)")
    parser.add_argument("--force", action="store_true",
                        help="run an evaluation of more than 1e11 decoder passes (refused otherwise)")
    return parser.parse_args(argv)


def main(argv=None, prog="probvae evaluate"):
    """`evaluate.py` / `probvae evaluate`: evaluate a run and write its JSON."""
    args = parse_args(argv, prog)
    common.require_positive(args, "iwae_samples", "batch_size", "max_examples", "ais_steps", "ais_chains",
                            "ais_leapfrog_steps")
    if args.bdmc < 0:
        raise common.UserError(f"--bdmc must be 0 (off) or a number of simulated images (got {args.bdmc})")
    from probvae import runs

    runs.load_config(args.run_dir)  # a missing or unreadable run is refused before TensorFlow loads
    from probvae import evaluation
    from probvae.training.checkpoints import StopSignals

    ais = evaluation.AISSettings(num_steps=args.ais_steps, num_chains=args.ais_chains,
                                 num_leapfrog_steps=args.ais_leapfrog_steps, initial=args.ais_initial)
    with StopSignals() as stop:

        def stop_if_signalled(done=None):
            if stop.received:
                raise TrainingInterrupted(f"{stop.name} during the evaluation of {args.run_dir}; nothing written",
                                          stop.received)

        result = evaluation.evaluate_run(
            args.run_dir, split=args.split, iwae_samples=args.iwae_samples, batch_size=args.batch_size,
            seed=args.seed, checkpoint=args.checkpoint, binarization_seed=args.binarization_seed,
            max_examples=args.max_examples, log=lambda line: print(line, file=sys.stderr, flush=True),
            estimator=args.estimator, ais=ais, bdmc_examples=args.bdmc, force=args.force, names=FLAG_NAMES,
            data_dir=args.data_dir, on_batch=stop_if_signalled,
        )
    print(format_report(result))
    print(f"written to {result['file']}")


def _number(value, width: int) -> str:
    """`value` to 4 decimals in `width` characters; "n/a" for a standard error
    that was not estimated (one image: null in the JSON)."""
    return f"{'n/a':>{width}s}" if value is None else f"{value:{width}.4f}"


def format_report(result: dict) -> str:
    """A plain-text table of an `evaluate` result."""
    estimator = estimator_label(result)
    rows = [
        ("ELBO", result["elbo"], result["elbo_stderr"], "nats"),
        ("  reconstruction", result["reconstruction"], result["reconstruction_stderr"], "nats"),
        ("  KL", result["kl"], result["kl_stderr"], "nats"),
        (f"log p(x), {estimator}", result["log_likelihood"], result["log_likelihood_stderr"], "nats"),
        ("bits/dim from log p(x)", result["bits_per_dim"], result["bits_per_dim_stderr"], "bits"),
        ("bits/dim from ELBO", result["elbo_bits_per_dim"], result["elbo_bits_per_dim_stderr"], "bits"),
    ]
    where = f"{result.get('dataset', '')} {result.get('split', '')}".strip() or "held-out data"
    lines = [
        f"{where}: {result['n_examples']} images, checkpoint {result['checkpoint']}, seed {result['seed']}, "
        f"binarization {result['binarization']}",
        f"{'':30s} {'mean':>12s} {'std. error':>11s}",
    ]
    lines += [f"{name:30s} {_number(mean, 12)} {_number(stderr, 11)}  {unit}" for name, mean, stderr, unit in rows]
    kl = " ".join(f"{value:.2f}" for value in result["kl_per_dimension"])
    if result.get("estimator", "iwae") == "ais":
        of = f"{result['ais']['num_chains']} chains"
    else:
        of = result.get("iwae_samples", 1)
    lines += [
        f"Monte Carlo error of log p(x): {_number(result['log_likelihood_mc_stderr'], 0)} nats; "
        f"mean effective sample size {result['effective_sample_size']:.1f} of {of}",
        f"active units: {result['active_units']} of {result['latent_dim']} "
        f"(Var_x E_q[z_i|x] > {result['active_unit_threshold']})",
        f"KL per dimension (nats): {kl}; total correlation {result['kl_total_correlation']:.2f}",
    ]
    if "ais" in result:
        lines.append(f"AIS: mean HMC acceptance {result['ais']['acceptance']:.2f}, "
                     f"final step size {result['ais']['final_step_size']:.3f} ({result['ais_seconds']:.1f} s)")
    if "bdmc" in result:
        b = result["bdmc"]
        lines.append(f"BDMC on {b['examples']} simulated images: lower {b['lower']:.4f}, upper {b['upper']:.4f}, "
                     f"gap {b['gap']:.4f} ± {_number(b['gap_stderr'], 0)} nats ({b['seconds']:.1f} s)")
    lines.append(f"({result['seconds']:.1f} s)")
    return "\n".join(lines)

