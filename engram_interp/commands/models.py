"""engram-interp models [NAME]: where the pretrained models that ship as Python packages are installed."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "print the path of a known pretrained model (e.g. smollm2) or list them with their install commands"
DESCRIPTION = (
    "Known models ship as Python packages (no hub, no download by engram-interp). With NAME, prints its file's "
    "path (for use as `engram-interp logit-lens $(engram-interp models smollm2)`); any command also accepts the "
    "name itself in place of a path. Without NAME, lists every known model, its path or its install command."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, help="a known model name, e.g. smollm2")


def run(args: argparse.Namespace) -> int:
    from engram_interp.backends.known import KNOWN, available, locate

    if args.name:
        print(locate(args.name))
        return 0
    for name, path in available().items():
        print(f"{name:<10} {path if path else 'not installed: ' + KNOWN[name][2]}")
    return 0
