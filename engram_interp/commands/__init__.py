"""CLI subcommands, one module each.

Every module here defines ``NAME`` (the subcommand), ``HELP`` (one line for ``--help``),
``add_arguments(parser)`` and ``run(args) -> int``. ``engram_interp.cli`` discovers them, so adding
a command means adding a file. Commands stay thin: parse, call the library, print or save.
"""
