"""Benchmark probvae's training and evaluation against the plain tf-keras
`fit` recipe, next to what the machine can do (matmul GFLOP/s).

    probvae bench                      # both architectures, a table
    probvae bench --arch conv --json /tmp/bench.json
    probvae bench --quick              # a tiny smoke run
    probvae bench --time-to-quality    # wall time to a held-out ELBO, probvae and fit
"""

import argparse
import dataclasses
import os

from probvae.cli import common
from probvae.config import PRECISIONS
from probvae.registry import NETWORKS

__all__ = ["parse_args", "main"]


def parse_args(argv=None, prog="probvae bench"):
    common.import_components(argv, prog)  # before the registries make the choices
    parser = common.ArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=NETWORKS.names(), action="append",
                        help="network to measure (repeatable; default: mlp and conv)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    parser.add_argument("--repeats", type=int, help="timed rounds per figure (default 7)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="what probvae's networks compute in (default: each network's default on this machine, "
                        "as fit chooses it); the keras recipe computes in float32 on a CPU")
    parser.add_argument("--mixed-precision", dest="precision", action="store_const", const="float16",
                        help=argparse.SUPPRESS)  # the flag before --precision
    parser.add_argument("--memory-images", type=int, help="images per IWAE memory figure (default 200)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak memory figures")
    parser.add_argument("--no-workloads", action="store_true", help="skip the evaluation workloads (IWAE at "
                        "K = 5000 and AIS at T = 1000, each timed on a slice and projected)")
    parser.add_argument("--time-to-quality", action="store_true",
                        help="instead of the speed figures, train probvae and the keras recipe to the held-out "
                        "ELBO keras reaches in --quality-epochs epochs (Fashion-MNIST if installed) and compare "
                        "their training times")
    parser.add_argument("--quality-epochs", type=int, help="epochs of the keras recipe that set the target "
                        "(default 10)")
    parser.add_argument("--quick", action="store_true", help="tiny images, networks and runs: a smoke test")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file (checked "
                        "before the measuring starts)")
    return parser.parse_args(argv)


def main(argv=None, prog="probvae bench"):
    """`bench.py` / `probvae bench`: measure and print the table."""
    args = parse_args(argv, prog)
    common.require_positive(args, "batch_size", "repeats", "memory_images", "quality_epochs")  # before TF loads
    changes = {"archs": tuple(dict.fromkeys(args.arch)) if args.arch else None, "batch_size": args.batch_size,
               "repeats": args.repeats, "precision": args.precision,
               "memory_images": args.memory_images}
    from probvae import runs

    if args.json is not None:  # before hours of measuring, not after
        runs.check_writable(args.json)
    from probvae.benchmarks.bench import format_table, run
    from probvae.benchmarks.contenders import QUICK, BenchConfig

    base = QUICK if args.quick else BenchConfig()
    bench = dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})
    if args.time_to_quality:
        from probvae.benchmarks.quality import QUICK_QUALITY, QualityConfig, format_quality, time_to_quality

        quality = QUICK_QUALITY if args.quick else QualityConfig()
        quality = dataclasses.replace(quality, **{k: v for k, v in {
            "arch": bench.archs[0] if args.arch else None, "epochs": args.quality_epochs}.items() if v is not None})
        result = time_to_quality(bench, quality)
        print(format_quality(result))
    else:
        from probvae.benchmarks.workloads import QUICK_WORKLOADS, Workloads

        workloads = None if args.no_workloads else QUICK_WORKLOADS if args.quick else Workloads()
        result = run(bench, memory=not args.no_memory, workloads=workloads)
        print(format_table(result))
    if args.json is not None:
        runs.write_json(args.json, result)
        print(f"figures written to {os.path.abspath(args.json)}")
