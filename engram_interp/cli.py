"""The ``engram-interp`` command line: discovers subcommands in ``engram_interp.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from engram_interp.errors import EngramInterpError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _command_modules():
    import engram_interp.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"engram_interp.commands.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are ONE line on stderr (exit 2), like every other error."""

    def error(self, message: str):
        message = " ".join(message.split())
        message = message if len(message) <= 400 else message[:400] + "..."
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="engram-interp",
        description=(
            "Look inside language models with Engram conditional memory: inspect checkpoints, "
            "run LogitLens / CKA / gate maps / ablations, train paired Engram and MoE models, "
            "and explore everything in a Streamlit app."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(_command_modules(), key=lambda m: m.NAME):
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _data_parallel=getattr(module, "DATA_PARALLEL", False))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    from engram_interp.analysis import _dist

    try:
        distributed = _dist.init_from_env()  # under torchrun: join its process group (docs/SCALE.md)
    except (RuntimeError, ValueError) as exc:
        print(f"engram-interp {args.command}: error: cannot join torchrun's process group ({exc})", file=sys.stderr)
        return 2
    if distributed and not args._data_parallel:
        if _dist.is_main():
            print(f"engram-interp {args.command}: error: {args.command} does not run data-parallel; run it in one "
                  "process (without torchrun)", file=sys.stderr)
        return 2
    if distributed and not _dist.is_main():  # rank 0 alone prints, writes (io.atomic_write_bytes) and shows progress
        sys.stdout = sys.stderr = open(os.devnull, "w")
        args.quiet = True
    from engram_interp.analysis.progress import warnings_held

    try:  # libraries' warnings wait for the work to start: a refusal before it is its one line
        with warnings_held():
            return int(args._run(args) or 0)
    except EngramInterpError as exc:
        print(f"engram-interp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `engram-interp info x.ckpt --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
