"""Careful file input/output shared by the library and the CLI.

* :func:`quote` shows untrusted content in an error message, cut to ~200 characters.
* :func:`loads_strict` parses untrusted JSON: NaN/Infinity tokens, absurd nesting and integers
  with thousands of digits become one-line :class:`EngramInterpError` s.
* :func:`dumps_strict` writes strict JSON: non-finite floats become ``null`` with one warning.
* :func:`open_regular` opens a regular file for reading without blocking on a FIFO.
* :func:`check_output_file` / :func:`check_output_dir` check, BEFORE a long analysis, that an
  output can be written and would not replace anything unless ``force``.
* :func:`atomic_write_text` writes through a temporary file and a rename: a reader never sees a
  partial file, and without ``force`` an existing file is never replaced.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from engram_interp.errors import EngramInterpError

QUOTE_LIMIT = 200  # characters of untrusted content an error message may show


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (plus a note of how much was cut)."""
    try:
        text = repr(value) if not isinstance(value, str) or len(value) <= 4 * limit else repr(value[: 4 * limit])
    except (ValueError, RecursionError):  # e.g. an int with more digits than Python will print
        text = f"<{type(value).__name__} too large to show>"
    if len(text) <= limit:
        return text
    total = len(value) if isinstance(value, (str, bytes, list, dict)) else len(text)
    return f"{text[:limit]}... ({total:,} {'characters' if isinstance(value, str) else 'long'})"


def warn(message: str) -> None:
    """One warning line on stderr (``warning: ...``)."""
    print(f"warning: {message}", file=sys.stderr)


def _reject_constant(token: str):
    raise ValueError(f"non-finite number {token}")


def loads_strict(text: str | bytes, what: str) -> Any:
    """Parse untrusted JSON. Returns the value; raises EngramInterpError naming ``what`` for invalid
    JSON, NaN/Infinity tokens, nesting too deep for Python, or integers too long to convert."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise EngramInterpError(f"{what} is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise EngramInterpError(f"{what} is not valid JSON: {quote(str(exc))}") from None


def _finite(x: Any, bad: list[str], where: str) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        bad.append(where)
        return None
    if isinstance(x, dict):
        return {k: _finite(v, bad, f"{where}.{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v, bad, f"{where}[{i}]") for i, v in enumerate(x)]
    return x


def dumps_strict(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``obj``: every NaN/Infinity becomes ``null`` and one warning line names
    how many and the first few places (``$.key[i]``). Never emits a bare ``NaN`` token."""
    bad: list[str] = []
    clean = _finite(obj, bad, "$")
    if bad:
        warn(f"{len(bad)} non-finite value(s) written as null in the JSON output, e.g. {', '.join(bad[:3])}")
    return json.dumps(clean, indent=indent, allow_nan=False)


def refuse_trailing_slash(path: str | os.PathLike) -> None:
    """One line when ``path`` names an existing file with a trailing slash (``model.ckpt/``), as a shell
    would refuse it; Python's ``Path`` would silently drop the slash."""
    raw = os.fspath(path)
    bare = raw.rstrip("/" + os.sep)
    if raw != bare and bare and os.path.exists(bare) and not os.path.isdir(bare):
        raise EngramInterpError(f"{quote(raw)}: a file, not a folder (trailing slash?)")


def open_regular(path: str | os.PathLike, what: str = "file") -> tuple[int, int]:
    """Open ``path`` for reading if it is a regular file. Returns ``(fd, size in bytes)``.

    Refuses with one line: missing paths, directories, a trailing slash on a file, FIFOs, devices,
    sockets and unreadable files. A FIFO never blocks (opened non-blocking, checked by fstat)."""
    raw = os.fspath(path)
    try:
        fd = os.open(raw, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise EngramInterpError(f"no such {what}: {quote(raw)}") from None
    except NotADirectoryError:
        raise EngramInterpError(f"{quote(raw)}: a path component is a file, not a folder (trailing slash?)") from None
    except IsADirectoryError:
        raise EngramInterpError(f"{quote(raw)} is a directory, not a {what}") from None
    except PermissionError:
        raise EngramInterpError(f"{quote(raw)} is not readable (permission denied)") from None
    except OSError as exc:
        raise EngramInterpError(f"cannot open {quote(raw)}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
            "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) \
            else "not a regular file"
        raise EngramInterpError(f"{quote(raw)} is {kind}, not a regular {what}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd, st.st_size


def read_regular_text(path: str | os.PathLike, what: str = "file", limit: int | None = None) -> str:
    """The UTF-8 text of a regular file (:func:`open_regular`); one-line errors for a non-UTF-8 file
    (with the byte offset) or one larger than ``limit`` bytes."""
    fd, size = open_regular(path, what)
    try:
        if limit is not None and size > limit:
            raise EngramInterpError(f"{quote(os.fspath(path))} is {size:,} bytes; a {what} may have at most {limit:,}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError as exc:
        raise EngramInterpError(f"cannot read {quote(os.fspath(path))}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngramInterpError(f"{quote(os.fspath(path))} is not UTF-8 text (invalid byte at offset {exc.start})") from None


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_dir(folder: Path, for_what: str) -> None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise EngramInterpError(f"cannot write {quote(str(for_what))}: {quote(str(base))} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise EngramInterpError(f"cannot write {quote(str(for_what))}: {quote(str(base))} is not writable")
    if base == folder:  # os.access can be wrong (read-only mounts, ACLs): really try
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".engram-interp-probe-")
        except OSError as exc:
            raise EngramInterpError(f"cannot write into {quote(str(folder))}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(probe)


def check_output_file(path: str | os.PathLike, force: bool = False) -> Path:
    """Check that a result file can be written at ``path``. Returns the Path.

    Raises EngramInterpError (one line) when ``path`` names a folder (or ends with a slash), exists
    and ``force`` is False, or its folder cannot be created or written."""
    raw = os.fspath(path)
    p = Path(raw)
    if raw.endswith(("/", os.sep)) or p.is_dir():
        raise EngramInterpError(f"--out {quote(raw)} is a folder; give a file name (e.g. {p / 'result.json'})")
    if p.exists() or p.is_symlink():
        if not force:
            raise EngramInterpError(f"{quote(raw)} exists; pass --force to replace it")
        if not p.is_file():
            raise EngramInterpError(f"{quote(raw)} is not a regular file; refusing to replace it")
    _check_writable_dir(p.parent if str(p.parent) else Path("."), raw)
    return p


def check_output_dir(path: str | os.PathLike, owned: set[str], force: bool = False) -> Path:
    """Check that an output folder can receive a result set (file names ``owned``). Returns the Path.

    A missing or empty folder is fine; a folder that already holds any of ``owned`` needs
    ``force`` (then the whole earlier set is replaced, see :func:`replace_set`); a file in the way
    or an unwritable folder is a one-line error."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise EngramInterpError(f"--out {quote(str(p))} exists and is not a folder")
    if p.is_dir():
        clash = sorted(n for n in owned if (p / n).exists())
        if clash and not force:
            raise EngramInterpError(f"{quote(str(p))} already holds a result ({', '.join(clash[:3])}); "
                                    "pass --force to replace the whole set, or choose another --out")
    _check_writable_dir(p, str(p))
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename. Returns
    the Path. Without ``force`` an existing file is never replaced (EngramInterpError), even if it
    appeared while writing."""
    p = Path(path)
    from engram_interp.analysis._dist import is_main

    if not is_main():  # under torchrun only rank 0 writes: the others computed the same result
        return p
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as exc:
        raise EngramInterpError(f"cannot write {quote(str(p))}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if force:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)  # atomic and fails if p exists
            except FileExistsError:
                raise EngramInterpError(f"{quote(str(p))} exists; pass --force to replace it") from None
            except OSError:  # no hard links on this file system: check, then rename
                if p.exists():
                    raise EngramInterpError(f"{quote(str(p))} exists; pass --force to replace it") from None
                os.replace(tmp, p)
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise EngramInterpError(f"cannot write {quote(str(p))}: {exc.strerror or exc}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"), force=force)


def replace_set(folder: str | os.PathLike, owned: set[str], written: set[str]) -> list[str]:
    """After a result set was written into ``folder``: remove files of an earlier set (names in
    ``owned``) that this run did not write, so no stale result stays beside the new ones. Returns
    the names removed (none on a process other than rank 0 under ``torchrun``: it writes nothing)."""
    from engram_interp.analysis._dist import is_main

    removed = []
    if not is_main():
        return removed
    for name in sorted(owned - written):
        f = Path(folder) / name
        if f.is_file():
            f.unlink()
            removed.append(name)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
