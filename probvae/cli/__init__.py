"""The command line: one module per command, each with `parse_args(argv, prog)`
and `main(argv, prog)` (`prog`: the command as called, "probvae fit" or
"fit.py"), all run through `common.run` (one-line errors, exit code 2); every
command takes `--import MODULE` (`common.import_components`).

    probvae fit ...        probvae/cli/fit.py           (also python scripts/fit.py ...)
    probvae evaluate ...   probvae/cli/evaluate.py      (also python scripts/evaluate.py ...)
    probvae inspect ...    probvae/cli/inspect_run.py   (also python scripts/inspect_run.py ...)
    probvae bench ...      probvae/cli/bench.py         (also python scripts/bench.py ...)

Only these modules define flags; each calls into the library.
"""
