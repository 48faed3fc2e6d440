"""Time to first result of every app page on the bundled set: cold (fresh process, empty result
cache) and cached (the same page run again in that process), plus the Overview's "Compute the
missing findings" button on an empty cache.

Each page runs through Streamlit's own headless test runner (``streamlit.testing.v1.AppTest``),
which executes the page script exactly as a browser session would, without the browser; a page's
run ends when its script has drawn everything; the times of its first title, first figure and first
table in that run are recorded too (pages draw each model as it is done, so the first figure comes
before the run ends). Each cold run is a
fresh Python process with its own empty ``ENGRAM_INTERP_APP_CACHE``, so nothing computed by one
page helps the next. Issue 12's targets: cold <= 30 s, cached <= 2 s, the button <= 90 s; issue 22's:
the first figure (or table) <= 10 s cold on every page.

    python benchmarks/bench_app_pages.py --json benchmarks/results_app_pages_cpu.json
    python benchmarks/bench_app_pages.py --pages app/pages/1_LogitLens.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["app/Home.py"] + [str(p.relative_to(ROOT)) for p in sorted((ROOT / "app" / "pages").glob("[0-9]*_*.py"),
                                                                     key=lambda p: int(p.name.split("_")[0]))]
BUNDLED = [ROOT / "checkpoints" / n for n in ("engram.ckpt", "moe.ckpt", "engram-null.ckpt")]

_CHILD = """
import json, os, sys, time
t = time.perf_counter()
import streamlit
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest
page, button, timeout = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
import_s = time.perf_counter() - t
first = {}  # element kind -> perf_counter of its first call in the current run

def _timed(kind, fn):
    def wrapper(*args, **kwargs):
        first.setdefault(kind, time.perf_counter())
        return fn(*args, **kwargs)
    return wrapper

for kind, name in (("text", "title"), ("figure", "plotly_chart"), ("table", "dataframe")):
    setattr(DeltaGenerator, name, _timed(kind, getattr(DeltaGenerator, name)))
    setattr(streamlit, name, getattr(streamlit._main, name))
at = AppTest.from_file(page, default_timeout=timeout)
t = time.perf_counter()
try:
    at.run(); cold = time.perf_counter() - t
except RuntimeError:  # the run did not end within the timeout: its first figure may still have come
    cold = None
firsts = {f"first_{k}_s": v - t for k, v in first.items()}
errors = [] if cold is None else [str(e.value)[:300] for e in at.exception] + [str(e.value)[:300] for e in at.error]
first.clear()
cached = None
if cold is not None:
    t = time.perf_counter(); at.run(); cached = time.perf_counter() - t
out = {"page": page, "import_s": import_s, "cold_s": cold, "cached_s": cached, "errors": errors, **firsts,
       **{f"cached_first_{k}_s": v - t for k, v in first.items()}}
if button:
    t = time.perf_counter()
    at.button(key="overview-compute").click().run()
    out["compute_findings_s"] = time.perf_counter() - t
    out["errors"] += [str(e.value)[:300] for e in at.exception]
print(json.dumps(out), flush=True)
os._exit(0)  # a run cut at the timeout leaves its script thread behind
"""


def run_page(page: str, ckpts: list[Path], threads: int, button: bool, timeout: float = 900) -> dict:
    with tempfile.TemporaryDirectory(prefix="engram-interp-app-cache-") as cache:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGRAM_INTERP_APP_CACHE": cache,
               "ENGRAM_INTERP_APP_CKPTS": os.pathsep.join(str(p) for p in ckpts), "OMP_NUM_THREADS": str(threads)}
        p = subprocess.run([sys.executable, "-c", _CHILD, page, "1" if button else "0", str(timeout)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"{page} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", nargs="+", default=PAGES, help="page scripts (default: every page)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--skip-button", action="store_true", help="do not time the Overview's compute button")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds a page's run may take; a page still running then is recorded with its first "
                         "figure's time and cold = null")
    args = ap.parse_args()
    runs = []
    load = os.getloadavg()
    for page in args.pages:
        for button in ([False, True] if page == "app/Home.py" and not args.skip_button else [False]):
            r = run_page(page, BUNDLED, args.threads, button, args.timeout)
            if button:
                r = {"page": page + " [Compute the missing findings]", "compute_findings_s": r["compute_findings_s"],
                     "errors": r["errors"]}
            r["load_1min"] = os.getloadavg()[0]
            runs.append(r)
            firsts = "".join(f", first {k} {r[f'first_{k}_s']:5.1f} s" for k in ("text", "figure", "table")
                             if f"first_{k}_s" in r)
            timing = ("cold: still running at the timeout" if r.get("cold_s") is None
                      else f"cold {r['cold_s']:6.1f} s, cached {r['cached_s']:5.2f} s")
            shown = (f"{timing}{firsts}" if "cold_s" in r
                     else f"button {r['compute_findings_s']:6.1f} s")
            print(f"{r['page']:<58} {shown}" + (f"  ERRORS: {r['errors']}" if r["errors"] else ""), flush=True)
    res = {"threads": args.threads, "load_before": load, "load_after": os.getloadavg(), "runs": runs,
           "targets": {"cold_s": 30, "cached_s": 2, "compute_findings_s": 90, "first_figure_s": 10}}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
