"""engram-interp app [A.ckpt B.ckpt ...]: start the Streamlit workbench on some checkpoints."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from engram_interp.commands._common import port as port_number
from engram_interp.errors import EngramInterpError

NAME = "app"
HELP = "start the Streamlit workbench (Overview, LogitLens, CKA, Gates, Ablation, Probe) on some checkpoints"
DESCRIPTION = (
    "Starts `streamlit run` on the app in app/ with the given .ckpt files (default: the bundled "
    "checkpoints/engram.ckpt, checkpoints/moe.ckpt, checkpoints/engram-null.ckpt) and prints the local URL. "
    "Heavy results are computed once and cached on disk, keyed by each checkpoint's sha256. "
    "--demo writes three tiny random checkpoints (engram, moe, engram-null) to the cache and opens those."
)
DEFAULT_CKPTS = ("checkpoints/engram.ckpt", "checkpoints/moe.ckpt", "checkpoints/engram-null.ckpt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpts", nargs="*", help=".ckpt files, Hugging Face folders or .gguf files to open (default: the bundled set in checkpoints/)")
    p.add_argument("--port", type=port_number, default=None, help="port to serve on (default: the first free one from 8501)")
    p.add_argument("--host", default="localhost", help="address to bind (default: localhost)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where results are cached (default: ~/.cache/engram-interp/app)")
    p.add_argument("--probes", type=Path, default=None, help="probe and task-suite folder (default: ./probes)")
    p.add_argument("--demo", action="store_true", help="open three tiny random models (no training needed)")
    p.add_argument("--browser", action="store_true", help="also open the URL in a web browser")


def app_dir() -> Path:
    """The Streamlit app folder that ships next to the package (repo root / app)."""
    return Path(__file__).resolve().parents[2] / "app"


def free_port(start: int = 8501, host: str = "localhost") -> int:
    """The first port from ``start`` that nobody listens on."""
    for port in range(start, start + 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host if host != "localhost" else "127.0.0.1", port))
            except OSError:
                continue
            return port
    raise EngramInterpError(f"no free port in {start}..{start + 199}; pass --port")


def demo_checkpoints(folder: Path) -> list[Path]:
    """Write (once) tiny random engram / moe / engram-null checkpoints into ``folder``."""
    from engram_interp.checkpoint import save
    from engram_interp.testing import tiny_model

    out = []
    for kind in ("engram", "moe", "engram-null"):
        path = folder / f"demo-{kind}.ckpt"
        if not path.exists():
            save(tiny_model(kind), path, provenance={"recipe": "engram_interp.testing.tiny_model", "note": "random weights, demo only"})
        out.append(path)
    return out


def build_command(args: argparse.Namespace, port: int) -> list[str]:
    main = app_dir() / "Home.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(main),
        "--server.headless", "true", "--server.port", str(port), "--server.address", args.host,
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this is a local workbench
    ]


def run(args: argparse.Namespace) -> int:
    if not (app_dir() / "Home.py").is_file():
        raise EngramInterpError(f"the app is not installed next to the package (looked in {app_dir()}); run from a source checkout")
    cache = (args.cache_dir or Path.home() / ".cache" / "engram-interp" / "app").expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if args.demo:
        if args.ckpts:
            raise EngramInterpError("--demo opens its own tiny models; leave out the checkpoint paths")
        ckpts = demo_checkpoints(cache / "demo")
    else:
        ckpts = [Path(p) for p in (args.ckpts or DEFAULT_CKPTS)]
    ckpts = [p.expanduser().resolve() for p in ckpts]
    for p in ckpts:
        if p.is_dir() and not (p / "config.json").is_file():
            raise EngramInterpError(f"{p} is a directory but not a Hugging Face model folder (no config.json)")
    missing = [p for p in ckpts if not (p.is_file() or p.is_dir())]
    if missing:  # refuse before a server starts on nothing
        hint = ("; the bundled checkpoints are made by the recipes in checkpoints/recipes/, or pass your own .ckpt"
                " files, or try `engram-interp app --demo`") if not args.ckpts and not args.demo else ""
        raise EngramInterpError("no such checkpoint: " + ", ".join(str(p) for p in missing) + hint)
    port = args.port or free_port(host=args.host)
    env = dict(os.environ)
    env["ENGRAM_INTERP_APP_CKPTS"] = os.pathsep.join(str(p) for p in ckpts)
    env["ENGRAM_INTERP_APP_CACHE"] = str(cache)
    if args.probes:
        env["ENGRAM_INTERP_PROBES"] = str(args.probes.expanduser().resolve())
    root = str(app_dir().parent)  # the app imports this very engram_interp, not another install
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = build_command(args, port)
    url = f"http://{args.host}:{port}"
    print(f"engram-interp app: {len(ckpts)} checkpoint(s): " + ", ".join(p.name for p in ckpts))
    print(f"  Local URL: {url}", flush=True)
    print("  (Ctrl+C stops the server)", flush=True)
    if args.browser:
        import webbrowser

        webbrowser.open(url)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)

    def stop(signum, frame):  # SIGTERM (e.g. from a test or a service manager) stops the server too
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
