"""Pure text-cleaning functions, one per source format. No I/O: each takes and returns ``str``.

Every cleaner returns text with ``\\n`` line ends, no control characters (the cache uses
``\\x1e`` as its document separator), no trailing spaces and at most one blank line in a row.
"""

from __future__ import annotations

import re
import unicodedata

DOC_SEP = "\x1e"  # ASCII record separator: splits documents inside a cached .txt.xz file

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """NFC-normalize, drop control characters, collapse spaces; keep paragraph breaks (``\\n\\n``)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\t", " ")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def unwrap(text: str) -> str:
    """Join hard-wrapped lines inside each paragraph; paragraphs stay separated by a blank line."""
    paras = re.split(r"\n\s*\n", normalize(text))
    return "\n\n".join(" ".join(p.split()) for p in paras if p.strip())


# ---------------------------------------------------------------------------------- Brown corpus
_BROWN_TOKEN = re.compile(r"(\S+)/[^\s/]+")


def strip_brown_tags(tagged: str) -> str:
    """Turn Brown's ``word/tag`` tokens into detokenized prose, one paragraph per tagged sentence.

    >>> strip_brown_tags("\\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.")
    'The jury said "no".'
    """
    out = []
    for sent in re.split(r"\n\s*\n", tagged):
        words = [m.group(1) for m in _BROWN_TOKEN.finditer(sent)]
        if words:
            out.append(detokenize(words))
    return "\n\n".join(out)


def detokenize(words: list[str]) -> str:
    """Join Penn-style tokens into text: no space before punctuation, ``\\`\\``/``''`` become quotes."""
    s = " ".join(words)
    s = re.sub(r"``\s*", '"', s)
    s = re.sub(r"\s*''", '"', s)
    s = re.sub(r" ([.,;:!?%)\]])", r"\1", s)
    s = re.sub(r"([(\[$]) ", r"\1", s)
    s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
    s = re.sub(r'(^|\s)" (\S)', r'\1"\2', s)
    return _SPACES.sub(" ", s).strip()


# ---------------------------------------------------------------------------------- dictd files
def dictd_entries(body: str) -> list[str]:
    """Split a decompressed dictd ``.dict`` body into raw entries (a line at column 0 starts one).

    The dictionary's own ``00-database-*`` header entries are dropped.
    """
    entries: list[str] = []
    cur: list[str] = []
    for line in body.split("\n"):
        if line and not line[0].isspace() and (not cur or cur[-1].strip() == ""):
            if cur:
                entries.append("\n".join(cur))
            cur = [line]
        else:
            cur.append(line)
    if cur:
        entries.append("\n".join(cur))
    return [e for e in entries if e.strip() and not e.startswith("00-database") and not e.startswith("00database")]


_GCIDE_SOURCE_TAG = re.compile(r"\[(?:1913 Webster|Webster 1913 Suppl\.|PJC|WordNet 1\.5|Century Dict\.|RH|Chambers 1728|"
                               r"MW10|AS|Note|NRT|DEFINITION|[A-Z]{2,4})(?:[^\]]{0,40})\]")
_GCIDE_PRON = re.compile(r"\\[^\\\n]{0,80}\\,?")


def clean_gcide(entry: str) -> str:
    """Clean one GCIDE (1913 Webster) entry: drop ``[1913 Webster]``-style source tags, the
    ``\\pro*nun"ci*a`tion\\`` field and ``{}`` hyperlink braces; unwrap lines into paragraphs.

    >>> clean_gcide('Abuse \\\\A*buse"\\\\, v. t.\\n   1. To misuse. {Abuse}\\n   [1913 Webster]')
    'Abuse, v. t.\\n\\n1. To misuse. Abuse'
    """
    text = _GCIDE_SOURCE_TAG.sub("", entry)
    text = _GCIDE_PRON.sub(",", text)
    text = text.replace("{", "").replace("}", "")
    text = re.sub(r"\s+,", ",", text)
    text = re.sub(r",,+", ",", text)
    # numbered senses and quotations start new paragraphs
    text = re.sub(r"\n\s+(?=\d+\. |Syn: |Usage: |Note: |--)", "\n\n", text)
    text = re.sub(r"(?m)^(\S[^\n]*?)\s*,\s*$", r"\1", text)
    return unwrap(text)


def clean_dictd(entry: str) -> str:
    """Clean one FOLDOC / Jargon / Devil's Dictionary entry: drop ``{}`` link braces, unwrap."""
    text = entry.replace("{", "").replace("}", "")
    return unwrap(text)


# ---------------------------------------------------------------------------------- WordNet
def wordnet_gloss(line: str) -> tuple[str, str, bool] | None:
    """Parse one line of a WordNet ``data.*`` file into ``(lemmas, gloss, is_instance)``.

    Returns None for license header lines. ``lemmas`` is ``"a, b"`` with underscores as spaces;
    ``is_instance`` is True for instance synsets (``@i`` pointers: named people and places).

    >>> wordnet_gloss("10857540 18 n 02 Booth 0 John_Wilkes_Booth 0 002 @i 09765278 n 0000 | actor (1838-1865)  ")
    ('Booth, John Wilkes Booth', 'actor (1838-1865)', True)
    """
    if not line or line.startswith(" "):
        return None
    head, _, gloss = line.partition(" | ")
    parts = head.split()
    try:
        n_words = int(parts[3], 16)
    except (IndexError, ValueError):
        return None
    lemmas = [re.sub(r"\(\w+\)$", "", parts[4 + 2 * i]).replace("_", " ") for i in range(n_words)]
    return ", ".join(lemmas), gloss.strip(), " @i " in head + " "


# ---------------------------------------------------------------------------------- SWORD / OSIS
_TAG = re.compile(r"<[^>]*>")


def strip_markup(text: str) -> str:
    """Remove XML/OSIS/ThML tags and decode the common entities; unwrap into one paragraph per
    ``<div ... type="x-p">`` or ``<p>`` where present."""
    text = re.sub(r"<(?:div[^>]*type=\"x-p\"[^>]*|p|/p|br ?/?|lb ?/?)>", "\n\n", text)
    text = re.sub(r"<title[^>]*>", "\n\n", text)
    text = re.sub(r"</title>", "\n\n", text)
    text = _TAG.sub(" ", text)
    for a, b in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&nbsp;", " "), ("&amp;", "&")):
        text = text.replace(a, b)
    text = re.sub(r" +([.,;:!?])", r"\1", text)
    return unwrap(text)


# ---------------------------------------------------------------------------------- KJV
_VERSE_REF = re.compile(r"^\s*(?:[1-3])?[A-Z][a-z]{1,3}\d+:\d+\s+")


def strip_verse_ref(line: str) -> str:
    """Drop the ``Ge1:1 `` reference that ``bible -f`` prints before each verse."""
    return _VERSE_REF.sub("", line).strip()


# ---------------------------------------------------------------------------------- Gutenberg plays
def clean_play(text: str) -> str:
    """Normalize a Gutenberg play: keep verse line breaks, drop Gutenberg license boilerplate."""
    text = normalize(text)
    start = re.search(r"\*\*\* ?START OF[^\n]*\n", text)
    if start:
        text = text[start.end():]
    end = re.search(r"\n[^\n]*\*\*\* ?END OF", text)
    if end:
        text = text[: end.start()]
    return text.strip()


def split_on_heading(text: str, pattern: str) -> list[str]:
    """Split ``text`` before every line matching the regex ``pattern`` (e.g. ``^ACT [IVX]+``).

    Text before the first heading is kept as its own chunk when it has at least 200 characters.
    """
    starts = [m.start() for m in re.finditer(pattern, text, flags=re.MULTILINE)]
    if not starts:
        return [text]
    chunks = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)], strict=True)]
    if len(text[: starts[0]].strip()) >= 200:
        chunks.insert(0, text[: starts[0]])
    return [c.strip() for c in chunks if c.strip()]


def group(items: list[str], target_chars: int, sep: str = "\n\n") -> list[str]:
    """Concatenate consecutive short items (dictionary entries, glosses) into documents of about
    ``target_chars`` characters each."""
    docs: list[str] = []
    cur: list[str] = []
    size = 0
    for item in items:
        cur.append(item)
        size += len(item) + len(sep)
        if size >= target_chars:
            docs.append(sep.join(cur))
            cur, size = [], 0
    if cur:
        docs.append(sep.join(cur))
    return docs
