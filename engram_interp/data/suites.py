"""Task suites (``probes/*.jsonl``): seeded generators and the item schema.

Item schema (one JSON object per line)::

    {"id": str, "suite": str, "prompt": str, "answer": str, "candidates": [str, ...] (optional),
     "meta": {...}}

``answer`` and every candidate start with the space that separates them from the prompt; the
gold answer is always one of the candidates. Scoring per suite is in :data:`SCORING` (and
``probes/README.md``).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

from engram_interp.data.facts import RELATIONS, Fact, collect_real_facts, render
from engram_interp.data.incontext import SCORING as INCONTEXT_SCORING
from engram_interp.data.suite_files import _item, read_suites, write_jsonl
from engram_interp.data.world import (ATTRIBUTES, CITIES, DEFAULT_PEOPLE, EVAL_CLOZE, EVAL_QUESTIONS, MAJORS, MONTHS,
                                      TRAIN_QUESTIONS, Person, World, syllable_word, unseen_name)
from engram_interp.io import atomic_write_text

# What ``engram_interp.analysis.score_items`` measures: an item with candidates is scored by rank (rank 1 of
# the gold among them by summed log-prob; chance 1 / candidates), an item without by greedy exact match.
SCORING = {
    "facts_real": "rank 1 of the gold answer among 5 candidates (same relation) by summed log-prob; chance 0.2.",
    "facts_world": "rank 1 of the gold answer among 5 candidates (same attribute) by summed log-prob; chance 0.2.",
    "reading": "rank 1 of the gold answer among the values stated in the passage + 2 distractors (summed log-prob).",
    "open_book": "rank 1 of the one value stated in the prompt among it + 4 unstated values of its attribute; chance 0.2.",
    "entities": "rank 1 of the gold completion among its candidates (summed log-prob).",
    "idioms": "rank 1 of the gold completion among its candidates (summed log-prob).",
    "copying": "greedy exact match of the whole answer (the rest of the repeated sequence).",
    "agreement": "rank: correct iff the gold verb has the higher summed log-prob of the two candidates.",
}

SCORING |= INCONTEXT_SCORING  # name_copy, kv_recall (engram_interp.data.incontext)
SUITES = tuple(SCORING)


def _candidates(gold: str, pool: list[str], rng: random.Random, k: int = 4) -> list[str]:
    others = sorted({p for p in pool if p != gold})
    c = [gold] + rng.sample(others, min(k, len(others)))
    rng.shuffle(c)
    return [" " + x for x in c]


# ----------------------------------------------------------------------------- facts
def facts_real_items(facts: list[Fact], seed: int = 0) -> list[dict]:
    """Two items per fact: the held-out cloze and the held-out question (never in training)."""
    rng = random.Random(f"facts_real:{seed}")
    pools: dict[str, list[str]] = defaultdict(list)
    for f in facts:
        pools[f.relation].append(f.value)
    items = []
    for f in facts:
        spec = RELATIONS[f.relation]
        scoring = "rank" if f.relation == "person_description" else "greedy"
        for phrasing in ("cloze", "question"):
            if phrasing == "cloze":
                prompt = render(spec["eval_cloze"][0], f)
            else:
                prompt = f"Question: {render(spec['eval_q'][0], f)}\nAnswer:"
            meta = {"relation": f.relation, "subject": f.subject, "value": f.value, "phrasing": phrasing,
                    "scoring": scoring}
            items.append(_item("facts_real", len(items), prompt, " " + f.value, meta,
                               _candidates(f.value, pools[f.relation], rng)))
    return items


def _attr_pool(world: World, attr: str) -> list[str]:
    if attr in ("birth_city", "work_city"):
        return list(CITIES)
    if attr == "university":
        return world.pools["universities"]
    if attr == "employer":
        return world.pools["companies"]
    if attr == "major":
        return list(MAJORS)
    rng = random.Random("dates")
    return [f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1900, 2005)}" for _ in range(500)]


def facts_world_items(world: World, n_people: int = 1000, seed: int = 0) -> list[dict]:
    """For ``n_people`` sampled people (every person when the world is smaller), two attributes each:
    one held-out cloze, one held-out question."""
    rng = random.Random(f"facts_world:{seed}")
    n_people = min(n_people, len(world.people))
    pools = {a: _attr_pool(world, a) for a in ATTRIBUTES}
    items = []
    for idx in sorted(rng.sample(range(len(world.people)), n_people)):
        p = world.people[idx]
        for attr, phrasing in zip(rng.sample(ATTRIBUTES, 2), ("cloze", "question"), strict=True):
            value = getattr(p, attr)
            if phrasing == "cloze":
                prompt = rng.choice(EVAL_CLOZE[attr]).format(n=p.name)
            else:
                prompt = f"Question: {rng.choice(EVAL_QUESTIONS[attr]).format(n=p.name)}\nAnswer:"
            meta = {"person_index": idx, "name": p.name, "attribute": attr, "phrasing": phrasing, "world_seed": world.seed,
                    "world_people": world.n_people}
            items.append(_item("facts_world", len(items), prompt, " " + value, meta, _candidates(value, pools[attr], rng)))
    return items


def _unseen_person(rng: random.Random, world: World, pools: dict[str, list[str]]) -> Person:
    """A person whose name parts are not in ``world``'s pools (never trained on), attributes from its pools."""
    name = unseen_name(rng, world)
    company = rng.choice(world.pools["companies"])
    return Person(name, rng.choice("mf"), rng.choice(pools["birth_date"]), rng.choice(CITIES),
                  rng.choice(world.pools["universities"]), rng.choice(MAJORS), company, world.company_city[company])


def reading_items(world: World, n: int = 500, seed: int = 0) -> list[dict]:
    """Open-book items: a 2-4 sentence passage about an UNSEEN person, then a question in the
    exact format of the world's passage-with-questions training documents."""
    rng = random.Random(f"reading:{seed}")
    pools = {a: _attr_pool(world, a) for a in ATTRIBUTES}
    items, used = [], set()
    while len(items) < n:
        person = _unseen_person(rng, world, pools)
        name = person.name
        if name in used:
            continue
        used.add(name)
        attrs = rng.sample(ATTRIBUTES, rng.randint(2, 4))
        passage = world.passage(person, attrs, rng)
        asked = rng.choice(attrs)
        value = getattr(person, asked)
        prompt = f"{passage}\nQuestion: {rng.choice(TRAIN_QUESTIONS[asked]).format(n=name)}\nAnswer:"
        stated = [getattr(person, a) for a in attrs]
        cands = sorted(set(stated) | set(rng.sample([v for v in pools[asked] if v != value], 2)))
        rng.shuffle(cands)
        meta = {"entity": name, "attribute": asked, "stated_attributes": attrs, "n_sentences": len(attrs)}
        items.append(_item("reading", len(items), prompt, " " + value, meta, [" " + c for c in cands]))
    return items


def open_book_items(world: World, n: int = 400, seed: int = 0) -> list[dict]:
    """The easiest open-book items: one sentence states one attribute of an UNSEEN person, then the
    question about it (format of ``reading``). Candidates: the stated value + 4 values of the same
    attribute that are not in the prompt, so a model that reads the prompt at all can find it
    (``reading`` needs the value told apart from the other stated ones)."""
    rng = random.Random(f"open_book:{seed}")
    pools = {a: _attr_pool(world, a) for a in ATTRIBUTES}
    items, used = [], set()
    while len(items) < n:
        person = _unseen_person(rng, world, pools)
        if person.name in used:
            continue
        used.add(person.name)
        asked = rng.choice(ATTRIBUTES)
        passage = world.passage(person, [asked], rng)
        value = getattr(person, asked)
        prompt = f"{passage}\nQuestion: {rng.choice(TRAIN_QUESTIONS[asked]).format(n=person.name)}\nAnswer:"
        cands = [value] + rng.sample([v for v in pools[asked] if v != value and v not in prompt], 4)
        rng.shuffle(cands)
        meta = {"entity": person.name, "attribute": asked}
        items.append(_item("open_book", len(items), prompt, " " + value, meta, [" " + c for c in cands]))
    return items


# ----------------------------------------------------------------------------- corpus statistics
_WORDS = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|[^\sA-Za-z]")
PROSE_SOURCES = ("sotu", "brown", "wiki", "austen", "shakespeare", "moby_dick", "kjv", "sword_commentaries")
_STOP_CAP = frozenset("The A An In On At Of And But Or For To From By With As It He She We They I This That These "
                      "Those His Her Their Our My Your Its If When While Then There Here What Which Who Why How Mr Mrs "
                      "Dr St Sir Lord Lady King Queen".split())
HAND_ENTITIES = (("Alexander the", "Great"), ("the Milky", "Way"), ("United", "States"), ("New", "York"),
                 ("Great", "Britain"), ("Holy", "Spirit"), ("Middle", "Ages"), ("Soviet", "Union"),
                 ("Roman", "Empire"), ("Supreme", "Court"), ("Prime", "Minister"), ("Pacific", "Ocean"),
                 ("Los", "Angeles"), ("Hong", "Kong"), ("South", "Africa"), ("World War", "II"))


def ngram_tables(docs: list[str]) -> tuple[Counter, Counter]:
    """Counts of word bigrams and trigrams (tuples) over documents (punctuation = its own token)."""
    bi: Counter = Counter()
    tri: Counter = Counter()
    for d in docs:
        for para in d.split("\n"):
            w = _WORDS.findall(para)
            bi.update(zip(w, w[1:]))
            tri.update(zip(w, w[1:], w[2:]))
    return bi, tri


def entity_and_idiom_items(bi: Counter, tri: Counter, seed: int = 0, n_entities: int = 300,
                           n_idioms: int = 300) -> tuple[list[dict], list[dict]]:
    """Mine predictable completions from corpus n-gram counts.

    entities: capitalized 2-3 word names whose last word follows the prefix with P >= 0.6
    (count >= 10); idioms: lowercase phrases with P(last | prefix) >= 0.7 (count >= 50).
    """
    rng = random.Random(f"ngrams:{seed}")
    uni_prefix: Counter = Counter()
    for (a, b), c in bi.items():
        uni_prefix[a] += c
    bi_prefix: Counter = Counter()
    for (a, b, _), c in tri.items():
        bi_prefix[(a, b)] += c
    common = [w for (w, _), c in Counter({k: v for k, v in bi.items()}).most_common(3000) if w.isalpha() and w.islower()]
    common = sorted(set(common))

    def cap(w: str) -> bool:  # Title-case word (not ALL CAPS headings)
        return w[:1].isupper() and w.isalpha() and len(w) > 1 and not w.isupper()

    ent: dict[str, tuple[str, int, float]] = {}
    for (a, b), c in bi.items():
        if c >= 10 and cap(a) and cap(b) and a not in _STOP_CAP and b not in _STOP_CAP:
            p = c / uni_prefix[a]
            if p >= 0.6:
                ent[a] = (b, c, p)
    for (a, b, x), c in tri.items():
        if c >= 10 and cap(x) and x not in _STOP_CAP and ((cap(a) and a not in _STOP_CAP and (cap(b) or b in ("the", "of")))):
            p = c / bi_prefix[(a, b)]
            if p >= 0.6:
                ent[f"{a} {b}"] = (x, c, p)
    for prefix, ans in HAND_ENTITIES:
        words = prefix.split()
        c = tri[(*words, ans)] if len(words) == 2 else bi[(words[0], ans)]
        total = bi_prefix[tuple(words)] if len(words) == 2 else uni_prefix[words[0]]
        if c >= 3:
            ent[prefix] = (ans, c, c / max(total, 1))
    ent_keys = sorted(ent, key=lambda k: -ent[k][1])[: n_entities]
    answers = sorted({v[0] for v in ent.values()})
    entities = []
    for k in sorted(ent_keys):
        ans, c, p = ent[k]
        entities.append(_item("entities", len(entities), k, " " + ans,
                              {"count": c, "p_next": round(p, 3), "source": "corpus n-grams" if k not in dict(HAND_ENTITIES) else "hand list, corpus-checked"},
                              _candidates(ans, answers, rng)))

    idi: dict[str, tuple[str, int, float]] = {}
    for (a, b, x), c in tri.items():
        if (c >= 50 and a.isalpha() and b.isalpha() and x.isalpha() and a.islower() and b.islower() and x.islower()
                and a not in ("the", "a", "an", "this", "that", "his", "her", "their", "our", "its", "my", "your")):
            p = c / bi_prefix[(a, b)]
            if p >= 0.7 and bi_prefix[(a, b)] >= 60:
                idi[f"{a} {b}"] = (x, c, p)
    idi_keys = sorted(idi, key=lambda k: -idi[k][1])[: n_idioms]
    idioms = []
    for k in sorted(idi_keys):
        ans, c, p = idi[k]
        idioms.append(_item("idioms", len(idioms), k, " " + ans, {"count": c, "p_next": round(p, 3)},
                            _candidates(ans, common, rng)))
    return entities, idioms


def copying_items(words: list[str], n: int = 400, seed: int = 0) -> list[dict]:
    """In-context copying: a random sequence, a newline, its first half; answer = the second half.
    Half the items use common words, half pseudo-words that never occur in the corpus."""
    rng = random.Random(f"copying:{seed}")
    items = []
    for i in range(n):
        variant = "words" if i % 2 == 0 else "pseudowords"
        length = rng.randint(8, 14)
        if variant == "words":
            seq = rng.sample(words, length)
        else:
            seq = [syllable_word(rng, rng.choice((1, 2))).lower() for _ in range(length)]
        k = rng.randint(3, length - 4)
        prompt = " ".join(seq) + "\n" + " ".join(seq[:k])
        items.append(_item("copying", i, prompt, " " + " ".join(seq[k:]), {"variant": variant, "length": length, "given": k}))
    return items


_NOUNS = (("key", "keys"), ("author", "authors"), ("dog", "dogs"), ("teacher", "teachers"), ("house", "houses"),
          ("ship", "ships"), ("letter", "letters"), ("king", "kings"), ("bridge", "bridges"), ("farmer", "farmers"),
          ("soldier", "soldiers"), ("garden", "gardens"), ("student", "students"), ("road", "roads"), ("tree", "trees"),
          ("report", "reports"), ("officer", "officers"), ("church", "churches"), ("child", "children"),
          ("man", "men"), ("woman", "women"), ("city", "cities"), ("law", "laws"), ("horse", "horses"))
_PREPS = ("near", "behind", "beside", "next to", "of", "with", "for", "from", "above", "under")


def agreement_items(n: int = 400, seed: int = 0) -> list[dict]:
    """Subject-verb number agreement across a prepositional attractor of the opposite (or same) number."""
    rng = random.Random(f"agreement:{seed}")
    items = []
    for i in range(n):
        subj = rng.choice(_NOUNS)
        attr = rng.choice([x for x in _NOUNS if x != subj])
        plural = rng.random() < 0.5
        attractor_plural = (not plural) if rng.random() < 0.75 else plural
        prompt = f"The {subj[plural]} {rng.choice(_PREPS)} the {attr[attractor_plural]}"
        answer = " are" if plural else " is"
        items.append(_item("agreement", i, prompt, answer,
                           {"subject_plural": plural, "attractor_plural": attractor_plural,
                            "condition": "mismatch" if plural != attractor_plural else "match"}, [" is", " are"]))
    return items


# ----------------------------------------------------------------------------- writer


def _wordnet_noun(cache: Path | None) -> Path | None:
    if cache is None:
        return None
    hits = sorted((Path(cache).parent / "downloads").rglob("wordnet/data.noun"))
    return hits[0] if hits else None


def write_suites(out: Path, cache: Path | None = None, seed: int = 0, world_seed: int = 0, people: int = DEFAULT_PEOPLE,
                 only: list[str] | None = None) -> dict[str, int]:
    """Regenerate the suites into ``out`` (all, or ``only`` these); returns items per suite."""
    from engram_interp.data.corpus import load_manifest, read_docs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    want = set(only or (*SUITES, "entities_ner"))
    world = World(world_seed, people)
    counts: dict[str, int] = {}

    def emit(name: str, items: list[dict]) -> None:
        write_jsonl(out / f"{name}.jsonl", items)
        counts[name] = len(items)

    if "facts_real" in want:
        emit("facts_real", facts_real_items(collect_real_facts(_wordnet_noun(cache), seed=seed), seed))
    if "facts_world" in want:
        emit("facts_world", facts_world_items(world, seed=seed))
    if "reading" in want:
        emit("reading", reading_items(world, seed=seed))
    if "open_book" in want:
        emit("open_book", open_book_items(world, seed=seed))
    if "agreement" in want:
        emit("agreement", agreement_items(seed=seed))
    if want & {"name_copy", "kv_recall"}:
        from engram_interp.data.incontext import incontext_items

        for name, items in incontext_items(world, seed=seed).items():
            if name in want:
                emit(name, items)
    if want & {"entities", "idioms", "copying", "entities_ner"}:
        if cache is None:
            raise ValueError("entities/idioms/copying/entities_ner need the corpus cache")
        names = [e["source"] for e in load_manifest(cache)["sources"] if e["source"] in PROSE_SOURCES]
        if want & {"entities", "idioms", "copying"}:
            docs = [d for s in names for d in read_docs(cache, s, "train")]
            bi, tri = ngram_tables(docs)
            entities, idioms = entity_and_idiom_items(bi, tri, seed)
            if "entities" in want:
                emit("entities", entities)
            if "idioms" in want:
                emit("idioms", idioms)
            if "copying" in want:
                freq = Counter()
                for (a, _), c in bi.items():
                    if a.isalpha() and a.islower() and len(a) > 2:
                        freq[a] += c
                emit("copying", copying_items(sorted(w for w, _ in freq.most_common(2000)), seed=seed))
        if "entities_ner" in want:
            from engram_interp.data.ner import ner_windows

            val = [(s, d) for s in names for d in read_docs(cache, s, "val")]
            windows = ner_windows(val, seed=seed, gazetteer=_gazetteer(out))
            atomic_write_text(out / "entities_ner.jsonl", "".join(json.dumps(w, ensure_ascii=False) + "\n" for w in windows),
                              force=True)
            counts["entities_ner"] = len(windows)
    return counts


def _gazetteer(out: Path) -> list[str]:
    """Entity names for the spaCy-free fallback: subjects/values of facts_real + capitalized world cities."""
    names = set(CITIES)
    path = out / "facts_real.jsonl"
    if path.exists():
        for it in read_suites(path)["facts_real"]:
            m = it["meta"]
            for v in (m["subject"], m["value"]):
                if v[:1].isupper() and not v.isdigit() and len(v) > 3:
                    names.add(v)
    return sorted(names)


__all__ = ["SCORING", "SUITES", "write_suites"]
