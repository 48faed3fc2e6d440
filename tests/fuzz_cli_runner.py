"""Run many engram-interp CLI invocations cheaply, each in its own process, for tests/test_fuzz_hf.py.

A cold ``python -m engram_interp.cli`` spends ~15 s importing torch and transformers, which would make a
50-case fuzz take ten minutes on 2 cores. This script imports the CLI once, warms it up on the valid
inputs (so transformers' lazy modules are loaded), then forks one child per case. A child is the CLI
as ``python -m engram_interp.cli ARGV`` runs it: fresh stdout/stderr files, its own address-space cap
(``RLIMIT_AS``), ``cli.main(argv)`` with the interpreter's own handling of an uncaught exception (a
traceback on stderr and exit status 1) and of ``SystemExit``. The parent kills a child that runs past
its time cap.

Usage: ``python tests/fuzz_cli_runner.py CASES.json RESULTS.json``. CASES.json:
``{"warmup": [argv, ...], "cases": [{"argv": [...], "cwd": DIR}], "jobs": N, "timeout_s": S,
"headroom_bytes": B}``; an argv item ``{"b64": ...}`` is raw bytes, decoded as Python decodes a
command line (``os.fsdecode``, so invalid UTF-8 becomes lone surrogates). RESULTS.json: one
``{rc, stdout, stderr, seconds, timed_out}`` per case, in order; ``rc`` is the exit status, or minus
the signal that ended the child.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import sys
import time
import traceback

MAX_OUTPUT = 1 << 20  # bytes of stdout / stderr kept per case


def decode_argv(items: list) -> list[str]:
    """Command-line strings of ``items`` (``{"b64": ...}`` items are raw bytes, decoded with os.fsdecode)."""
    return [os.fsdecode(base64.b64decode(a["b64"])) if isinstance(a, dict) else a for a in items]


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def _child(argv: list[str], cwd: str, out: str, err: str, cap: int) -> None:
    """The body of one forked case; never returns."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(new, fd)
            os.close(new)
        os.chdir(cwd)
        sys.stdin = open(os.devnull)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        from engram_interp.cli import main

        try:
            code = main(argv)
        except SystemExit as exc:  # what the interpreter does with it
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code if isinstance(code, int) else 1)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(MAX_OUTPUT).decode("utf-8", "replace")


def run_cases(spec: dict, scratch: str) -> list[dict]:
    """Warm up in this process, then run every case of ``spec`` in forked children, ``jobs`` at a time."""
    import torch

    torch.set_num_threads(1)  # one core per child; no OpenMP pool is inherited across fork
    from engram_interp.cli import main

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    os.dup2(devnull, 1), os.dup2(devnull, 2)
    try:
        for argv in spec.get("warmup", []):
            try:
                main(decode_argv(argv))
            except SystemExit:
                pass
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    cap = _vm_size() + int(spec["headroom_bytes"])
    cases, results = spec["cases"], [None] * len(spec["cases"])
    running: dict[int, tuple[int, float]] = {}
    todo = list(range(len(cases)))
    while todo or running:
        while todo and len(running) < spec["jobs"]:
            i = todo.pop(0)
            out, err = os.path.join(scratch, f"{i}.out"), os.path.join(scratch, f"{i}.err")
            sys.stdout.flush(), sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(decode_argv(cases[i]["argv"]), cases[i]["cwd"], out, err, cap)
            running[pid] = (i, time.monotonic())
        time.sleep(0.01)
        for pid, (i, t0) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            timed_out = False
            if not done and time.monotonic() - t0 > spec["timeout_s"]:
                os.kill(pid, signal.SIGKILL)
                done, status = os.waitpid(pid, 0)
                timed_out = True
            if not done:
                continue
            del running[pid]
            rc = os.waitstatus_to_exitcode(status)
            base = os.path.join(scratch, str(i))
            results[i] = {"rc": rc, "stdout": _read(base + ".out"), "stderr": _read(base + ".err"),
                          "seconds": round(time.monotonic() - t0, 3), "timed_out": timed_out}
    return results


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    scratch = os.path.join(os.path.dirname(os.path.abspath(sys.argv[2])), "runner-out")
    os.makedirs(scratch, exist_ok=True)
    results = run_cases(spec, scratch)
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
